"""A GraphQL gateway over PostgreSQL, MongoDB and Redis: the process (HTTP, WebSocket, the
command line, the embedded servers) on top of core, the resolvers and the stores."""

from core import SERVICE_NAME, __version__

__all__ = ["SERVICE_NAME", "__version__"]
