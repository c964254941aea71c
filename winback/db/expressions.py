"""SQL building blocks that render differently on SQLite and PostgreSQL but mean the same."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Boolean, ColumnElement, Insert, Table, any_, bindparam
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import QueryableAttribute
from sqlalchemy.sql import coercions, roles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.visitors import InternalTraversal


def insert_or_ignore(dialect_name: str, table: Table, conflict_columns: list[str] | None = None) -> Insert:
    """INSERT … ON CONFLICT [(columns)] DO NOTHING on SQLite and PostgreSQL."""
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing(index_elements=conflict_columns)


class OneOf(ColumnElement[bool]):
    """`column IN (values)`; on PostgreSQL `column = ANY(:array)`.

    One parameter holds all the values, so the statement's text is the same whatever their number:
    it is compiled once and cached by SQLAlchemy, and psycopg (which only caches statements under
    4 KB) sees a short statement. Both parameters are part of the construct's cache key (without
    their values), so a cached statement always binds the values of the call at hand.
    """

    type = Boolean()
    _is_implicitly_boolean = True  # a plain `… IN (…)` in WHERE, never `(… IN (…)) = 1`
    inherit_cache = True
    _traverse_internals = [
        ("column", InternalTraversal.dp_clauseelement),
        ("expanding", InternalTraversal.dp_clauseelement),
        ("array", InternalTraversal.dp_clauseelement),
    ]

    def __init__(self, column: ColumnElement[Any] | QueryableAttribute[Any], values: Iterable[Any]) -> None:
        self.column = coercions.expect(roles.ExpressionElementRole, column)
        listed = list(values)
        self.expanding = bindparam(None, listed, expanding=True, type_=self.column.type)
        self.array = bindparam(None, listed, type_=postgresql.ARRAY(self.column.type))


@compiles(OneOf)
def _one_of_in(element: OneOf, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.column.in_(element.expanding), **kw)


@compiles(OneOf, "postgresql")
def _one_of_any(element: OneOf, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.column == any_(element.array), **kw)


def one_of(column: ColumnElement[Any] | QueryableAttribute[Any], values: Iterable[Any]) -> ColumnElement[bool]:
    return OneOf(column, values)
