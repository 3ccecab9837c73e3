"""The validation rules run as one visitor, which calls on each node only the rules that
handle its kind.

graphql-core's ``validate`` runs every rule as a visitor of its own, side by side: for each
kind of node a document holds, it asks each of the thirty-odd rules for its handlers, by
name, and then, at every node, goes through all of the rules, most of which have nothing
to do there. A document the gateway had not seen before spent most of its validation in
that bookkeeping, not in the rules. Handed the rules as one, ``validate`` keeps its own
work (the schema's check, the type information, the error limit, the guard against
fragments nested too deeply) and the rules give the same errors, in the same order. On
the fuzz's and the planner's generated documents (tests/drawn/) a first validation took
1.7 ms instead of 2.5 to 3.1; bench/limits.py compares the two on the nested query.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from graphql.language import BREAK, SKIP, Node, Visitor
from graphql.language.visitor import EnterLeaveVisitor
from graphql.validation import ASTValidationRule, ValidationContext

Handler = Callable[..., Any]

_NO_HANDLERS = EnterLeaveVisitor(None, None)


def as_one_rule(rules: Sequence[type[ASTValidationRule]]) -> type[ASTValidationRule]:
    """``rules`` as one rule for ``graphql.validate``: the same errors, in the same order."""

    class Rules(_Rules):
        chosen = tuple(rules)

    return Rules


class _Rules(ASTValidationRule):
    chosen: tuple[type[ASTValidationRule], ...] = ()

    def __init__(self, context: ValidationContext) -> None:
        super().__init__(context)
        self.rules = [rule(context) for rule in self.chosen]
        # Per rule, as graphql-core's ParallelVisitor keeps it: None while it visits, the
        # node whose subtree it skips, or BREAK once it has stopped.
        self.skipping: list[Any] = [None] * len(self.rules)

    def get_enter_leave_for_kind(self, kind: str) -> EnterLeaveVisitor:
        try:
            return self.enter_leave_map[kind]
        except KeyError:
            handlers = self.enter_leave_map[kind] = self._handlers(kind)
            return handlers

    def _handlers(self, kind: str) -> EnterLeaveVisitor:
        entering: list[tuple[int, Handler]] = []
        leaving: list[tuple[int, Handler | None]] = []
        for index, rule in enumerate(self.rules):
            enter_name, leave_name = _handler_names(type(rule), kind)
            if enter_name is not None:
                entering.append((index, getattr(rule, enter_name)))
            leaving.append((index, getattr(rule, leave_name) if leave_name else None))
        if not entering and not any(handler for _, handler in leaving):
            return _NO_HANDLERS
        # Leaving a node needs only the rules with a handler, unless one of them skips
        # (the one that skips this node's subtree visits again from here on).
        handling = [(index, handler) for index, handler in leaving if handler is not None]
        skipping = self.skipping

        def enter(node: Node, *args: Any) -> Any:
            for index, handler in entering:
                if not skipping[index]:
                    result = handler(node, *args)
                    if result is None:
                        continue
                    if result is SKIP or result is False:
                        skipping[index] = node
                    elif result is BREAK or result is True:
                        skipping[index] = BREAK
                    else:
                        return result
            return None

        def leave(node: Node, *args: Any) -> Any:
            for index, handler in leaving if any(skipping) else handling:
                state = skipping[index]
                if not state:
                    if handler is None:
                        continue
                    result = handler(node, *args)
                    if result is None:
                        continue
                    if result is BREAK or result is True:
                        skipping[index] = BREAK
                    elif result is not SKIP and result is not False:
                        return result
                elif state is node:
                    skipping[index] = None
            return None

        return EnterLeaveVisitor(enter, leave)


# By rule and kind of node: the names of its handlers, found once per process.
_HANDLER_NAMES: dict[tuple[type[Visitor], str], tuple[str | None, str | None]] = {}


def _handler_names(rule: type[Visitor], kind: str) -> tuple[str | None, str | None]:
    """The names of ``rule``'s handlers of nodes of ``kind``, as graphql-core's visitors
    pick them: the kind's own, else the generic one, if any."""
    names = _HANDLER_NAMES.get((rule, kind))
    if names is None:
        names = _HANDLER_NAMES[rule, kind] = (
            _named(rule, f"enter_{kind}", "enter"),
            _named(rule, f"leave_{kind}", "leave"),
        )
    return names


def _named(rule: type[Visitor], *names: str) -> str | None:
    return next((name for name in names if callable(getattr(rule, name, None))), None)
