"""uvicorn as the gateway runs it: connections drained at shutdown, and a deadline on it."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import threading
import time
from types import FrameType

import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from core.settings import Settings
from gateway.logs import handler

logger = logging.getLogger("gateway")
# Seconds the application's shutdown (background work, clients, embedded servers) may take
# beyond one store call, once the requests' time is up; past it the process exits anyway.
STOP_ALLOWANCE = 5.0


def configure_logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level.upper(), handlers=[handler(settings.log_format)])


def shutdown_deadline(settings: Settings) -> float:
    """Seconds from a signal until a process that serves is made to exit."""
    return _graceful_seconds(settings) + settings.store_timeout + STOP_ALLOWANCE


def serve(app: ASGIApp, settings: Settings, sockets: list[socket.socket] | None = None) -> None:
    """Serve ``app`` until SIGTERM or SIGINT, on ``sockets`` if given, else on the settings'
    host and port."""
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        # uvicorn's loggers write through the root logger's handler: the same format, and
        # the request id on the access log's lines.
        log_config=None,
        log_level=settings.log_level,
        access_log=settings.access_log,
        lifespan="on",
        http=DrainingHttpProtocol,
        # The client's address is the peer's: X-Forwarded-For counts only from the proxies
        # of GATEWAY_TRUSTED_PROXIES (see gateway/rate_limits.py), never from uvicorn's
        # own default list, under which any local process could choose its address.
        proxy_headers=False,
        # Live counters and leaderboards are small messages, each compressed for every
        # subscriber: compression cost a process holding 5,000 subscribers a seventh of its
        # processor and half the memory of each connection, to save bytes on messages of
        # a few hundred.
        ws_per_message_deflate=settings.ws_compression,
        # Requests still running then are cancelled: safe here, unlike on a request path,
        # since the pools whose connections they hold are about to be closed anyway.
        timeout_graceful_shutdown=_graceful_seconds(settings),
    )
    server = GatewayServer(config)
    threading.Thread(
        target=exit_if_stuck,
        args=(server.signalled, shutdown_deadline(settings)),
        name="shutdown-deadline",
        daemon=True,
    ).start()
    # Once shut down, uvicorn raises the signal it caught again, with the handler it had
    # replaced: a SIGTERM ends the process there, a SIGINT comes back as KeyboardInterrupt.
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets)


def _graceful_seconds(settings: Settings) -> int:
    # Whole seconds for uvicorn: rounded up, so no request gets less than promised.
    return math.ceil(settings.shutdown_timeout)


class SignalLatch:
    """Set once a signal has come, from the signal's handler; waited on by a thread.

    Not a ``threading.Event``: its ``set`` takes a lock, and a second signal arriving while
    the first handler holds it (a Ctrl-C reaches a worker from the terminal and, a moment
    later, as its supervisor's SIGTERM) runs the handler again in the same thread, which
    then waits for that lock for ever. A write to a pipe takes no lock.
    """

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)

    def set(self) -> None:
        # A full pipe has been set many times over already.
        with contextlib.suppress(BlockingIOError):
            os.write(self._write, b"\0")

    def wait(self) -> None:
        os.read(self._read, 1)


class GatewayServer(uvicorn.Server):
    """uvicorn's server, which also lets the shutdown deadline know when a signal came."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.signalled = SignalLatch()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.signalled.set()
        super().handle_exit(sig, frame)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await super().shutdown(sockets)
        if self.force_exit:
            # A second Ctrl-C tells uvicorn to stop waiting for requests, and also to skip
            # the application's shutdown: the embedded servers were then left to the
            # watchdog and the pools cancelled mid-close, with a traceback for each. The
            # requests are not waited for; what the application owns is still stopped,
            # within the shutdown deadline as always.
            await self.lifespan.shutdown()


class DrainingHttpProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 connection, which does not drop a request when shutdown begins.

    uvicorn closes every connection that is between requests the moment it shuts down. A
    request the client has already sent on it, but that the server has not read yet, is
    lost: under load there are many. Instead, such a connection stays open until its
    keep-alive time runs out, as at any other time, and a request that arrives meanwhile
    is answered with ``Connection: close``. A connection accepted with no request read
    yet gets the same time to send one.
    """

    draining = False

    def shutdown(self) -> None:
        self.draining = True
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False
        elif self.timeout_keep_alive_task is None:
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if self.draining:
            self.cycle.keep_alive = False


def exit_if_stuck(signalled: SignalLatch, seconds: float) -> None:
    """Exit once shutdown has run past its time, whatever a request or the loop is doing.

    A thread, not a task: a request that blocks the event loop must not block this. The
    watchdog then stops the embedded servers that the interrupted shutdown left running.
    """
    signalled.wait()
    time.sleep(seconds)
    logger.error("shutdown did not finish within %.0f s of the signal; exiting now", seconds)
    os._exit(1)
