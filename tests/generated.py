"""Documents generated from the live schema, the same ones on every run."""

from __future__ import annotations

import fcntl
import hashlib
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import graphql
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis_graphql import nodes

try:  # Hypothesis's own modules, where it reads local constants (see _without_local_constants)
    from hypothesis.internal.conjecture import providers
    from hypothesis.internal.constants_ast import Constants
except ImportError:  # a Hypothesis that has moved or dropped them
    providers = None  # type: ignore[assignment]

# The schema's own scalars: valid literals for them, so valid documents reach the resolvers.
CUSTOM_SCALARS: dict[str, st.SearchStrategy[graphql.ValueNode]] = {
    "Date": st.dates().map(nodes.String),
    "DateTime": st.datetimes().map(lambda moment: nodes.String(moment.isoformat())),
    "JSON": st.lists(st.integers().map(nodes.Int) | st.text().map(nodes.String), max_size=3).map(
        lambda values: nodes.Object(
            [
                graphql.ObjectFieldNode(name=graphql.NameNode(value=f"k{index}"), value=value)
                for index, value in enumerate(values)
            ]
        )
    ),
}


# Documents drawn before, one file for each caller's recipe, kept with the code: a fresh
# checkout, and continuous integration, read them instead of drawing them again, which
# cost a whole run about a sixth of its time, and every run sends the same documents
# whatever Hypothesis release is installed.
CORPUS = Path(__file__).parent / "drawn"


def draw(
    strategy: st.SearchStrategy[str], count: int, *, recipe: str, schema: str, caller: str
) -> list[str]:
    """``count`` examples of ``strategy``, the same ones on every run: read from the
    CORPUS file of the ``caller``'s (a test module's path) ``recipe``, or drawn afresh and
    written there when that file was drawn for another schema, count or version of this
    module. Strategies do not show their arguments, so the recipe is what names one of a
    caller's strategies apart from its others: a change to how a caller builds a strategy
    must change its recipe.
    """
    key = hashlib.sha256(
        "\0".join([recipe, schema, str(count), Path(__file__).read_text()]).encode()
    ).hexdigest()
    kept = CORPUS / f"{Path(caller).stem}--{re.sub(r'[^a-z0-9]+', '-', recipe.lower())}.json"
    # Test processes ask for the same recipe side by side: one draws while the others wait
    # for its file, instead of each drawing the same documents again.
    with kept.with_suffix(".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            corpus = json.loads(kept.read_text())
        except (OSError, ValueError):
            corpus = {}
        if corpus.get("key") != key:
            corpus = {"key": key, "documents": _drawn(strategy, count)}
            written = kept.with_suffix(".tmp")
            # A document to a line, so that a change of the corpus reads as one.
            written.write_text(json.dumps(corpus, indent=0) + "\n")
            written.replace(kept)
    documents: list[str] = corpus["documents"]
    return documents


def _drawn(strategy: st.SearchStrategy[str], count: int) -> list[str]:
    """``count`` examples of ``strategy``, the same ones on every run.

    A ``@given`` run with a derandomized engine and no example database is Hypothesis's
    supported way to draw many examples reproducibly; ``strategy.example()`` is for
    interactive use: it warns (an error under this suite's warning filter), draws from an
    unseeded random source and caches a small batch, so runs would differ.
    """
    drawn: list[str] = []

    @hypothesis_settings(
        max_examples=count,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        # Generated documents are large by nature; no check would find a fault in them.
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
            HealthCheck.large_base_example,
        ],
    )
    @given(strategy)
    def collect(document: str) -> None:
        drawn.append(document)

    with _without_local_constants():
        collect()
    return drawn


@contextmanager
def _without_local_constants() -> Iterator[None]:
    """Hypothesis mixes into what it draws the constants written in the project's modules
    that it finds loaded: which modules a test process happened to import before drawing,
    and every change to the code, would change what a key draws, and a failure CI drew
    could not be drawn again from a checkout. Drawn with none of them, and with no values
    computed from them in Hypothesis's cache, a key draws the same documents in any
    process."""
    found = getattr(providers, "_get_local_constants", None)
    if providers is None or found is None:  # nothing of the kind to set aside
        yield
        return
    empty = Constants()
    providers.CONSTANTS_CACHE.cache.clear()
    providers._get_local_constants = lambda *_: empty
    try:
        yield
    finally:
        providers._get_local_constants = found
        providers.CONSTANTS_CACHE.cache.clear()
