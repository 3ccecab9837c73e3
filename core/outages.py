"""A store's outage as one part of the gateway meets it: logged when it begins and when it
ends, not once per request that meets it; the log says why, in the driver's words."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

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
