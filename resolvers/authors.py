"""The root field that lists authors."""

from __future__ import annotations

from typing import Any

import strawberry

from datasources.models import Author as AuthorModel
from resolvers.catalogue import AUTHOR_ORDERING, Author
from resolvers.pagination import Connection, listing_field

AUTHORS: Any = AuthorModel.__table__


@strawberry.type
class AuthorQuery:
    authors: Connection[Author] = listing_field(
        table=AUTHORS,
        ordering=AUTHOR_ORDERING,
        node=Author.from_record,
        description="Authors by name, a page at a time.",
    )
