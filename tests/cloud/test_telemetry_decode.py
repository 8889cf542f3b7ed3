"""The fast telemetry decoder (msgspec) against the wire model (pydantic), which is the contract.

Whatever the fast path accepts, the wire model must accept with the same values; whatever it
declines goes to the wire model, so errors stay as documented. Bodies are generated from a
grammar of nearly-valid pieces, because the interesting cases are the edges: offsets,
sub-microsecond digits, lax numbers, out-of-range years, unknown fields.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from cloud.services.telemetry import StoredRows
from cloud.services.telemetry_batch import IncomingBatch, decode_fast
from common.wire import TelemetryBatch

IDS = [str(uuid.UUID(int=k)) for k in (1, 2, 3)]


def _mostly(good: st.SearchStrategy[str], odd: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Nine in ten well-formed, so that whole batches often get through and can be compared."""
    return st.integers(0, 9).flatmap(lambda k: good if k else odd)


_offsets = _mostly(
    st.sampled_from(["Z", "+00:00", "+01:00", "-09:30"]),
    st.sampled_from(["z", "-00:00", "+14:00", "+24:00", ""]),
)
_fraction = st.sampled_from([0, 0, 1, 3, 6, 6, 7, 9]).flatmap(
    lambda n: st.just("") if n == 0 else st.text("0123456789", min_size=n, max_size=n)
)


@st.composite
def _timestamp(draw: st.DrawFn) -> str:
    dt = draw(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)))
    sep = draw(st.sampled_from(["T", "T", "T", "t", " "]))
    text = f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}{sep}{dt.hour:02d}:{dt.minute:02d}"
    if draw(st.integers(0, 9)):
        text += f":{dt.second:02d}"  # else no seconds, which only the wire model reads
    frac = draw(_fraction)
    return text + ("." + frac if frac else "") + draw(_offsets)


_timestamps = _mostly(
    _timestamp().map(json.dumps),
    st.one_of(
        st.integers(-(2**40), 2**40).map(str),  # the wire model reads numbers as unix time
        st.sampled_from(
            ['"2026-01-01"', '"2026-02-30T00:00:00Z"', '"2026-01-01T23:59:60Z"', "null"]
        ),
        st.text(max_size=12).map(json.dumps),
    ),
)
_numbers = _mostly(
    st.one_of(
        st.floats(allow_nan=False, allow_infinity=False).map(repr),
        st.integers(-(10**30), 10**30).map(str),
        st.from_regex(r"-?[0-9]{1,3}(\.[0-9]{1,20})?([eE][+-]?[0-9]{1,3})?", fullmatch=True),
    ),
    st.sampled_from(["1e400", "-1e308", "1e-400", "NaN", "Infinity", "true", "null", '"2.5"']),
)
_metas = st.one_of(
    st.none(),
    st.none(),
    st.dictionaries(st.text(max_size=5), _numbers, max_size=3).map(
        lambda d: "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in d.items()) + "}"
    ),
    st.sampled_from(["[]", '"x"', '{"a":{"b":[1,2e400]}}', '{"a":null}']),
)


@st.composite
def _reading(draw: st.DrawFn) -> str:
    parts = [f'"timestamp":{draw(_timestamps)}', f'"raw_value":{draw(_numbers)}']
    meta = draw(_metas)
    if meta is not None:
        parts.append(f'"meta":{meta}')
    if draw(st.integers(0, 9)) == 0:
        parts.append('"extra":1')
    return "{" + ",".join(draw(st.permutations(parts))) + "}"


@st.composite
def _body(draw: st.DrawFn) -> bytes:
    odd_ids = [(i.upper(), i.replace("-", ""), "{" + i + "}") for i in IDS]
    ids = [
        draw(_mostly(st.just(i), st.sampled_from(odd))) for i, odd in zip(IDS, odd_ids, strict=True)
    ]
    readings = draw(st.lists(_reading(), min_size=int(draw(st.integers(0, 9)) > 0), max_size=3))
    fields = [
        f'"sensor_id":"{ids[0]}"',
        f'"run_id":"{ids[1]}"',
        f'"capture_session_id":"{ids[2]}"',
        f'"readings":[{",".join(readings)}]',
    ]
    return ("{" + ",".join(draw(st.permutations(fields))) + "}").encode()


@settings(max_examples=600, deadline=None)
@given(_body())
def test_what_the_fast_path_takes_the_wire_model_takes_with_the_same_values(body: bytes) -> None:
    fast = decode_fast(body)
    if fast is None:
        return  # the wire model decides, as it always did
    try:
        model = TelemetryBatch.model_validate_json(body)
    except ValidationError as exc:
        raise AssertionError(f"fast path accepted what the wire model refuses: {exc}") from None
    slow = IncomingBatch.from_model(model)
    assert fast == slow
    assert [t.utcoffset() for t in fast.timestamps] == [UTC.utcoffset(None)] * len(fast)
    assert fast.fingerprint() == slow.fingerprint()


def _one(ts: str, raw: str, order: str = "tv") -> bytes:
    pieces = {"t": f'"timestamp":"{ts}"', "v": f'"raw_value":{raw}'}
    reading = "{" + ",".join(pieces[c] for c in order) + "}"
    return (
        f'{{"sensor_id":"{IDS[0]}","run_id":"{IDS[1]}","capture_session_id":"{IDS[2]}",'
        f'"readings":[{reading}]}}'
    ).encode()


def test_the_fast_path_takes_what_the_edge_sends() -> None:
    fast = decode_fast(_one("2026-11-26T10:00:00.123456+00:00", "21.5"))
    assert fast is not None
    assert fast.timestamps == [datetime(2026, 11, 26, 10, 0, 0, 123456, tzinfo=UTC)]
    assert fast.raw_values == [21.5]


def test_sub_microsecond_digits_are_left_to_the_wire_model() -> None:
    # msgspec would round .1234567 up; pydantic truncates. Either path must store the same.
    assert decode_fast(_one("2026-01-01T00:00:00.1234567Z", "1")) is None


def test_a_timestamp_before_year_one_in_utc_is_left_to_the_wire_model() -> None:
    assert decode_fast(_one("0001-01-01T00:00:00+01:00", "1")) is None


def test_the_fingerprint_is_of_the_meaning_not_the_spelling() -> None:
    a = decode_fast(_one("2026-01-01T01:00:00+01:00", "20", "tv"))
    b = decode_fast(_one("2026-01-01T00:00:00Z", "20.0", "vt"))
    c = decode_fast(_one("2026-01-01T00:00:00Z", "20.5"))
    assert a is not None and b is not None and c is not None
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


def test_stored_rows_are_made_on_demand_and_behave_as_a_sequence() -> None:
    ts = [datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)]
    rows = StoredRows(
        ("p", "s", "r", "c", 7, "v1", False), ts, [1.0, 2.0], [10.0, 20.0], [None, {}]
    )
    assert len(rows) == 2 and bool(rows)
    assert rows[-1] == rows[1] == list(rows)[1] == rows[1:][0]
    assert rows[0] == {
        "project_id": "p",
        "sensor_id": "s",
        "run_id": "r",
        "capture_session_id": "c",
        "batch_id": 7,
        "ts": ts[0],
        "raw_value": 1.0,
        "value": 10.0,
        "profile_version": "v1",
        "late": False,
        "meta": None,
    }
    try:
        rows[2]
    except IndexError:
        pass
    else:
        raise AssertionError("rows[2] of two rows")
