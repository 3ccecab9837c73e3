"""Embedded MongoDB-protocol server: ``nx-27017``, the MongoDB wire protocol over SQLite.

It is not MongoDB. The gateway uses only operations that MongoDB itself supports and that
this server answers the same way, so that the same code runs against a real MongoDB.
"""

from __future__ import annotations

import sys

from gateway.embedded.process import LOOPBACK, EmbeddedServer


class MongoServer(EmbeddedServer):
    name = "mongodb"

    def command(self, port: int) -> list[str]:
        return [
            sys.executable, "-c", "from nx_27017.nx_27017 import main; main()",
            "--data-dir", str(self.store_dir / "databases"),
            "--host", LOOPBACK,
            "--port", str(port),
            "--log-file", str(self.store_dir / "server.log"),
            # Its own daemon pid file is unused (the gateway keeps its own), but the
            # default path is shared by every instance on the machine.
            "--pid-file", str(self.store_dir / "server.pid"),
            "--journal-mode", "WAL",
        ]  # fmt: skip

    def url(self, port: int) -> str:
        return f"mongodb://{LOOPBACK}:{port}/?directConnection=true"
