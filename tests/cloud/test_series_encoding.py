"""The chart's answer is built and encoded by msgspec (cloud.services.telemetry_query) while
pydantic models document it (cloud.schemas): the two must describe the same JSON."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from cloud import schemas
from cloud.services import telemetry_query as q


def test_the_encoded_series_is_the_documented_one() -> None:
    at = datetime(2026, 12, 5, 1, 2, 3, 5, tzinfo=UTC)
    points = [
        q.ChartPoint(at, 1.5, 1.0, 2.0, 3),
        q.ChartPoint(at + timedelta(seconds=1), 2.0, 2.0, 2.0, 1),
    ]
    series = q.Series(uuid.uuid4(), "°C", points, 4, True, "v2")
    raw = q.encode_series(series)
    documented = schemas.TelemetrySeries.model_validate_json(raw)
    assert documented.model_dump_json().encode() == raw
    assert set(schemas.TelemetrySeries.model_fields) == set(q.Series.__struct_fields__)
    assert set(schemas.ChartPoint.model_fields) == set(q.ChartPoint.__struct_fields__)


@given(
    first=st.integers(0, 10**15),
    span=st.integers(0, 10**12),
    max_points=st.integers(2, 3000),
    picks=st.sets(st.integers(0, 10**6), max_size=50),
)
def test_middles_are_each_buckets_middle(
    first: int, span: int, max_points: int, picks: set[int]
) -> None:
    grid = q.Grid.choose(first, first + span, max_points)
    ks = sorted({0, grid.buckets - 1} | {p % grid.buckets for p in picks})
    assert grid.middles(ks) == [grid.middle(k) for k in ks]
