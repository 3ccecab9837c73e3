"""Where the data of every relation comes from, as data: the store, the batch function of
``datasources`` and how it is called. Fields declare their source beside themselves (see
``resolvers.relations``); the DataLoaders and the planner are both made from this table, so
there is one place to read, and one edit to make, for each relation.

A ``Source`` is called with every key of one level at once and answers under the batch
contract: one value per key, in key order (``None``, or an empty list for a source of many,
where a key matches nothing). Sources that take arguments (a page of a list, say) are made
by functions; two sources with the same name and arguments are the same source, and share
one batch.

A ``Read`` is a root field's read, with no key to batch (a page of a list, a count). And
``RecordFields``, declared by each object type beside itself, says how the type's fields are
read off the records its sources fetch.

Each source and read also names what it read, as cache tags (see core/response_cache.py):
an entity (``Report:42``), every list of a type (``Report:list``), the lists of reports
under one parent (``Report:list:author:7``: an author's, or a root list filtered by that
author), or the live counters (``Counters``), which change without a mutation. A mutation
invalidates the tags of what it wrote, so a response cached with its tags is never one a
mutation has changed; a list that only a parent's reports can enter is left alone by
writes to other reports.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, Generic, TypeVar

from sqlalchemy import Table

from core.connections import Connections
from core.stores import Store
from datasources import listings, lookups, reports
from datasources.counter_snapshots import restored
from datasources.counters import Counter, ReportCounters, counters_by_report, top_report_ids
from datasources.documents import documents_by_report, report_ids_tagged
from datasources.keyset import Page, PageRequest
from datasources.models import Author, Institution, Report, ReportType, Technology
from datasources.reports import ReportFilter, ReportParent, ReportSort

K = TypeVar("K", bound=Hashable)
Tags = Iterable[str]
# The type of the tags of the live counters, which also change without a mutation (the
# snapshot of them that orders reports by views): a report's, the leaderboards', the
# snapshot's. Responses that read them live the counters' own, short, time.
COUNTERS = "Counters"
LEADERBOARDS_TAG = f"{COUNTERS}:top"
SNAPSHOT_TAG = f"{COUNTERS}:snapshot"
TYPE_OF_TABLE = {
    "reports": "Report",
    "authors": "Author",
    "institutions": "Institution",
    "report_types": "ReportType",
    "technologies": "Technology",
}


def entity_tag(type_name: str, database_id: int) -> str:
    return f"{type_name}:{database_id}"


def list_tag(type_name: str) -> str:
    """Every list of a type, and its counts: what a created or deleted entity, or one whose
    filter or sort fields changed, invalidates."""
    return f"{type_name}:list"


def report_list_tag(parent: ReportParent, parent_id: int) -> str:
    """The lists of reports that only ``parent``'s reports can enter: what a write to one
    of its reports (or to the links that make it one) invalidates, besides ``Report:list``."""
    return f"{list_tag('Report')}:{parent}:{parent_id}"


def _keys_of(type_name: str) -> Callable[[Sequence[Any], Sequence[Any]], Tags]:
    return lambda keys, _: [f"{type_name}:{key}" for key in keys]


def _of_list(type_name: str, *others: str) -> Callable[..., Tags]:
    tags = (list_tag(type_name), *others)
    return lambda *_: tags


def _by_views(sort: ReportSort) -> tuple[str, ...]:
    """Lists by views are ordered by the counters' snapshots, which change without a
    mutation."""
    return (SNAPSHOT_TAG,) if sort is ReportSort.VIEWS else ()


def _of_parents(parent: ReportParent, sort: ReportSort | None = None) -> Callable[..., Tags]:
    """Lists of reports under parents: each parent's own tag."""
    others = _by_views(sort) if sort is not None else ()
    return lambda ids, _: [*(report_list_tag(parent, key) for key in ids), *others]


# The filters whose ids name report parents: a list filtered by them holds only those
# parents' reports, whatever else it filters on (a report's own fields, which a write to
# it invalidates with its parents' tags).
_PARENT_FILTERS = {
    ReportParent.AUTHOR: attrgetter("author_ids"),
    ReportParent.TECHNOLOGY: attrgetter("technology_ids"),
    ReportParent.REPORT_TYPE: attrgetter("type_ids"),
}


def _of_filtered(criteria: ReportFilter, sort: ReportSort | None = None) -> Callable[..., Tags]:
    """A root list of reports. Its parents' tags are exact when it is filtered by parents,
    and only by them and the reports' own fields: the institutions of authors change with
    an author, and the tags of documents with a document, so those filters read every
    list."""
    others = _by_views(sort) if sort is not None else ()
    narrowing = [
        (parent, ids) for parent, ids_of in _PARENT_FILTERS.items() if (ids := ids_of(criteria))
    ]
    if not narrowing or criteria.institution_ids or criteria.tags:
        return _of_list("Report", *others)
    # Any one parent filter is exact; the one with the fewest ids is invalidated least.
    parent, ids = min(narrowing, key=lambda narrowed: len(narrowed[1]))
    tags = (*(report_list_tag(parent, key) for key in ids), *others)
    return lambda *_: tags


