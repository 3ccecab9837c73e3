"""The name a Redis pub/sub channel has on the server.

Redis's channels are the server's, not a database's: gateways on two databases of one
server (a staging and a production deployment, say) would hear each other's announcements,
show another deployment's counters on a dashboard and drop cached answers on its writes.
Each database's channels carry its number, in every publisher and in the hub that
subscribes (core/pubsub.py).
"""

from __future__ import annotations

from redis.asyncio import Redis


def on_server(redis: Redis, channel: str) -> str:
    """``channel`` of ``redis``'s database, as published and subscribed on its server."""
    database = redis.connection_pool.connection_kwargs.get("db", 0)
    return f"{database}:{channel}"
