"""The flexible part of a report, from its MongoDB document."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import strawberry
from strawberry.scalars import JSON


@strawberry.type
class Section:
    heading: str
    body: str


@strawberry.type
class Reference:
    title: str
    url: str | None
    doi: str | None


@strawberry.type(description="A report's document: sections, tags, references and metadata.")
class ReportDocument:
    sections: list[Section]
    tags: list[str]
    references: list[Reference]
    metadata: JSON = strawberry.field(description="Free-form metadata; its shape varies.")
    revision: int
    updated_at: datetime | None

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> ReportDocument:
        return cls(
            sections=[
                Section(heading=section.get("heading", ""), body=section.get("body", ""))
                for section in document.get("sections", ())
            ],
            tags=list(document.get("tags", ())),
            references=[
                Reference(
                    title=reference.get("title", ""),
                    url=reference.get("url"),
                    doi=reference.get("doi"),
                )
                for reference in document.get("references", ())
            ],
            metadata=document.get("metadata", {}),
            revision=int(document.get("revision", 1)),
            updated_at=document.get("updated_at"),
        )
