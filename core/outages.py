"""A store's outage as one part of the gateway meets it: logged when it begins and when it
ends, not once per request that meets it."""

from __future__ import annotations

import logging


class Outage:
    def __init__(self, logger: logging.Logger, *, began: str, ended: str) -> None:
        self._logger = logger
        self._began = began
        self._ended = ended
        self.ongoing = False

    def failed(self, error: BaseException) -> None:
        if not self.ongoing:
            self.ongoing = True
            self._logger.warning("%s (%s)", self._began, type(error).__name__)

    def recovered(self) -> None:
        if self.ongoing:
            self.ongoing = False
            self._logger.info(self._ended)
