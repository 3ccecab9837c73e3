"""The CPU time of the processes a benchmark measures, as the kernel counts it."""

from __future__ import annotations

import resource

import psutil


def reaped_children_seconds() -> float:
    """User and system CPU of this process's children that have exited and been waited
    for, and of theirs that they waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def own_seconds(process: psutil.Process) -> float:
    """User and system CPU of the process itself."""
    times = process.cpu_times()
    return times.user + times.system


def tree_seconds(server: psutil.Process) -> float:
    """User and system CPU of a server and of its workers: those running now, and those
    that have exited (the server reaps them, so their CPU is its children's)."""
    times = server.cpu_times()
    total = times.user + times.system + times.children_user + times.children_system
    for process in server.children(recursive=True):
        try:
            total += own_seconds(process)
        except psutil.NoSuchProcess:
            # Exited between the listing and now: counted as the server's child from
            # the next reading on, so this reading may miss it, never count it twice.
            continue
    return total
