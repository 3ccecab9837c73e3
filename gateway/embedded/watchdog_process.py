"""The watchdog process itself (see watchdog.py): it waits for its owner to die or to release
it, and stops the owner's embedded servers if it died."""

from __future__ import annotations

import logging
import os
import select
import sys
from pathlib import Path

from core.store_urls import StoreUrls
from gateway.embedded.stores import EmbeddedStores
from gateway.embedded.watchdog import RELEASE

logger = logging.getLogger(__name__)


def _owner_died(owner: int) -> bool:
    """Wait until the owner exits (True) or releases the watchdog (False)."""
    release = sys.stdin.fileno()
    poller = select.poll()
    poller.register(owner, select.POLLIN)
    poller.register(release, select.POLLIN)
    while True:
        for descriptor, _ in poller.poll():
            if descriptor == owner:
                return True
            if os.read(release, len(RELEASE)):
                return False
            # The owner's end closed without a release: it is exiting; its pidfd says when.
            poller.unregister(release)


def main(arguments: list[str]) -> int:
    data_dir, owner = Path(arguments[0]), int(arguments[1])
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if not _owner_died(owner):
        return 0
    logger.warning("the gateway that owned %s died; stopping its embedded servers", data_dir)
    if not EmbeddedStores(data_dir, StoreUrls()).stop_orphans():
        logger.info("another gateway owns %s now; its servers are left running", data_dir)
    return 0
