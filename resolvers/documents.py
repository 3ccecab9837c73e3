"""The flexible part of a report, from its MongoDB document.

A document and its sections and references are dicts as the store gives them; each type
declares how its fields are read off its dict, with the defaults a document written before
a field existed needs, and the key a document's field is stored under, so that a
selection of a few fields fetches only those. The planner projects the dicts directly;
``from_record`` builds the objects Strawberry's executor reads.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

import strawberry
from strawberry.scalars import JSON

from core.sources import RecordFields


@strawberry.type
class Section:
    heading: str
    body: str

    record_fields: ClassVar[RecordFields] = RecordFields(
        dict,
        {
            "heading": lambda section: section.get("heading", ""),
            "body": lambda section: section.get("body", ""),
        },
    )

    @classmethod
    def from_record(cls, section: dict[str, Any]) -> Section:
        return cls.record_fields.construct(cls, section)


@strawberry.type
class Reference:
    title: str
    url: str | None
    doi: str | None

    record_fields: ClassVar[RecordFields] = RecordFields(
        dict,
        {
            "title": lambda reference: reference.get("title", ""),
            "url": lambda reference: reference.get("url"),
            "doi": lambda reference: reference.get("doi"),
        },
    )

    @classmethod
    def from_record(cls, reference: dict[str, Any]) -> Reference:
        return cls.record_fields.construct(cls, reference)


@strawberry.type(description="A report's document: sections, tags, references and metadata.")
class ReportDocument:
    sections: list[Section]
    tags: list[str]
    references: list[Reference]
    metadata: JSON = strawberry.field(description="Free-form metadata; its shape varies.")
    revision: int
    updated_at: datetime | None

    record_fields: ClassVar[RecordFields] = RecordFields(
        dict,
        {
            "sections": lambda document: document.get("sections", ()),
            "tags": lambda document: list(document.get("tags", ())),
            "references": lambda document: document.get("references", ()),
            "metadata": lambda document: document.get("metadata", {}),
            "revision": lambda document: int(document.get("revision", 1)),
            "updated_at": lambda document: document.get("updated_at"),
        },
        paths={
            "sections": "sections",
            "tags": "tags",
            "references": "references",
            "metadata": "metadata",
            "revision": "revision",
            "updated_at": "updated_at",
        },
    )

    @classmethod
    def from_record(cls, document: dict[str, Any]) -> ReportDocument:
        built = cls.record_fields.construct(cls, document)
        # The mapping reads the sections' and references' dicts, which the planner projects
        # as they are; the object holds their objects.
        read = cls.record_fields.reader
        built.sections = [Section.from_record(item) for item in read("sections")(document)]
        built.references = [Reference.from_record(item) for item in read("references")(document)]
        return built
