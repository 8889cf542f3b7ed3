"""cloud.utctime: the live stream's timestamps are exactly ``datetime.isoformat()``'s."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from cloud.utctime import EPOCH, US, isoformat_many, micros

# Years 1..9999, the whole range of datetime.
LOW, HIGH = micros(datetime(1, 1, 1, tzinfo=UTC)), micros(datetime(9999, 12, 31, tzinfo=UTC))


@given(st.lists(st.integers(LOW, HIGH), max_size=50))
def test_isoformat_many_is_isoformat(stamps: list[int]) -> None:
    assert isoformat_many(stamps) == [(EPOCH + u * US).isoformat() for u in stamps]


def test_a_batch_sharing_seconds_and_whole_seconds() -> None:
    t = datetime(2026, 11, 26, 13, 0, 59, 999_000, tzinfo=UTC)
    stamps = [micros(t + timedelta(microseconds=250 * i)) for i in range(9)]
    assert isoformat_many(stamps) == [(EPOCH + u * US).isoformat() for u in stamps]
    assert isoformat_many(stamps)[4] == "2026-11-26T13:01:00+00:00"  # no fraction when zero
    assert micros(EPOCH) == 0 and micros(EPOCH - US) == -1