V = TypeVar("V")
T = TypeVar("T")


@dataclass(frozen=True)
class Source(Generic[K, V]):
    name: str
    store: Store
    fetch: Callable[[Connections, Sequence[K]], Awaitable[Sequence[V]]] = field(compare=False)
    # The cache tags of a batch: of its keys, and of the values fetched for them.
    tags: Callable[[Sequence[K], Sequence[V]], Tags] = field(compare=False)
    # What makes two sources of one name different: a page's size and position, say.
    arguments: tuple[Hashable, ...] = ()


@dataclass(frozen=True)
class Read(Generic[V]):
    """A read of a root field, with no key to batch: a page of a list, a count, a
    leaderboard. Declared here like the sources, so that resolvers name what they read and
    never a store or its client."""

    name: str
    store: Store
    fetch: Callable[[Connections], Awaitable[V]] = field(compare=False)
    # The cache tags of what was read.
    tags: Callable[[V], Tags] = field(compare=False)


def _by_id(model: Any) -> Source[int, Any]:
    table = model.__table__
    return Source(
        f"{table.name} by id",
        Store.POSTGRES,
        lambda stores, ids: lookups.records_by_id(engine=stores.reader, table=table, ids=ids),
        _keys_of(TYPE_OF_TABLE[table.name]),
    )


REPORT = _by_id(Report)
AUTHOR = _by_id(Author)
INSTITUTION = _by_id(Institution)
REPORT_TYPE = _by_id(ReportType)
TECHNOLOGY = _by_id(Technology)

AUTHORSHIPS_OF_REPORT: Source[int, list[Any]] = Source(
    "authorships of a report",
    Store.POSTGRES,
    lambda stores, ids: lookups.authorships_by_report(engine=stores.reader, report_ids=ids),
    lambda ids, authorships: [
        *_keys_of("Report")(ids, authorships),
        *(f"Author:{link.author.id}" for links in authorships for link in links),
    ],
)
TECHNOLOGIES_OF_REPORT: Source[int, list[Any]] = Source(
    "technologies of a report",
    Store.POSTGRES,
    lambda stores, ids: lookups.technologies_by_report(engine=stores.reader, report_ids=ids),
    lambda ids, technologies: [
        *_keys_of("Report")(ids, technologies),
        *(f"Technology:{technology.id}" for listed in technologies for technology in listed),
    ],
)


def document_of_report(paths: frozenset[str] | None = None) -> Source[int, dict[str, Any] | None]:
    """A report's document, whole or only its ``paths`` (see RecordFields.paths)."""
    return Source(
        "document of a report",
        Store.MONGODB,
        lambda stores, ids: documents_by_report(
            database=stores.documents, report_ids=ids, paths=paths
        ),
        _keys_of("Report"),
        () if paths is None else (paths,),
    )


DOCUMENT_OF_REPORT = document_of_report()
COUNTERS_OF_REPORT: Source[int, ReportCounters | None] = Source(
    "counters of a report",
    Store.REDIS,
    lambda stores, ids: restored(
        redis=stores.redis,
        engine=stores.reader,
        read=lambda: counters_by_report(redis=stores.redis, report_ids=ids),
    ),
    lambda ids, counters: [*_keys_of("Report")(ids, counters), *_keys_of(COUNTERS)(ids, counters)],
)


def report_pages(
    parent: ReportParent, sort: ReportSort, *, descending: bool, request: PageRequest
) -> Source[int, Page]:
    """A page of the reports of each parent: all parents asking for the same page of the
    same list share one windowed query."""
    ordering = reports.report_ordering(sort, descending=descending)
    return Source(
        "report pages",
        Store.POSTGRES,
        lambda stores, ids: reports.report_pages_by_parent(
            engine=stores.reader, parent=parent, parent_ids=ids, ordering=ordering, request=request
        ),
        _of_parents(parent, sort),
        (parent, sort, descending, request),
    )


def report_counts(parent: ReportParent) -> Source[int, int]:
    return Source(
        "report counts",
        Store.POSTGRES,
        lambda stores, ids: reports.count_reports_by_parent(
            engine=stores.reader, parent=parent, parent_ids=ids
        ),
        _of_parents(parent),
        (parent,),
    )


def author_pages_of_institution(request: PageRequest) -> Source[int, Page]:
    return Source(
        "author pages of an institution",
        Store.POSTGRES,
        lambda stores, ids: listings.author_pages_by_institution(
            engine=stores.reader, institution_ids=ids, request=request
        ),
        _of_list("Author"),
        (request,),
    )


AUTHOR_COUNTS_OF_INSTITUTION: Source[int, int] = Source(
    "author counts of an institution",
    Store.POSTGRES,
    lambda stores, ids: listings.count_authors_by_institution(
        engine=stores.reader, institution_ids=ids
    ),
    _of_list("Author"),
)


