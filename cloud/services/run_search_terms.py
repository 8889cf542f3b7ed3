"""The run search grammar (docs/search.md), read from the raw query string.

A comparison such as ``metric.loss.min<0.1`` has no ``=``, and ``param.x>=5`` would be read
by a form parser as the key ``param.x>`` with the value ``5``: so each ``&``-separated part
is percent-decoded whole and split at its first operator outside double quotes.

A term is a *field*, an operator and a value::

    param.NAME          OP  number | text | "quoted text"
    metric.NAME.SUM     OP  number          SUM: min, max, last, count
    telemetry.SENSOR.SUM OP number          SUM: min, max, mean, count
    created_at | started_at | ended_at  < <= > >=  RFC 3339 time with a zone

A name with an operator character or a dot where it would be ambiguous is written in double
quotes (``metric."a<b".min<1``). Anything malformed is an :class:`InvalidInput` naming the
term as written, with what is wrong.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from urllib.parse import unquote_plus

from cloud.errors import FieldError, InvalidInput
from cloud.schemas import normalize_name

Op = Literal["=", "!=", "<", "<=", ">", ">="]
Kind = Literal["created_at", "started_at", "ended_at", "param", "metric", "telemetry"]

METRIC_SUMMARIES = ("min", "max", "last", "count")
TELEMETRY_SUMMARIES = ("min", "max", "mean", "count")
TIMES = ("created_at", "started_at", "ended_at")
#: Keys the route reads itself (``key=value`` only).
PLAIN = ("experiment_id", "status", "tag", "sort", "limit", "cursor")
#: Most comparison terms one search takes: each is a join or a subquery of the one query.
MAX_TERMS = 30
_OP_CHARS = "=!<>"
_NUMBER = re.compile(r"-?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_SORTS = (
    "created_at, started_at, ended_at, param.NAME, metric.NAME.SUMMARY or "
    "telemetry.SENSOR.SUMMARY, with a leading - for descending"
)


@dataclass(frozen=True)
class Field:
    """What a term compares or a sort orders by: ``name`` is the param, metric or sensor
    name (empty for the times), ``summary`` the metric's or sensor's summary."""

    kind: Kind
    name: str = ""
    summary: str = ""


@dataclass(frozen=True)
class Term:
    field: Field
    op: Op
    #: A float compares as a number, a str as text, a datetime as a time.
    value: float | str | datetime
    #: The term as written (percent-decoded): what a 422 about it names.
    source: str = ""


@dataclass(frozen=True)
class Sort:
    field: Field
    descending: bool


DEFAULT_SORT = Sort(Field("created_at"), descending=True)


class TermError(ValueError):
    """What is wrong with one term (the reason of the 422)."""


def parse_terms(raw_query: bytes) -> list[Term]:
    """Every comparison term of a raw (percent-encoded) query string; the plain keys the
    route reads (:data:`PLAIN`) are skipped when written ``key=value``."""
    try:
        query = raw_query.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(
            "the query string is not UTF-8",
            errors=[FieldError("query", "not UTF-8")],
        ) from None
    terms: list[Term] = []
    errors: list[FieldError] = []
    for part in query.split("&"):
        if not part:
            continue
        try:
            text = unquote_plus(part, errors="strict")
        except UnicodeDecodeError:
            errors.append(FieldError(part, "not UTF-8 once percent-decoded"))
            continue
        if _plain(part):
            continue
        try:
            term = _term(text)
        except TermError as exc:
            errors.append(FieldError(text, str(exc)))
            continue
        terms.append(term)
    if errors:
        detail = "; ".join(f"{e.field}: {e.reason}" for e in errors)
        raise InvalidInput(detail, errors=errors)
    if len(terms) > MAX_TERMS:
        reason = f"{len(terms)} comparisons; a search takes at most {MAX_TERMS}"
        raise InvalidInput(reason, errors=[FieldError("query", reason)])
    return terms


def _plain(part: str) -> bool:
    """Whether ``part`` is one of the route's own parameters, which the framework reads: it
    splits at the first literal ``=``, so that is where this looks too."""
    key, eq, _ = part.partition("=")
    try:
        return bool(eq) and unquote_plus(key, errors="strict") in PLAIN
    except UnicodeDecodeError:
        return False


def parse_sort(text: str) -> Sort:
    """``created_at``, ``-metric.loss.min`` ...; an :class:`InvalidInput` on ``sort``."""
    descending = text.startswith("-")
    body = text[1:] if descending else text
    try:
        if _split(body) is not None:
            raise TermError("a sort has no operator")
        return Sort(_field(body), descending)
    except TermError as exc:
        reason = f"{exc}; sort by {_SORTS}"
        raise InvalidInput(f"sort={text}: {reason}", errors=[FieldError("sort", reason)]) from None


def _term(text: str) -> Term:
    split = _split(text)
    if split is None:
        raise TermError("no comparison; write it as name, operator, value (=, !=, <, <=, >, >=)")
    left, op, right = split
    if left in PLAIN:
        if op != "=":
            raise TermError(f"{left} takes only =")
        # Reached only when the = was percent-encoded: the framework would not see it.
        raise TermError(f"write the = after {left} as it is, not percent-encoded")
    field = _field(left)
    if right == "":
        raise TermError(f"no value after {op}")
    return Term(field, op, _value(field, op, right), text)


def _split(text: str) -> tuple[str, Op, str] | None:
    """``text`` cut at its first operator outside double quotes; None when it has none."""
    quoted = False
    for i, ch in enumerate(text):
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch in _OP_CHARS:
            two = text[i : i + 2]
            if two in ("!=", "<=", ">="):
                op, width = two, 2
            elif ch == "!":
                raise TermError("! is only part of !=")
            else:
                op, width = ch, 1
            rest = text[i + width :]
            if op == "=" and rest.startswith("="):
                raise TermError("write = once")
            return text[:i], op, rest  # type: ignore[return-value]
    if quoted:
        raise TermError("a quoted name has no closing quote")
    return None


def _field(left: str) -> Field:
    if left in TIMES:
        return Field(left)  # type: ignore[arg-type]
    head, dot, rest = left.partition(".")
    if head == "param" and dot:
        name, _ = _name(rest, whole=True)
        return Field("param", name)
    if head in ("metric", "telemetry") and dot:
        summaries = METRIC_SUMMARIES if head == "metric" else TELEMETRY_SUMMARIES
        name, summary = _name(rest, whole=False)
        if summary == "":
            raise TermError(
                f"name the summary: {head}.NAME.SUMMARY, SUMMARY one of {', '.join(summaries)}"
            )
        if summary not in summaries:
            raise TermError(f"{summary} is not a summary; use {', '.join(summaries)}")
        if head == "telemetry":
            name = normalize_name(name)  # as sensor names are stored
        return Field(head, name, summary)  # type: ignore[arg-type]
    if left in PLAIN:
        raise TermError(f"{left} takes only =")
    raise TermError(
        "not a filter; use param.NAME, metric.NAME.SUMMARY, telemetry.SENSOR.SUMMARY, "
        "created_at, started_at, ended_at, experiment_id, status, tag"
    )


def _name(rest: str, *, whole: bool) -> tuple[str, str]:
    """(name, summary) of what follows ``param.``/``metric.``/``telemetry.``; ``whole``: the
    name is all of it (a param), else the last dotted part is the summary."""
    if rest.startswith('"'):
        end = rest.find('"', 1)
        if end < 0:
            raise TermError("a quoted name has no closing quote")
        name, tail = rest[1:end], rest[end + 1 :]
        if whole and tail:
            raise TermError(f"unexpected {tail!r} after the quoted name")
        if not whole and tail and not tail.startswith("."):
            raise TermError(f"unexpected {tail!r} after the quoted name")
        summary = tail[1:]
    elif whole:
        name, summary = rest, ""
    else:
        name, _, summary = rest.rpartition(".")
        if not name:
            name, summary = rest, ""
    if name == "":
        raise TermError("the name is empty")
    if '"' in name:
        raise TermError('a name with " cannot be searched')
    return name, summary


def _value(field: Field, op: Op, right: str) -> float | str | datetime:
    if field.kind in TIMES:
        if op in ("=", "!="):
            raise TermError("compare times with <, <=, > or >=")
        return _time(right)
    if field.kind == "param" and len(right) >= 2 and right[0] == right[-1] == '"':
        return right[1:-1]
    if _NUMBER.fullmatch(right):
        number = float(right)
        if not math.isfinite(number):
            raise TermError(f"{right} is too large a number")
        return number
    if field.kind == "param":
        return right
    raise TermError(f"{right!r} is not a number")


def _time(right: str) -> datetime:
    hint = " (a '+' in a URL is a space: write it %2B)" if " " in right else ""
    try:
        parsed = datetime.fromisoformat(right)
    except ValueError:
        raise TermError(
            f"{right!r} is not an RFC 3339 time such as 2026-12-05T10:00:00Z{hint}"
        ) from None
    if parsed.tzinfo is None:
        raise TermError(f"{right!r} has no zone; end it with Z or an offset such as +01:00{hint}")
    return parsed
