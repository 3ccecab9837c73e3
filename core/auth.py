"""Who is asking: API keys and JWTs from ``Authorization: Bearer``, mapped to an access level.

Authentication runs once per request (or once per WebSocket connection), never per field.
An API key, once checked against PostgreSQL, is taken for ``KEY_CHECKED_FOR`` seconds
without asking again: a request costs no round trip for it, and callers whose key was
checked lately keep their MongoDB and Redis fields while PostgreSQL is down. A revocation
is announced through Redis, and every process forgets the keys it checked at once (within
that time at most, when Redis cannot tell it).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import jwt
from sqlalchemy.ext.asyncio import AsyncEngine

from core.settings import Settings
from core.stores import Circuit, StoreDownError
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


# Seconds a checked API key is taken without asking PostgreSQL again, and how many keys
# each process remembers.
KEY_CHECKED_FOR = 30.0
KEYS_KEPT = 10_000


class AuthenticationError(Exception):
    """The request carries credentials that do not authenticate it."""


class CredentialsUncheckableError(Exception):
    """The credentials cannot be checked now: the store that holds them is unavailable."""


class Authenticator:
    def __init__(self, settings: Settings, engine: AsyncEngine, circuit: Circuit) -> None:
        self._engine = engine
        self._circuit = circuit
        self._limit = settings.store_timeout
        self._checked: OrderedDict[str, tuple[Viewer, float]] = OrderedDict()
        # Counts the times every key checked had to be asked for again: a key read before
        # such a time, and answered after it, may have been revoked meanwhile.
        self._forgotten = 0
        # Whether announcements of revoked keys may have been missed.
        self._unheard = False
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
            return await self._of_key(token)
        return self._from_jwt(token)

    # Keys revoked anywhere are announced through the process's pub/sub hub: every key
    # checked is asked for again. So are they after the hub lost its connection, since an
    # announcement may have been missed meanwhile.
    def message(self, data: bytes) -> None:
        self._forget()

    def connected(self) -> None:
        if self._unheard:
            self._unheard = False
            self._forget()

    def _forget(self) -> None:
        self._checked.clear()
        self._forgotten += 1

    def disconnected(self, error: BaseException) -> None:
        self._unheard = True

    async def _of_key(self, key: str) -> Viewer:
        now = time.monotonic()
        checked = self._checked.get(key)
        if checked is not None and checked[1] > now:
            return checked[0]
        forgotten = self._forgotten
        role = await self._role_of_key(key)
        if role is None:
            self._checked.pop(key, None)
            raise AuthenticationError("unknown or revoked API key")
        viewer = Viewer(ACCESS_OF_ROLE[role], subject=f"api-key:{key[:12]}")
        if forgotten != self._forgotten:
            # A revocation was heard while the key was read: this request was checked
            # before it, but the next must ask again.
            return viewer
        self._checked[key] = (viewer, now + KEY_CHECKED_FOR)
        self._checked.move_to_end(key)
        if len(self._checked) > KEYS_KEPT:
            self._checked.popitem(last=False)
        return viewer

    async def _role_of_key(self, key: str) -> Role | None:
        try:
            return await self._circuit.call(
                role_of_key(engine=self._engine, secret=self._key_secret, key=key), self._limit
            )
        except StoreDownError as down:
            raise CredentialsUncheckableError(
                "the API key cannot be checked while postgres is unavailable; try again later"
            ) from down

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
