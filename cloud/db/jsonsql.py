"""Typed reads of JSON columns that mean the same on PostgreSQL (JSONB) and SQLite (JSON text).

SQLAlchemy's ``column["key"].as_float()`` casts whatever is there: PostgreSQL raises on a text
value ("fast" is no float) and SQLite reads it as 0.0, so a search over runs whose ``params``
mix numbers and text would fail on one database and lie on the other. The expressions here
look at the JSON type first and give NULL for a value of another kind, which no comparison
matches. They are compiled per dialect here, so the services that use them have no dialect
branches of their own.

- :class:`JsonNumber` — the value at ``key`` if it is a JSON number, as a float.
- :class:`JsonText` — the value at ``key`` if it is a JSON string (or ``true``/``false``,
  spelled so), compared by code point on both databases (PostgreSQL: ``COLLATE "C"``, as
  SQLite's default), so that ordering does not depend on the server's locale.
- :class:`JsonArrayHas` — whether the JSON array column holds this string.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Boolean, ColumnElement, Float, String, case, func, literal, literal_column
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql._typing import _ColumnExpressionArgument
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement


class _KeyFunction(FunctionElement[Any]):
    """``(json column, key)``: the key is a plain Python string, bound as a parameter."""

    inherit_cache = True

    def __init__(self, column: _ColumnExpressionArgument[Any], key: str) -> None:
        super().__init__(column, literal(key, String()))


class JsonNumber(_KeyFunction):
    type = Float()
    name = "json_number"
    inherit_cache = True


class JsonText(_KeyFunction):
    type = String()
    name = "json_text"
    inherit_cache = True


class JsonArrayHas(_KeyFunction):
    type = Boolean()
    name = "json_array_has"
    inherit_cache = True


def _sqlite_path(key: ColumnElement[Any]) -> ColumnElement[Any]:
    # The path syntax SQLAlchemy's own JSON index uses on SQLite, built in SQL from the key's
    # own parameter; a key with '"' has no spelling in it (the search refuses such keys).
    return literal_column("'$.\"'").concat(key).concat(literal_column("'\"'"))


def _sql(word: str) -> ColumnElement[Any]:
    # Constants as SQL text, not parameters: parameters made while compiling are not in the
    # statement's cache key.
    return literal_column(f"'{word}'", String())


def _args(element: _KeyFunction) -> tuple[ColumnElement[Any], ColumnElement[Any]]:
    # The key's own bound parameter, reused as is: it is part of the statement's cache key,
    # so a cached statement is given each query's key (a parameter made here would not be).
    column, key = list(element.clauses)
    return column, key


@compiles(JsonNumber, "postgresql")
def _number_pg(element: JsonNumber, compiler: SQLCompiler, **kw: Any) -> str:
    column, key = _args(element)
    value = column.op("->")(key)
    text = column.op("->>")(key)
    expr = case((func.jsonb_typeof(value) == _sql("number"), text.cast(Float())))
    return compiler.process(expr, **kw)


@compiles(JsonNumber, "sqlite")
def _number_sqlite(element: JsonNumber, compiler: SQLCompiler, **kw: Any) -> str:
    column, key = _args(element)
    path = _sqlite_path(key)
    kind = func.json_type(column, path)
    expr = case((kind.in_([_sql("integer"), _sql("real")]), func.json_extract(column, path)))
    return compiler.process(expr, **kw)


@compiles(JsonText, "postgresql")
def _text_pg(element: JsonText, compiler: SQLCompiler, **kw: Any) -> str:
    column, key = _args(element)
    value = column.op("->")(key)
    text = column.op("->>")(key)
    expr = case((func.jsonb_typeof(value).in_([_sql("string"), _sql("boolean")]), text))
    return f'({compiler.process(expr, **kw)}) COLLATE "C"'


@compiles(JsonText, "sqlite")
def _text_sqlite(element: JsonText, compiler: SQLCompiler, **kw: Any) -> str:
    column, key = _args(element)
    path = _sqlite_path(key)
    kind = func.json_type(column, path)
    expr = case(
        (kind == _sql("text"), func.json_extract(column, path)),
        (kind.in_([_sql("true"), _sql("false")]), kind),
    )
    return compiler.process(expr, **kw)


@compiles(JsonArrayHas, "postgresql")
def _has_pg(element: JsonArrayHas, compiler: SQLCompiler, **kw: Any) -> str:
    column, item = _args(element)
    expr = column.op("@>")(func.jsonb_build_array(item))
    return compiler.process(expr, **kw)


@compiles(JsonArrayHas, "sqlite")
def _has_sqlite(element: JsonArrayHas, compiler: SQLCompiler, **kw: Any) -> str:
    column, item = _args(element)
    return (
        f"EXISTS (SELECT 1 FROM json_each({compiler.process(column, **kw)}) AS j"
        f" WHERE j.type = 'text' AND j.value = {compiler.process(item, **kw)})"
    )
