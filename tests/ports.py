"""Ports for the servers the tests start themselves: gateways, uvicorn, a store restarted
on its port. Each test process takes them from a range of its own, below the range the
kernel hands out. A port found free and given to a gateway stays free only until someone
else binds it, and a gateway binds it a second or two later, once it has imported
everything: a port the kernel offers could meanwhile be offered to another test process's
server, or to an embedded store. No one is offered these."""

from __future__ import annotations

import itertools
import os
import socket
from pathlib import Path

from gateway.embedded.process import LOOPBACK, free_port

WORKER_INDEX = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
FIRST = 10_000
SPAN = 1_000
_start = FIRST + WORKER_INDEX * SPAN
_ports = itertools.cycle(range(_start, _start + SPAN))


def own_port() -> int:
    """A loopback port nothing listens on, from this test process's range; one the kernel
    offers where its own range leaves no room below it."""
    if _start + SPAN > _kernel_range_start():
        return free_port()
    for _ in range(SPAN):
        port = next(_ports)
        if _bindable(port):
            return port
    return free_port()


def _kernel_range_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As the servers bind: a port whose last connection is still closing is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((LOOPBACK, port))
        except OSError:
            return False
    return True
