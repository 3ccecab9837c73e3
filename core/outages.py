"""A store's outage as one part of the gateway meets it: logged when it begins and when it
ends, not once per request that meets it; the log says why, in the driver's words."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator

# Seconds a store that parts of the gateway go on without (the response cache, the rate
# limits) is not asked again after a call failed.
RETRY_AFTER = 1.0
# Enough of a driver's message to say why (a refused or unverified certificate, a refused
# password, an address that does not answer), not a page of it.
REASON_LENGTH = 300


class Outage:
    def __init__(self, logger: logging.Logger, *, began: str, ended: str) -> None:
        self._logger = logger
        self._began = began
        self._ended = ended
        self.ongoing = False

    def failed(self, error: BaseException) -> None:
        if not self.ongoing:
            self.ongoing = True
            self._logger.warning("%s (%s)", self._began, reason(error))

    def recovered(self) -> None:
        if self.ongoing:
            self.ongoing = False
            self._logger.info(self._ended)


class Bypassed:
    """An outage that its callers go on without: after a failure the store is not asked
    for ``RETRY_AFTER`` seconds; then one caller at a time asks it (for ``timeout`` seconds
    at most) while the others go on without it, until it answers, rather than each wait
    for a hung store for the whole timeout."""

    def __init__(self, outage: Outage, *, timeout: float) -> None:
        self._outage = outage
        self._timeout = timeout
        self._retry_at = 0.0

    def asks(self) -> bool:
        """Whether this caller may ask the store now."""
        if not self._outage.ongoing:
            return True
        now = time.monotonic()
        if now < self._retry_at:
            return False
        self._retry_at = now + self._timeout
        return True

    def failed(self, error: BaseException) -> None:
        self._retry_at = time.monotonic() + RETRY_AFTER
        self._outage.failed(error)

    def answered(self) -> None:
        self._outage.recovered()


def causes(error: BaseException) -> Iterator[BaseException]:
    """``error``, then what it was raised from, down to the driver's own error."""
    seen: set[int] = set()
    link: BaseException | None = error
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        yield link
        # SQLAlchemy keeps the driver's error as ``orig``, as well as its cause.
        link = link.__cause__ or getattr(link, "orig", None)


def reason(error: BaseException) -> str:
    """Why a call failed, for the operator's log, never a client's answer: the kind and
    message of the innermost error that has one, the driver's own. The errors wrapped
    around it add nothing but, for SQLAlchemy's, the statement and its parameters; a
    timeout is raised from a cancellation, which says nothing."""
    links = [link for link in causes(error) if not isinstance(link, asyncio.CancelledError)]
    told = [link for link in links if str(link).strip()] or links or [error]
    innermost = told[-1]
    # Redis echoes the arguments of a command it does not know: a password, for HELLO.
    message = " ".join(str(innermost).split()).split(", with args beginning with:")[0]
    if len(message) > REASON_LENGTH:
        message = message[: REASON_LENGTH - 1] + "…"
    return f"{type(innermost).__name__}: {message}" if message else type(innermost).__name__
