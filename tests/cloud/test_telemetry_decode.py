"""The reading contract (common.reading, msgspec) against its pydantic twin (common.wire),
which the OpenAPI document shows and which words every refusal.

The two have the same fields; whatever decode() accepts, the twin accepts with the same values;
whatever decode() declines goes to the twin, so errors stay as documented. Bodies are
generated from a grammar of nearly-valid pieces, because the interesting cases are the edges:
offsets, sub-microsecond digits, lax numbers, out-of-range years, unknown fields, metas.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from common import reading
from common.reading import MAX_META_DEPTH, WireBatch, WireReading, decode, meta_text
from common.wire import Reading, TelemetryBatch, read_batch

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
    st.sampled_from(
        [
            "[]",
            '"x"',
            '{"a":{"b":[1,2e400]}}',
            '{"a":null}',
            '{"s":"\\ud800"}',
            '{"d":' + "[" * MAX_META_DEPTH + "]" * MAX_META_DEPTH + "}",
            '{"d":' + "[" * (MAX_META_DEPTH - 1) + "]" * (MAX_META_DEPTH - 1) + "}",
        ]
    ),
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
def test_what_decode_takes_the_pydantic_twin_takes_with_the_same_values(body: bytes) -> None:
    fast = decode(body)
    if fast is None:
        return  # the twin decides, as it always did
    try:
        model = TelemetryBatch.model_validate_json(body)
    except ValidationError as exc:
        raise AssertionError(f"decode accepted what the twin refuses: {exc}") from None
    slow = model.columns()
    assert fast == slow == read_batch(body)
    assert [t.utcoffset() for t in fast.timestamps] == [UTC.utcoffset(None)] * len(fast)
    assert fast.fingerprint() == slow.fingerprint()


def test_the_pydantic_twin_has_the_contract_s_fields() -> None:
    for struct, model in ((WireBatch, TelemetryBatch), (WireReading, Reading)):
        fields = {f.name: f.required for f in msgspec.structs.fields(struct)}
        assert fields == {n: f.is_required() for n, f in model.model_fields.items()}
        assert (
            model.model_config.get("extra") == "forbid"
            and struct.__struct_config__.forbid_unknown_fields
        )


def test_meta_is_checked_alike_by_decode_the_twin_and_the_edge() -> None:
    deep: dict[str, object] = {"d": []}
    inner = deep["d"]
    for _ in range(MAX_META_DEPTH):
        assert isinstance(inner, list)
        inner.append([])
        inner = inner[0]
    for meta, problem in [
        ({"x": float("nan")}, "NaN"),
        ({"x": "\ud800"}, "lone surrogate"),
        (deep, f"nested deeper than {MAX_META_DEPTH} levels"),
    ]:
        found = reading.meta_problem(meta)
        assert found is not None and problem in found
        try:
            meta_text(meta)
        except ValueError as exc:
            assert str(exc) == f"meta: {found}"
        else:
            raise AssertionError(f"the edge would send {meta!r}")
        try:
            Reading(timestamp="2026-01-01T00:00:00Z", raw_value=1.0, meta=meta)  # type: ignore[arg-type]
        except ValidationError as exc:
            assert found in str(exc)
        else:
            raise AssertionError(f"the twin accepts {meta!r}")
    assert reading.meta_problem({"ok": [1, {"a": "é"}]}) is None


def _one(ts: str, raw: str, order: str = "tv") -> bytes:
    pieces = {"t": f'"timestamp":"{ts}"', "v": f'"raw_value":{raw}'}
    reading = "{" + ",".join(pieces[c] for c in order) + "}"
    return (
        f'{{"sensor_id":"{IDS[0]}","run_id":"{IDS[1]}","capture_session_id":"{IDS[2]}",'
        f'"readings":[{reading}]}}'
    ).encode()


def test_the_fast_path_takes_what_the_edge_sends() -> None:
    fast = decode(_one("2026-11-26T10:00:00.123456+00:00", "21.5"))
    assert fast is not None
    assert fast.timestamps == [datetime(2026, 11, 26, 10, 0, 0, 123456, tzinfo=UTC)]
    assert fast.raw_values == [21.5]


def test_sub_microsecond_digits_are_left_to_the_wire_model() -> None:
    # msgspec would round .1234567 up; pydantic truncates. Either path must store the same.
    assert decode(_one("2026-01-01T00:00:00.1234567Z", "1")) is None


def test_a_timestamp_before_year_one_in_utc_is_left_to_the_wire_model() -> None:
    assert decode(_one("0001-01-01T00:00:00+01:00", "1")) is None


def test_the_fingerprint_is_of_the_meaning_not_the_spelling() -> None:
    a = decode(_one("2026-01-01T01:00:00+01:00", "20", "tv"))
    b = decode(_one("2026-01-01T00:00:00Z", "20.0", "vt"))
    c = decode(_one("2026-01-01T00:00:00Z", "20.5"))
    assert a is not None and b is not None and c is not None
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
