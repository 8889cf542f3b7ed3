"""``GET /runs``: the caller's project's runs that match a filter, sorted and paged; and
``GET /runs/compare``: one sensor's series of several runs on a common time axis. (This
router is included before the one of ``/runs/{run_id}``, which would take "compare".)"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from cloud.deps import DbSession, Viewer, takes_free_query
from cloud.schemas import Page, RunOut, RunStatus
from cloud.schemas_search import MAX_RUNS, Comparison
from cloud.services import run_compare, run_search
from cloud.services.run_search_terms import parse_sort, parse_terms
from common.wire import UtcDatetime

router = APIRouter(prefix="/api/v1", tags=["runs"])
#: Seconds since a run's start a window may name (about 31 years either way): any time a
#: bench records, and far from what a datetime can hold.
_T_LIMIT = 1e9
_T_SINCE = "readings from this many seconds after each run's start on"
_T_UNTIL = "readings before this many seconds after each run's start"


def _seconds(description: str) -> Any:
    """A window's bound in seconds since a run's start: finite, within the limit."""
    return Query(ge=-_T_LIMIT, le=_T_LIMIT, allow_inf_nan=False, description=description)


_GRAMMAR = """Runs of the caller's project matching every term (docs/search.md).

Besides the parameters below, the query string takes comparisons (`=`, `!=`, `<`, `<=`,
`>`, `>=`), percent-encoded or not:

- `param.NAME OP VALUE`: a number compares with number params, any other value (or one in
  double quotes) as text with text (and `true`/`false`) params;
- `metric.NAME.SUMMARY OP NUMBER`, SUMMARY one of `min`, `max`, `last`, `count`;
- `telemetry.SENSOR.SUMMARY OP NUMBER`, SUMMARY one of `min`, `max`, `mean`, `count`;
- `created_at`, `started_at`, `ended_at` with `<`, `<=`, `>`, `>=` and an RFC 3339 time.

A run without the param, metric or sensor matches no term on it. A malformed term is a 422
naming it. `sort` takes `created_at`, `started_at`, `ended_at` or any of those fields, with a
leading `-` for descending (default `-created_at`); runs without a value sort last."""


@router.get("/runs", description=_GRAMMAR)
@takes_free_query
def search_runs(
    request: Request,
    db: DbSession,
    caller: Viewer,
    experiment_id: Annotated[list[uuid.UUID] | None, Query(description="any of these")] = None,
    status: Annotated[list[RunStatus] | None, Query(description="any of these")] = None,
    tag: Annotated[list[str] | None, Query(description="all of these")] = None,
    sort: str = "-created_at",
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> Page[RunOut]:
    search = run_search.Search(
        terms=parse_terms(request.scope.get("query_string", b"")),
        sort=parse_sort(sort),
        experiment_ids=experiment_id or (),
        statuses=status or (),
        tags=tag or (),
    )
    rows, nxt = run_search.search(db, caller, search, limit, cursor)
    return Page(items=[RunOut.model_validate(r) for r in rows], next_cursor=nxt)


@router.get("/runs/compare")
def compare_runs(
    db: DbSession,
    caller: Viewer,
    run_id: Annotated[list[uuid.UUID], Query(min_length=1, max_length=MAX_RUNS)],
    sensor: Annotated[str, Query(min_length=1, max_length=200, description="a sensor's name")],
    max_points: Annotated[int, Query(ge=2, le=20_000)] = 1000,
    since: Annotated[UtcDatetime | None, Query(description="readings from then on")] = None,
    until: Annotated[UtcDatetime | None, Query(description="readings before then")] = None,
    t_since: Annotated[float | None, _seconds(_T_SINCE)] = None,
    t_until: Annotated[float | None, _seconds(_T_UNTIL)] = None,
) -> Comparison:
    """The sensor's chart series of each run (as ``GET /telemetry/series`` has it, peaks
    kept when downsampled), in the order asked, each point also at ``t``: seconds since the
    run's first capture session started, so that runs of different days overlay.

    A window (a chart zoomed in) is asked in either axis: ``since``/``until`` in time,
    ``t_since``/``t_until`` in seconds since each run's start; given both, a reading is
    in both. Each run's series then has ``max_points`` for the window alone."""
    window = run_compare.Window(since, until, t_since, t_until)
    return run_compare.compare(db, caller, run_id, sensor, max_points, window)
