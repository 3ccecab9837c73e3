"""What every request uses, below the resolvers and the planner and above the stores: the
settings, the stores' clients, the request's context and loaders, errors and auth."""

__version__ = "0.1.0"
SERVICE_NAME = "polyglot-gateway"
