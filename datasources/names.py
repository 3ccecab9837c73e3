"""An author's full name, and the given and family names it is made of.

A full name splits at its first space: the given name before, the family name after
("Jean de la Fontaine": "Jean", "de la Fontaine"); a single word is a family name with no
given name. Revision 0007 splits the names stored before it in the same way.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, case


def split_full_name(name: str) -> tuple[str, str]:
    given, _, family = name.strip().partition(" ")
    return (given, family.strip()) if family.strip() else ("", given)


def full_name(given: str, family: str) -> str:
    return f"{given} {family}" if given else family


def full_name_of(given: Any, family: Any) -> ColumnElement[str]:
    """``full_name`` in SQL, of columns or values."""
    return case((given == "", family), else_=given + " " + family)
