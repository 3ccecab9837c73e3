"""Installing what the browser tests and benchmarks need, from processes that run at once."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from bench import installs
from tests.processes import wait_for

# Like apt-get, refuses to run while another run holds its lists; holds them until the
# test lets it go, and "installs" a package by creating the file named after it.
FAKE_APT_GET = """#!/bin/sh
set -e
here=$(dirname "$0")
if [ "$1" = update ]; then
    mkdir "$here/lists.lock" 2>/dev/null || { echo "Could not get lock" >&2; exit 100; }
    touch "$here/updating"
    while [ ! -e "$here/go-on" ]; do sleep 0.05; done
    rmdir "$here/lists.lock"
    exit 0
fi
shift 5
for package in "$@"; do
    touch "$here/$package"
    echo "$package" >> "$here/installed"
done
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="apt_install installs as root only")
def test_processes_that_find_a_package_missing_at_once_install_it_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    apt_get = tmp_path / "apt-get"
    apt_get.write_text(FAKE_APT_GET)
    apt_get.chmod(apt_get.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(installs, "APT_LOCK", tmp_path / "turn.lock")
    wanted = {"chromium": tmp_path / "chromium"}
    failures: list[Exception] = []

    def install() -> None:
        try:
            installs.apt_install(wanted)
        except Exception as error:
            failures.append(error)

    first = threading.Thread(target=install)
    first.start()
    wait_for((tmp_path / "updating").exists, "the first install to update")
    second = threading.Thread(target=install)
    second.start()
    # Without turns, the second reaches apt-get while the first holds its lists, and fails.
    second.join(timeout=1.0)
    (tmp_path / "go-on").touch()
    first.join()
    second.join()

    assert failures == []
    assert (tmp_path / "installed").read_text().split() == ["chromium"]
