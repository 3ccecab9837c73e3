"""One embedded server process: its pid file, its port, its start, its stop and its orphans."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import psutil

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
POLL_INTERVAL = 0.05
# A server that finds its port taken between the probe and its own bind is given another.
PORT_ATTEMPTS = 5


class ServerStartError(RuntimeError):
    """An embedded server did not come up; the message quotes the end of its log."""


class PortTakenError(ServerStartError):
    """Another process listens on the port a server was started on."""


@dataclass(frozen=True)
class RunAs:
    """An unprivileged account for servers that refuse to run as root."""

    user: str
    uid: int
    gid: int


# The kernel offers a port again as soon as its probe closes: within a few hundred probes
# it offers one twice. Servers started at once (the stores of one gateway, in threads) would
# be given one port, and the second to start would find the first one's server on it.
_handed_out: deque[int] = deque(maxlen=1024)
_handing_out = threading.Lock()


def free_port() -> int:
    """A port nothing listens on now, and that this process has not handed out lately."""
    with _handing_out:
        while True:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                probe.bind((LOOPBACK, 0))
                port: int = probe.getsockname()[1]
            if port not in _handed_out:
                _handed_out.append(port)
                return port


def accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.5):
            return True
    except OSError:
        return False


def log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class EmbeddedServer(ABC):
    """A server process owned by one gateway and recorded in a pid file.

    The pid file holds the pid, the process start time and the port, so that a gateway
    started after a crash can tell its own orphan from an unrelated process that happens
    to have been given the same pid, and stop it before starting afresh.
    """

    name: str
    stop_signal: signal.Signals = signal.SIGTERM

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.store_dir = data_dir / self.name
        self.pid_file = pid_file_path(data_dir, self.name)
        self.log_file = data_dir / "logs" / f"{self.name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.port: int | None = None

    @abstractmethod
    def command(self, port: int) -> list[str]: ...

    @abstractmethod
    def url(self, port: int) -> str: ...

    def prepare(self) -> None:
        """Create the store's files on first use."""
        self.store_dir.mkdir(parents=True, exist_ok=True)

    def is_ready(self, port: int) -> bool:
        return accepts_connections(port)

    def run_as(self) -> RunAs | None:
        return None

    def environment(self) -> dict[str, str] | None:
        return None

    @property
    def exited(self) -> bool:
        """Whether the process this object started has ended without being stopped."""
        return self.process is not None and self.process.poll() is not None

    def restart(self) -> str:
        """Start the server again on its port, where its clients reconnect."""
        port = self.port
        self.process = None
        return self.start(port)

    def start(self, port: int | None = None) -> str:
        """Start the server on ``port``, or on a free port if none is given."""
        self.stop_orphan()
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.prepare()
        if port is not None:
            return self._start_on(port)
        for _ in range(PORT_ATTEMPTS - 1):
            try:
                return self._start_on(free_port())
            except PortTakenError:
                logger.warning("embedded %s found its port taken; trying another", self.name)
        return self._start_on(free_port())

    def _start_on(self, port: int) -> str:
        account = self.run_as()
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(port),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.store_dir,
                env=self.environment(),
                # Its own session: a Ctrl-C meant for the gateway must not reach the
                # server before the gateway has closed its connections and stops it.
                start_new_session=True,
                user=account.uid if account else None,
                group=account.gid if account else None,
                extra_groups=[] if account else None,
            )
        self.port = port
        self._write_pid_file(self.process.pid, port)
        deadline = time.monotonic() + START_TIMEOUT
        # Whatever answers on the port must be this process: a port given to two servers at
        # once, or taken by another program meanwhile, has someone else's server on it.
        while not (self._listens(port) and self.is_ready(port)):
            exited = self.process.poll() is not None
            if exited or time.monotonic() > deadline:
                self.stop()
                if exited and accepts_connections(port):
                    raise PortTakenError(f"port {port} is taken by another process")
                raise ServerStartError(
                    f"embedded {self.name} did not start; last lines of {self.log_file}:\n"
                    + log_tail(self.log_file)
                )
            time.sleep(POLL_INTERVAL)
        logger.info("embedded %s listening on %s:%d", self.name, LOOPBACK, port)
        return self.url(port)

    def _listens(self, port: int) -> bool:
        assert self.process is not None
        try:
            sockets = psutil.Process(self.process.pid).net_connections(kind="tcp")
        except psutil.Error:
            return False
        return any(
            sock.status == psutil.CONN_LISTEN and sock.laddr.port == port for sock in sockets
        )

    def stop(self) -> None:
        if self.process is not None:
            # One that has exited and been reaped has a pid that may be someone else's now.
            if self.process.poll() is None:
                _terminate(psutil.Process(self.process.pid), self.stop_signal)
            self.process.wait()
            self.process = None
        self.pid_file.unlink(missing_ok=True)
        self.port = None

    def stop_orphan(self) -> None:
        """Stop a server left running by a gateway that died without stopping it."""
        stop_recorded(self.data_dir, self.name, self.stop_signal)

    def _write_pid_file(self, pid: int, port: int) -> None:
        record = {"pid": pid, "port": port, "create_time": psutil.Process(pid).create_time()}
        temporary = self.pid_file.with_suffix(".tmp")
        temporary.write_text(json.dumps(record))
        os.replace(temporary, self.pid_file)


def pid_file_path(data_dir: Path, name: str) -> Path:
    return data_dir / "run" / f"{name}.json"


def recorded_process(data_dir: Path, name: str) -> psutil.Process | None:
    """The server recorded for ``name``, if that very process still runs."""
    try:
        record = json.loads(pid_file_path(data_dir, name).read_text())
        process = psutil.Process(int(record["pid"]))
        if abs(process.create_time() - float(record["create_time"])) > 1.0:
            return None
    except (OSError, ValueError, KeyError, TypeError, psutil.Error):
        return None
    return process


def stop_recorded(data_dir: Path, name: str, stop_signal: signal.Signals) -> None:
    """Stop the server recorded for ``name``, whoever started it, and forget it."""
    orphan = recorded_process(data_dir, name)
    if orphan is not None:
        logger.warning("stopping orphaned embedded %s (pid %d)", name, orphan.pid)
        _terminate(orphan, stop_signal)
    pid_file_path(data_dir, name).unlink(missing_ok=True)


def _terminate(process: psutil.Process, stop_signal: signal.Signals) -> None:
    with contextlib.suppress(psutil.NoSuchProcess):
        process.send_signal(stop_signal)
        # A stopped process (SIGSTOP, a debugger, job control) only acts on the signal
        # once continued; without this it would sit out the whole timeout and be killed.
        process.send_signal(signal.SIGCONT)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except psutil.TimeoutExpired:
            logger.warning("pid %d ignored %s; killing it", process.pid, stop_signal.name)
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)
