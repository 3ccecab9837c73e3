"""Rate limits per client, counted in the cost units of the operations' limits and shared
by every process through Redis (see datasources/rate_limits.py for the algorithm, GCRA).

- **Who.** The subject of an API key or a JWT. An anonymous caller is its address: the
  peer's own, or, when the peer is one of ``GATEWAY_TRUSTED_PROXIES``, the rightmost
  address of ``X-Forwarded-For`` that is not one of them: the one the first trusted proxy
  saw, where everything to its left is the client's to write. IPv6 callers count by their
  /64, which one subscriber usually holds whole. Redis keys hold a hash of who, not who.
- **How much.** An operation's cost (gateway/limits.py), once it has passed every other
  check and right before it runs: an operation refused for another reason, or answered
  from the response cache (a hit costs less than the round trip that would count it),
  spends nothing. A subscription spends its cost once, when it starts.
- **Budget.** ``GATEWAY_RATE_LIMIT`` units per window for every role, or the role's own
  in ``GATEWAY_RATE_LIMITS_BY_ROLE``; none by default. An operation that costs more than
  a whole window's budget can never run for its caller: it is refused as too complex,
  rather than told to retry.
- **Answers.** Every operation that spends carries ``RateLimit-Limit``,
  ``RateLimit-Remaining``, ``RateLimit-Reset`` and ``RateLimit-Policy`` (the IETF draft's
  separate fields, which clients and proxies read widely, rather than its later combined
  ones); a refusal is ``RATE_LIMITED`` with HTTP 429 and ``Retry-After``, or an ``error``
  message for that operation over WebSocket, and the operation never runs.
- **Redis unavailable.** The limits fail open: an operation is never refused because the
  count cannot be kept. A call waits the store timeout at most; after a failure Redis is
  not asked for a second (so a hung Redis costs one operation a second its timeout), and
  the outage is logged once.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from graphql import GraphQLError
from starlette.requests import HTTPConnection

from core.auth import Access
from core.context import Context
from core.errors import ErrorCode, GatewayError
from core.outages import Bypassed, Outage
from core.settings import Budget, Settings, parse_networks
from core.stores import Store, completed_within, unavailable
from datasources.rate_limits import MICROSECONDS, Spending, spend
from gateway.limits import too_complex
from gateway.operations import OperationCache, PreparedDocument

logger = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Quota:
    """What a caller has left of its budget, as its response's headers say."""

    budget: Budget
    remaining: int
    # Seconds until the budget is whole again.
    reset: int
    # Seconds until the refused operation would fit.
    retry_after: int | None = None

    @property
    def headers(self) -> dict[str, str]:
        headers = {
            "ratelimit-limit": str(self.budget.units),
            "ratelimit-remaining": str(self.remaining),
            "ratelimit-reset": str(self.reset),
            "ratelimit-policy": f"{self.budget.units};w={self.budget.seconds}",
        }
        if self.retry_after is not None:
            headers["retry-after"] = str(self.retry_after)
        return headers


@dataclass
class RateLimitError(Exception):
    """An operation its caller's budget does not allow: 429 while it is spent, 400 (a
    limit, as the other limits) when the operation costs more than the whole budget."""

    error: GraphQLError
    status: int
    headers: dict[str, str] = field(default_factory=dict)


