"""SQL building blocks that render differently on SQLite and PostgreSQL but mean the same."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Boolean, ColumnElement, Insert, Table, any_, bindparam
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import QueryableAttribute
from sqlalchemy.sql.compiler import SQLCompiler


def insert_or_ignore(dialect_name: str, table: Table, conflict_columns: list[str] | None = None) -> Insert:
    """INSERT … ON CONFLICT [(columns)] DO NOTHING on SQLite and PostgreSQL."""
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing(index_elements=conflict_columns)


class OneOf(ColumnElement[bool]):
    """`column IN (values)`; on PostgreSQL `column = ANY(:array)`: one parameter instead of
    hundreds, so the statement stays short (psycopg only caches statements under 4 KB) and its
    text is the same for every batch."""

    type = Boolean()
    inherit_cache = False  # the values are not part of a cache key

    def __init__(self, column: ColumnElement[Any] | QueryableAttribute[Any], values: Iterable[Any]) -> None:
        self.column = column
        self.values = list(values)


@compiles(OneOf)
def _one_of_in(element: OneOf, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.column.in_(element.values), **kw)


@compiles(OneOf, "postgresql")
def _one_of_any(element: OneOf, compiler: SQLCompiler, **kw: Any) -> str:
    array = bindparam(None, element.values, type_=postgresql.ARRAY(element.column.type))
    return compiler.process(element.column == any_(array), **kw)


def one_of(
    column: ColumnElement[Any] | QueryableAttribute[Any], values: Iterable[Any]
) -> ColumnElement[bool]:
    return OneOf(column, values)
