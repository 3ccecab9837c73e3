"""Real PostgreSQL, MongoDB-protocol and Redis-protocol servers run from a local data directory."""

from gateway.embedded.stores import DataDirectoryInUseError, EmbeddedStores

__all__ = ["DataDirectoryInUseError", "EmbeddedStores"]
