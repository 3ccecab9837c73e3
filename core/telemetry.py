"""What traces and log lines are made of: the request id of the task at hand, and the
spans of a request's phases and store calls.

``tracer`` is set once, when the process starts with an OTLP endpoint (gateway/tracing.py
makes the SDK's provider then); with none, it stays None and no span is ever made: every
hook tests it first, and no SDK is imported. A module global rather than application
state, since the hooks sit deep in the loaders and the planner, which only see a request's
context, and like OpenTelemetry's own global provider there is one per process.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar

from opentelemetry.trace import Span, SpanKind, Tracer
from opentelemetry.util.types import AttributeValue

from datasources.instrumentation import current_commands

# The id of the request the current task serves; log lines and spans carry it.
current_request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
REQUEST_ID = "gateway.request_id"
# Statements or commands kept on a store call's span, and the characters of each.
MAX_COMMANDS = 20
MAX_COMMAND_LENGTH = 2000

tracer: Tracer | None = None
_UNTRACED: AbstractContextManager[None] = nullcontext()


def use(chosen: Tracer | None) -> None:
    global tracer  # noqa: PLW0603 - set once at start-up, and cleared at shutdown
    tracer = chosen


def span(name: str, **attributes: AttributeValue) -> AbstractContextManager[Span | None]:
    """A span around a phase, the current one within it; nothing when not tracing."""
    if tracer is None:
        return _UNTRACED
    return tracer.start_as_current_span(name, attributes=attributes)


@contextmanager
def store_call(active: Tracer, store: str, name: str, keys: int | None) -> Iterator[None]:
    """A span around one store call, with the statements or commands it sent
    (datasources/instrumentation.py notes them for the call's task)."""
    attributes: dict[str, AttributeValue] = {
        "db.system.name": _SYSTEMS[store],
        "gateway.source": name,
    }
    if keys is not None:
        attributes["gateway.batch.keys"] = keys
    commands: list[str] = []
    with active.start_as_current_span(
        f"{store} {name}", kind=SpanKind.CLIENT, attributes=attributes
    ) as current:
        # Bound before the call's task starts, which copies the binding (core/stores.py).
        token = current_commands.set(commands)
        try:
            yield
        finally:
            current_commands.reset(token)
            if commands:
                current.set_attribute(
                    "db.query.text",
                    "\n".join(command[:MAX_COMMAND_LENGTH] for command in commands[:MAX_COMMANDS]),
                )


_SYSTEMS = {"postgres": "postgresql", "mongodb": "mongodb", "redis": "redis"}
