"""A process that stops the embedded servers when the gateway that started them dies.

A gateway stops its servers itself when it stops. The watchdog covers the deaths it cannot
act on: SIGKILL, the out-of-memory killer, a crash in native code. Without it the servers
would run on until the next gateway started on the same data directory.

How it learns of the death: the owner opens a pidfd of its own process (``os.pidfd_open``,
Linux 5.3) and hands it to the watchdog, which polls it. The kernel makes a pidfd readable
when the whole process has exited, and the descriptor can never come to name another
process that is given the same pid. Two simpler mechanisms do not work here:
``PR_SET_PDEATHSIG`` fires when the *thread* that forked the child exits, and the servers
are started from short-lived worker threads (``asyncio.to_thread``); a pipe alone reports
the owner's death only once every process that inherited its end has exited too.

What it does then: it takes the data directory's lock, as a gateway that starts does. If
another gateway holds the lock, that gateway already stopped the dead one's servers when
it started, and the servers now recorded are its own, so the watchdog leaves them alone.
Otherwise it stops every server recorded in the pid files (PostgreSQL with a fast
shutdown), kills any that outlive the grace period, and releases the directory.

When the owner stops its servers itself, it releases the watchdog through the watchdog's
standard input, and the watchdog exits without touching anything.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

# Whatever the owner writes means "released"; a pipe that ends without it means nothing,
# since the owner's end closes as it exits, before its pidfd reports the exit.
RELEASE = b"released\n"
RELEASE_TIMEOUT = 5.0
# Not ``-m``: the package imports the module first, and runpy warns about that.
ENTRY_POINT = (
    "import sys; from gateway.embedded.watchdog_process import main; sys.exit(main(sys.argv[1:]))"
)


class Watchdog:
    """The owner's handle on its watchdog process."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process

    @classmethod
    def start(cls, data_dir: Path) -> Watchdog:
        """Start a watchdog for the servers that this process starts in ``data_dir``."""
        owner = os.pidfd_open(os.getpid())
        log_file = data_dir / "logs" / "watchdog.log"
        log_file.parent.mkdir(parents=True, exist_ok=True)
        try:
            with log_file.open("ab") as log:
                process = subprocess.Popen(
                    [sys.executable, "-c", ENTRY_POINT, str(data_dir), str(owner)],
                    stdin=subprocess.PIPE,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    pass_fds=(owner,),
                    # Out of the owner's session, so that the Ctrl-C or the signal to the
                    # process group that ends the owner leaves the watchdog to clean up.
                    start_new_session=True,
                )
        finally:
            os.close(owner)
        return cls(process)

    def release(self) -> None:
        """Tell the watchdog that the servers were stopped, and wait for it to exit."""
        assert self.process.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.process.stdin.write(RELEASE)
            self.process.stdin.close()
        try:
            self.process.wait(timeout=RELEASE_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
