"""An author's full name, and the given and family names it is made of.

A full name splits at its first space: the given name before, the family name after
("Jean de la Fontaine": "Jean", "de la Fontaine"); a single word is a family name with no
given name. Put together again, the given name, a space and the family name make the full
name; the family name alone when there is no given name. Revisions 0007 and 0008 split
and join names in the same way.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, case


def split_full_name(name: str) -> tuple[str, str]:
    given, _, family = name.strip().partition(" ")
    return (given, family.strip()) if family.strip() else ("", given)


def full_name_of(given: Any, family: Any) -> ColumnElement[str]:
    """The full name in SQL, of the two names' columns."""
    return case((given == "", family), else_=given + " " + family)
