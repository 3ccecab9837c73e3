"""Live counters from Redis."""

from __future__ import annotations

from enum import Enum

import strawberry

from datasources.counters import Counter


@strawberry.enum(description="A live counter of a report.")
class ReportCounter(Enum):
    VIEWS = Counter.VIEWS.value
    DOWNLOADS = Counter.DOWNLOADS.value


@strawberry.type(description="A report's live counters, as they are now.")
class ReportStats:
    views: int
    downloads: int
