"""A GraphQL gateway over PostgreSQL, MongoDB and Redis."""

__version__ = "0.1.0"
SERVICE_NAME = "polyglot-gateway"
