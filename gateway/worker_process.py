"""One worker of ``gateway serve --workers``: the application, served on its supervisor's socket.

The supervisor (workers.py) starts it with two inherited descriptors, the listening socket
and a pidfd of the supervisor, and with every store's URL in its environment: so it starts
no embedded server, takes no lock and applies no migration.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import threading

from uvicorn.config import STARTUP_FAILURE

from core.settings import Settings
from gateway.server import configure_logging, serve

logger = logging.getLogger(__name__)


def main(argv: list[str]) -> int:
    listener, supervisor = (int(argument) for argument in argv)
    settings = Settings()
    configure_logging(settings)
    threading.Thread(
        target=_stop_with, args=(supervisor,), name="supervisor-exit", daemon=True
    ).start()
    # Reported as a failed start, like a failing lifespan, so that the supervisor stops
    # instead of replacing this worker with one that fails the same way, forever.
    try:
        from gateway.app import create_app  # noqa: PLC0415 - failing to import is failing to start

        app = create_app(settings, supervised=True)
    except Exception:
        logger.exception("the application could not be built")
        return STARTUP_FAILURE
    serve(app, settings, [socket.socket(fileno=listener)])
    return 0


def _stop_with(supervisor: int) -> None:
    """Shut down, as at the supervisor's SIGTERM, once the supervisor has exited.

    A supervisor killed outright signals nobody, and its watchdog then stops the embedded
    servers this worker uses: it must not go on serving without them. The kernel makes a
    pidfd readable when its process has exited.
    """
    select.select([supervisor], [], [])
    os.kill(os.getpid(), signal.SIGTERM)