def listed_reports(
    criteria: ReportFilter,
    tagged_ids: Sequence[int] | None,
    sort: ReportSort,
    *,
    descending: bool,
    request: PageRequest,
    counted: bool = False,
) -> Read[Page]:
    """A page of the reports that match ``criteria`` (and are among ``tagged_ids``, when
    the tags were asked for); ``counted``, with how many match."""
    ordering = reports.report_ordering(sort, descending=descending)
    return Read(
        "reports",
        Store.POSTGRES,
        lambda stores: reports.report_page(
            engine=stores.reader,
            criteria=criteria,
            tagged_ids=tagged_ids,
            ordering=ordering,
            request=request,
            counted=counted,
        ),
        _of_filtered(criteria, sort),
    )


def counted_reports(criteria: ReportFilter, tagged_ids: Sequence[int] | None) -> Read[int]:
    return Read(
        "report count",
        Store.POSTGRES,
        lambda stores: reports.count_reports(
            engine=stores.reader, criteria=criteria, tagged_ids=tagged_ids
        ),
        _of_filtered(criteria),
    )


def tagged_report_ids(tags: Sequence[str]) -> Read[list[int]]:
    return Read(
        "reports tagged",
        Store.MONGODB,
        lambda stores: report_ids_tagged(database=stores.documents, tags=tags),
        _of_list("Report"),
    )


def top_reports(counter: Counter, limit: int) -> Read[list[int]]:
    return Read(
        "top reports",
        Store.REDIS,
        lambda stores: restored(
            redis=stores.redis,
            engine=stores.reader,
            read=lambda: top_report_ids(redis=stores.redis, counter=counter, limit=limit),
        ),
        lambda _: (LEADERBOARDS_TAG,),
    )


def listed_entities(table: Table, request: PageRequest, *, counted: bool = False) -> Read[Page]:
    """A page of authors, institutions or technologies, by name; ``counted``, with how many
    there are."""
    return Read(
        f"{table.name} listed",
        Store.POSTGRES,
        lambda stores: listings.entity_page(
            engine=stores.reader, table=table, request=request, counted=counted
        ),
        _of_list(TYPE_OF_TABLE[table.name]),
    )


def counted_entities(table: Table) -> Read[int]:
    return Read(
        f"{table.name} count",
        Store.POSTGRES,
        lambda stores: listings.count_entities(engine=stores.reader, table=table),
        _of_list(TYPE_OF_TABLE[table.name]),
    )


def every_row(table: Table) -> Read[list[Any]]:
    """A whole small table (the report types), by name."""
    return Read(
        f"every {table.name}",
        Store.POSTGRES,
        lambda stores: listings.all_by_name(engine=stores.reader, table=table),
        _of_list(TYPE_OF_TABLE[table.name]),
    )


@dataclass(frozen=True)
class RecordFields:
    """How the fields of an object type are read off the record its source fetches:
    declared once, beside the type. Its ``from_record`` builds the Strawberry object from
    it, and the planner projects the records with it directly, with no object between.

    Each field (by its Python name) is read as a record attribute (a string), or computed
    from the record (a function of it). ``paths`` names where in the stored record a
    computed field is read (a document's key, a record's field); an attribute is its own
    path. A source that can fetch parts of records (see ``Relation.narrow``, and
    planner/reading.py for a table's records) fetches only the paths of the fields
    selected, and the whole record when one of them has no path.
    """

    record: type[Any]
    fields: dict[str, str | Callable[[Any], Any]]
    paths: dict[str, str] = field(default_factory=dict)
    _constructors: dict[type[Any], Callable[[Any], Any]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def reader(self, name: str) -> Callable[[Any], Any]:
        source = self.fields[name]
        return attrgetter(source) if isinstance(source, str) else source

    def path_of(self, name: str) -> str | None:
        source = self.fields.get(name)
        return source if isinstance(source, str) else self.paths.get(name)

    def construct(self, cls: type[T], record: Any) -> T:
        """``cls``'s object of ``record``, by a constructor generated once: one call with
        every field read in place, as a hand-written one would."""
        constructor = self._constructors.get(cls)
        if constructor is None:
            constructor = self._constructors[cls] = self._generate(cls)
        built: T = constructor(record)
        return built

    def _generate(self, cls: type[Any]) -> Callable[[Any], Any]:
        namespace: dict[str, Any] = {"cls": cls}
        arguments = []
        for index, (name, source) in enumerate(self.fields.items()):
            if isinstance(source, str):
                arguments.append(f"{name}=record.{source}")
            else:
                namespace[f"f{index}"] = source
                arguments.append(f"{name}=f{index}(record)")
        source_code = f"def construct(record):\n    return cls({', '.join(arguments)})\n"
        exec(compile(source_code, f"<{cls.__name__} of a record>", "exec"), namespace)  # noqa: S102
        constructor: Callable[[Any], Any] = namespace["construct"]
        return constructor
