"""Who is asking: API keys and JWTs from ``Authorization: Bearer``, mapped to an access level.

Authentication runs once per request (or once per WebSocket connection), never per field.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import jwt
from sqlalchemy.ext.asyncio import AsyncEngine

from core.settings import Settings
from datasources.api_keys import KEY_PREFIX, role_of_key
from datasources.models import Role


class Access(IntEnum):
    ANONYMOUS = 0
    READER = 1
    EDITOR = 2
    ADMIN = 3


ACCESS_OF_ROLE = {Role.READER: Access.READER, Role.EDITOR: Access.EDITOR, Role.ADMIN: Access.ADMIN}


@dataclass(frozen=True)
class Viewer:
    access: Access
    subject: str | None = None

    def can(self, needed: Access) -> bool:
        return self.access >= needed


ANONYMOUS = Viewer(Access.ANONYMOUS)


class AuthenticationError(Exception):
    """The request carries credentials that do not authenticate it."""


class Authenticator:
    def __init__(self, settings: Settings, engine: AsyncEngine) -> None:
        self._engine = engine
        self._key_secret = settings.secret_key.get_secret_value()
        self._audience = settings.jwt_audience
        self._issuer = settings.jwt_issuer
        self._secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else None
        self._public_key = (
            settings.jwt_public_key_file.read_text() if settings.jwt_public_key_file else None
        )
        self._jwks = (
            jwt.PyJWKSet.from_json(settings.jwks_file.read_text()) if settings.jwks_file else None
        )

    async def viewer(self, authorization: str | None) -> Viewer:
        if not authorization:
            return ANONYMOUS
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthenticationError("use the header Authorization: Bearer <API key or JWT>")
        if token.startswith(KEY_PREFIX):
            role = await role_of_key(engine=self._engine, secret=self._key_secret, key=token)
            if role is None:
                raise AuthenticationError("unknown or revoked API key")
            return Viewer(ACCESS_OF_ROLE[role], subject=f"api-key:{token[:12]}")
        return self._from_jwt(token)

    def _from_jwt(self, token: str) -> Viewer:
        try:
            header = jwt.get_unverified_header(token)
            algorithm, key = self._key_for(header)
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["exp", "sub"]},
            )
        except jwt.PyJWTError as error:
            raise AuthenticationError(f"invalid token: {error}") from error
        try:
            role = Role(str(claims.get("role")))
        except ValueError as error:
            raise AuthenticationError(
                "the token's role claim is not reader, editor or admin"
            ) from error
        return Viewer(ACCESS_OF_ROLE[role], subject=str(claims["sub"]))

    def _key_for(self, header: dict[str, Any]) -> tuple[str, Any]:
        # The algorithm follows from the key configured, never from the token alone, so a
        # token cannot choose HS256 with the public key as its secret.
        algorithm = header.get("alg")
        if algorithm == "HS256" and self._secret:
            return algorithm, self._secret
        if algorithm == "RS256" and self._jwks is not None:
            kid = header.get("kid")
            for candidate in self._jwks.keys:
                if kid is None or candidate.key_id == kid:
                    return algorithm, candidate.key
            raise AuthenticationError("no key in the JWKS matches the token's kid")
        if algorithm == "RS256" and self._public_key:
            return algorithm, self._public_key
        raise AuthenticationError(f"tokens signed with {algorithm} are not accepted here")
