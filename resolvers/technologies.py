"""The root field that lists technologies."""

from __future__ import annotations

from typing import Any

import strawberry

from datasources.models import Technology as TechnologyModel
from resolvers.catalogue import Technology
from resolvers.pagination import Connection, listing_field

TECHNOLOGIES: Any = TechnologyModel.__table__
ORDERING = "technologies:name:asc"


@strawberry.type
class TechnologyQuery:
    technologies: Connection[Technology] = listing_field(
        table=TECHNOLOGIES,
        ordering=ORDERING,
        node=Technology.from_record,
        description="Technologies by name, a page at a time.",
    )
