"""The root field that lists institutions."""

from __future__ import annotations

from typing import Any

import strawberry

from datasources.models import Institution as InstitutionModel
from resolvers.catalogue import Institution
from resolvers.pagination import Connection, listing_field

INSTITUTIONS: Any = InstitutionModel.__table__
ORDERING = "institutions:name:asc"


@strawberry.type
class InstitutionQuery:
    institutions: Connection[Institution] = listing_field(
        table=INSTITUTIONS,
        ordering=ORDERING,
        node=Institution.from_record,
        description="Institutions by name, a page at a time.",
    )
