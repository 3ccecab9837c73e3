"""A MariaDB server of the distribution's, in a directory of the benchmark's own, on a free
loopback port, installed with apt-get when missing."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.installs import apt_install
from gateway.embedded.process import free_port

SYSTEM_USER = "mysql"
SERVER = Path("/usr/sbin/mariadbd")
CLIENT = Path("/usr/bin/mariadb")
INSTALL_DB = Path("/usr/bin/mariadb-install-db")
READY_TIMEOUT = 60.0


def _as_owner() -> list[str]:
    return ["runuser", "-u", SYSTEM_USER, "--"] if os.geteuid() == 0 else []


@contextmanager
def running_server(directory: Path) -> Iterator[str]:
    """A server on a new data directory in ``directory``, for the block: the URL of its
    database ``catalogue``, empty, for its root account."""
    apt_install({"mariadb-server": SERVER})
    directory.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        account = pwd.getpwnam(SYSTEM_USER)
        shutil.chown(directory, account.pw_uid, account.pw_gid)
    subprocess.run(
        [
            *_as_owner(), str(INSTALL_DB), f"--datadir={directory / 'data'}",
            "--skip-test-db", "--auth-root-authentication-method=normal",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    port = free_port()
    server = subprocess.Popen(
        [
            *_as_owner(), str(SERVER), f"--datadir={directory / 'data'}", f"--port={port}",
            "--bind-address=127.0.0.1", f"--socket={directory / 'mariadbd.sock'}",
            "--skip-name-resolve", f"--log-error={directory / 'error.log'}",
        ],
        # Its log is error.log; what it and runuser say besides is no figure of ours.
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_until_ready(port)
        subprocess.run(
            [
                *(str(CLIENT), "-h", "127.0.0.1", "-P", str(port), "-u", "root"),
                *("-e", "CREATE DATABASE catalogue CHARACTER SET utf8mb4"),
            ],
            check=True,
        )
        yield f"mysql+asyncmy://root@127.0.0.1:{port}/catalogue"
    finally:
        server.terminate()
        server.wait(timeout=60)


def _wait_until_ready(port: int) -> None:
    started = time.monotonic()
    while time.monotonic() - started < READY_TIMEOUT:
        answered = subprocess.run(
            [str(CLIENT), "-h", "127.0.0.1", "-P", str(port), "-u", "root", "-e", "SELECT 1"],
            capture_output=True,
            check=False,
        )
        if answered.returncode == 0:
            return
        time.sleep(0.5)
    raise RuntimeError("MariaDB did not start")
