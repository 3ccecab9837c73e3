"""The workers of ``gateway serve --workers``, forked from a template process that has
imported the application once.

A new Python process spends most of a second of processor time importing the application
(Strawberry, SQLAlchemy, the drivers), before it serves anything. So the supervisor
(workers.py) starts one template process, which imports it, and forks every worker from it:
the workers it starts, and each one that replaces a worker that died, have started their
application within a tenth of a second (``python -m bench.startup``), and share the
template's memory until they write to it. The supervisor cannot
be the one to fork: by then it has threads, an event loop and connections to the stores,
none of which a forked child may touch. The template has none of them: it waits on its
channel and forks.

The channel is a ``SOCK_SEQPACKET`` pair, so a message arrives whole or not at all. The
supervisor sends one message per worker: the worker's environment, as JSON, with its
listening socket attached. The template answers ``{"started": pid}``, and
``{"exited": pid, "code": code}`` once it has reaped that worker (a negative code is the
signal that killed it). When the supervisor closes the channel, or dies, the template
waits for the workers left and exits. Each worker inherits a pidfd of the supervisor,
given to the template when it started, and shuts down once the supervisor has exited.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import shutil
import signal
import socket
import sys
import threading
import traceback
from pathlib import Path
from typing import NoReturn

from uvicorn.config import STARTUP_FAILURE

from core.settings import Settings
from gateway.collector import frozen_imports
from gateway.server import configure_logging, serve

logger = logging.getLogger(__name__)

# The processes' names, as ps and /proc show them (15 characters at most).
TEMPLATE_NAME = "gateway-forker"
WORKER_NAME = "gateway-worker"
# Room for a worker's environment, which is most of a message.
MESSAGE_LIMIT = 1 << 20


def template(argv: list[str]) -> int:
    """Import the application, then fork a worker for each request on the channel, until
    the supervisor closes it. Then wait for the workers, and remove the metrics directory
    if the supervisor gave it (its own, which a supervisor killed outright leaves)."""
    channel_fd, supervisor = int(argv[0]), int(argv[1])
    leftover = Path(argv[2]) if len(argv) > 2 else None
    _name_process(TEMPLATE_NAME)
    # A Ctrl-C reaches every process of the terminal's group: it is for the supervisor and
    # the workers. The template ends when the supervisor closes the channel, after them.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # What fails to import here fails again in the worker, which reports it as a failed start.
    # Frozen, what the import made is also kept out of the collector's passes, which would
    # write to every object, and so copy into each worker the pages it would otherwise
    # share with the template.
    with frozen_imports(), contextlib.suppress(Exception):
        import gateway.app  # noqa: F401, PLC0415 - the import is the point
    channel = socket.socket(fileno=channel_fd)
    workers: dict[int, int] = {}  # pidfd: pid
    # The supervisor may close its end at any moment, with exits still to report.
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        while _serve_channel(channel, supervisor, workers):
            pass
    # Only left running if the supervisor was killed: they are shutting down.
    for pidfd, pid in workers.items():
        os.waitpid(pid, 0)
        os.close(pidfd)
    if leftover is not None:
        shutil.rmtree(leftover, ignore_errors=True)
    return 0


def _serve_channel(channel: socket.socket, supervisor: int, workers: dict[int, int]) -> bool:
    """Report the workers that have exited, and fork the one asked for; False once the
    supervisor has closed the channel."""
    ready, _, _ = select.select([channel.fileno(), *workers], [], [])
    for pidfd in (fd for fd in ready if fd in workers):
        pid = workers.pop(pidfd)
        os.close(pidfd)
        _, status = os.waitpid(pid, 0)
        _send(channel, {"exited": pid, "code": os.waitstatus_to_exitcode(status)})
    if channel.fileno() not in ready:
        return True
    message, fds, _, _ = socket.recv_fds(channel, MESSAGE_LIMIT, 1)
    if not message:
        return False
    [listener] = fds
    pid = os.fork()
    if pid == 0:
        _work(listener, supervisor, json.loads(message), channel, list(workers))
    os.close(listener)
    workers[os.pidfd_open(pid)] = pid
    _send(channel, {"started": pid})
    return True


def _send(channel: socket.socket, message: dict[str, int]) -> None:
    channel.send(json.dumps(message).encode())


def _work(
    listener: int,
    supervisor: int,
    environment: dict[str, str],
    channel: socket.socket,
    siblings: list[int],
) -> NoReturn:
    """Be a worker, in a child the template has just forked, with the template's channel
    and its pidfds of the other workers; never return to the template's loop."""
    code = 1
    try:
        channel.close()
        for pidfd in siblings:
            os.close(pidfd)
        _name_process(WORKER_NAME)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.environ.clear()
        os.environ.update(environment)
        code = run_worker(listener, supervisor)
    # uvicorn exits so when the application's start-up fails.
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else 1
    # Whatever ends it, a child that returned would go on running the template's loop.
    except BaseException:
        traceback.print_exc()
    finally:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def run_worker(listener: int, supervisor: int) -> int:
    """Serve the application on the supervisor's ``listener`` until SIGTERM or SIGINT, or
    until the supervisor, a pidfd, has exited."""
    threading.Thread(
        target=_stop_with, args=(supervisor,), name="supervisor-exit", daemon=True
    ).start()
    # Reported as a failed start, like a failing lifespan, so that the supervisor stops
    # instead of replacing this worker with one that fails the same way, forever.
    try:
        settings = Settings()
        configure_logging(settings)
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


def _name_process(name: str) -> None:
    """Name this process for ps and /proc, where every process of the gateway would
    otherwise show the same command line."""
    with contextlib.suppress(OSError):
        Path("/proc/self/comm").write_text(name)
