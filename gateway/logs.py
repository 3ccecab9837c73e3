"""Log lines, as text or as JSON objects (``GATEWAY_LOG_FORMAT``), each with the id of the
request it was written for (``-`` outside of one)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import orjson

from core.telemetry import current_request_id

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"
# What every record has; anything else was given as ``extra`` and goes into the JSON.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "request_id",
}


class RequestIds(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current_request_id.get() or "-"
        return True


class JSONLines(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id, the record's
    extra fields, and the exception's traceback if there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        line.update((name, value) for name, value in vars(record).items() if name not in _STANDARD)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def handler(log_format: str) -> logging.Handler:
    """A handler to standard error in ``log_format``, which gives each line its request id."""
    stream = logging.StreamHandler()
    stream.addFilter(RequestIds())
    stream.setFormatter(JSONLines() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    return stream
