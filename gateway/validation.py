"""The validation rules run as one visitor, which calls on each node only the rules that
handle its kind.

graphql-core's ``validate`` runs every rule as a visitor of its own, side by side: for each
kind of node a document holds, it asks each of the thirty-odd rules for its handlers, by
name, and then, at every node, goes through all of the rules, most of which have nothing
to do there. A document the gateway had not seen before spent most of its validation in
that bookkeeping, not in the rules. Handed the rules as one, ``validate`` keeps its own
work (the schema's check, the type information, the error limit, the guard against
fragments nested too deeply) and the rules give the same errors, in the same order. On
the fuzz's and the planner's generated documents (tests/drawn/) a first validation takes
1.1 ms instead of 2.1 (the best of seven passes); bench/limits.py compares the two on the
nested query.
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
        entering_names, leaving_names = _plan(type(self), kind)
        if not entering_names and not leaving_names:
            return _NO_HANDLERS
        rules = self.rules
        entering = [(index, getattr(rules[index], name)) for index, name in entering_names]
        handling = [(index, getattr(rules[index], name)) for index, name in leaving_names]
        # Leaving a node needs only the rules with a handler, unless one of them skips
        # (the one that skips this node's subtree visits again from here on).
        by_rule = dict(handling)
        leaving = [(index, by_rule.get(index)) for index in range(len(rules))]
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


Plan = tuple[tuple[tuple[int, str], ...], tuple[tuple[int, str], ...]]
# By rules and kind of node: which of the rules handle it, entering and leaving it, by the
# names of their handlers; found once per process, not at each validation.
_PLANS: dict[tuple[type[_Rules], str], Plan] = {}


def _plan(rules: type[_Rules], kind: str) -> Plan:
    plan = _PLANS.get((rules, kind))
    if plan is None:
        # As graphql-core's visitors pick their handlers: the kind's own, else the generic.
        names = [
            (_named(rule, f"enter_{kind}", "enter"), _named(rule, f"leave_{kind}", "leave"))
            for rule in rules.chosen
        ]
        plan = _PLANS[rules, kind] = (
            tuple((index, enter) for index, (enter, _) in enumerate(names) if enter),
            tuple((index, leave) for index, (_, leave) in enumerate(names) if leave),
        )
    return plan


def _named(rule: type[Visitor], *names: str) -> str | None:
    return next((name for name in names if callable(getattr(rule, name, None))), None)
