"""Whether a run is given stores of its own instead of the embedded servers, by the
variables the README names: such a run is there for what those stores answer."""

from __future__ import annotations

import os

GIVEN_STORES = ("GATEWAY_TEST_DATABASE_URL", "GATEWAY_TEST_MONGO_URL", "GATEWAY_TEST_REDIS_URL")


def stores_given() -> bool:
    return any(os.environ.get(name) for name in GIVEN_STORES)