class RateLimits:
    def __init__(self, settings: Settings) -> None:
        budgets = settings.rate_limit_budgets()
        self._budgets = {access: budgets[access.name.lower()] for access in Access}
        self._proxies = parse_networks(settings.trusted_proxies)
        self._timeout = settings.store_timeout
        self._outage = Bypassed(
            Outage(
                logger,
                began="rate limits are not enforced while Redis is unavailable",
                ended="rate limits are enforced again",
            ),
            timeout=self._timeout,
        )

    async def spend(
        self,
        context: Context,
        prepared: PreparedDocument,
        operation_name: str | None,
        variables: Mapping[str, Any] | None,
    ) -> Quota | None:
        """Spend the cost of an operation that passed its checks; what is left, or None
        where no limit applies now. Raises ``RateLimitError``."""
        budget = self._budgets[context.viewer.access]
        if budget is None:
            return None
        cost = max(prepared.cost(operation_name, variables), 1)
        if cost > budget.units:
            error = too_complex(f"cost per {budget.seconds}s", cost, budget.units)
            raise RateLimitError(error, 400)
        spending = await self._spend(context, budget, cost)
        if spending is None:
            return None
        window = budget.seconds * MICROSECONDS
        quota = Quota(
            budget,
            # Never below 0, even for a key spent under a longer window before a restart.
            remaining=max(0, (window - spending.in_use) * budget.units // window),
            reset=math.ceil(spending.in_use / MICROSECONDS),
        )
        if spending.spent:
            return quota
        short = spending.in_use + cost * window / budget.units - window
        refused = replace(quota, retry_after=max(1, math.ceil(short / MICROSECONDS)))
        raise RateLimitError(_rate_limited(cost, refused), 429, refused.headers)

    async def refusal(
        self, context: Context, operations: OperationCache, payload: Mapping[str, Any]
    ) -> GraphQLError | None:
        """Why a WebSocket operation may not run now, if its caller's budget is why. An
        operation refused for another reason spends nothing: it is answered as usual."""
        query = payload.get("query")
        if self._budgets[context.viewer.access] is None or not isinstance(query, str):
            return None
        name, variables = payload.get("operationName"), payload.get("variables")
        prepared = operations.prepare(query)
        if prepared.check(name, variables):
            return None
        try:
            await self.spend(context, prepared, name, variables)
        except RateLimitError as refused:
            return refused.error
        return None

    async def _spend(self, context: Context, budget: Budget, cost: int) -> Spending | None:
        if not self._outage.asks():
            return None
        client = _client_of(context.request, context.viewer.subject, self._proxies)
        try:
            spending = await completed_within(
                spend(
                    redis=context.connections.redis,
                    client=client,
                    cost=cost,
                    units=budget.units,
                    window=budget.seconds,
                ),
                Store.REDIS,
                self._timeout,
                context.connections.calls,
            )
        except Exception as error:
            if not unavailable(Store.REDIS, error):
                raise
            self._outage.failed(error)
            return None
        self._outage.answered()
        return spending


def _rate_limited(cost: int, quota: Quota) -> GraphQLError:
    budget = quota.budget
    message = (
        f"rate limit reached: the operation costs {cost}, and {quota.remaining} of "
        f"{budget.units} per {budget.seconds}s are left; try again in {quota.retry_after}s"
    )
    return GraphQLError(
        message,
        original_error=GatewayError(
            message,
            ErrorCode.RATE_LIMITED,
            cost=cost,
            limit=budget.units,
            window=budget.seconds,
            remaining=quota.remaining,
            retryAfter=quota.retry_after,
        ),
    )


def _client_of(connection: HTTPConnection, subject: str | None, proxies: Sequence[Network]) -> str:
    """Whose budget a request spends, hashed."""
    who = (
        f"subject:{subject}"
        if subject is not None
        else f"address:{_caller_address(connection, proxies)}"
    )
    return hashlib.sha256(who.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _caller_address(connection: HTTPConnection, proxies: Sequence[Network]) -> str:
    """The address of an anonymous caller, as far as trusted proxies vouch for it."""
    peer = connection.client.host if connection.client else ""
    address = _address(peer)
    if address is None:
        return peer
    if _among(address, proxies):
        forwarded = ",".join(connection.headers.getlist("x-forwarded-for")).split(",")
        for hop in reversed(forwarded):
            # An entry that is no address ends the walk: what the proxies vouched for stands.
            hop_address = _address(hop)
            if hop_address is None:
                break
            address = hop_address
            if not _among(address, proxies):
                break
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def _address(text: str) -> Address | None:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _among(address: Address, proxies: Sequence[Network]) -> bool:
    return any(address in network for network in proxies)
