"""A PostgreSQL 15 cluster of the distribution's, in a directory of the benchmark's own, on
a free loopback port: the one database that the gateway and its peers all read."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench.cpu import tree_seconds
from bench.installs import POSTGRES_BIN
from gateway.embedded.process import free_port

DATABASE = "catalogue"
SYSTEM_USER = "postgres"


def _as_owner() -> list[str]:
    # PostgreSQL refuses to run as root; the distribution's package made this account.
    return ["runuser", "-u", SYSTEM_USER, "--"] if os.geteuid() == 0 else []


def _run(*command: str) -> str:
    finished = subprocess.run([*_as_owner(), *command], capture_output=True, text=True, check=False)
    if finished.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{finished.stdout}{finished.stderr}")
    return finished.stdout


@dataclass(frozen=True)
class Cluster:
    directory: Path
    port: int

    def url(self, scheme: str = "postgresql") -> str:
        return f"{scheme}://{SYSTEM_USER}@127.0.0.1:{self.port}/{DATABASE}"

    def query(self, statement: str, database: str = DATABASE) -> str:
        """One statement through psql; its rows unaligned, one a line."""
        return _run(
            str(POSTGRES_BIN / "psql"),
            *("-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"),
            *("-h", "127.0.0.1", "-p", str(self.port), "-U", SYSTEM_USER, "-d", database),
            *("-c", statement),
        )

    def cpu_seconds(self) -> float:
        """User and system CPU of the server and of its backends, exited ones included."""
        postmaster = int((self.directory / "data" / "postmaster.pid").open().readline())
        return tree_seconds(psutil.Process(postmaster))


@contextmanager
def running_cluster(directory: Path, *settings: str) -> Iterator[Cluster]:
    """The cluster in ``directory`` (created there if it has none), started for the block
    with the server's ``settings`` (``ssl=on``...) and stopped after it; the directory
    itself is the caller's to keep or remove."""
    data = directory / "data"
    if os.geteuid() == 0:
        directory.mkdir(parents=True, exist_ok=True)
        account = pwd.getpwnam(SYSTEM_USER)
        shutil.chown(directory, account.pw_uid, account.pw_gid)
    created = not (data / "PG_VERSION").exists()
    if created:
        _run(
            str(POSTGRES_BIN / "initdb"),
            *("-D", str(data), "-U", SYSTEM_USER, "--auth=trust", "-E", "UTF8", "--locale=C"),
        )
    cluster = Cluster(directory, free_port())
    pg_ctl = str(POSTGRES_BIN / "pg_ctl")
    _run(
        pg_ctl,
        *("-D", str(data), "-l", str(directory / "server.log"), "-w"),
        *("-o", " ".join([f"-p {cluster.port} -h 127.0.0.1 -k {directory}", *settings])),
        "start",
    )
    try:
        if created:
            cluster.query(f"CREATE DATABASE {DATABASE}", database="postgres")
        yield cluster
    finally:
        subprocess.run(
            [*_as_owner(), pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"],
            check=False,
            capture_output=True,
        )
