"""Payload parsing of the MQTT source: what becomes a reading, what goes to dead letter."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from edge.sources.mqtt import PayloadError, parse_payload

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_bare_number_gets_the_edge_time() -> None:
    (r,) = parse_payload(b"21.5", "s", NOW)
    assert (r.raw_value, r.timestamp, r.meta) == (21.5, NOW, None)


def test_object_and_list() -> None:
    (r,) = parse_payload(
        b'{"timestamp": "2026-01-01T01:00:00+01:00", "raw_value": 1, "meta": {"seq": 3}}', "s", NOW
    )
    assert r.timestamp == NOW and r.raw_value == 1.0 and r.meta == {"seq": 3}
    rs = parse_payload(b'[{"value": 1.0}, 2, {"raw_value": 3}]', "s", NOW)
    assert [x.raw_value for x in rs] == [1.0, 2.0, 3.0]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xff\xfe", "not JSON"),
        (b"{nope", "not JSON"),
        (b"NaN", "non-finite"),
        (b'{"raw_value": Infinity}', "non-finite"),
        (b'{"timestamp": "2026-01-01T00:00:00", "raw_value": 1}', "timestamp"),
        (b'"21.5"', "not str"),
        (b"true", "not bool"),
        (b"[]", "empty"),
        (b'{"raw_value": 1, "colour": "red"}', "colour"),
        (b'[1, {"timestamp": "yesterday", "raw_value": 1}]', "[1] timestamp"),
    ],
)
def test_poison_is_refused_with_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(PayloadError, match=reason.replace("[", r"\[").replace("]", r"\]")):
        parse_payload(payload, "s", NOW)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"[" * 100_000, "nested too deeply"),
        (b"1" * 5000, "not JSON"),
        (b'{"raw_value": 1, "meta": {"n": ' + b"9" * 5000 + b"}}", "digits"),
        (b'{"raw_value": 1, "meta": {"x": {"y": NaN}}}', "NaN"),
        (b'[1, {"raw_value": 1, "meta": {"x": -Infinity}}]', "[1] "),
        (b'{"timestamp": "9999-12-31T23:59:59-14:00", "raw_value": 1}', "range"),
    ],
)
def test_poison_that_used_to_crash_is_refused(payload: bytes, reason: str) -> None:
    with pytest.raises(PayloadError, match=reason.replace("[", r"\[").replace("]", r"\]")):
        parse_payload(payload, "s", NOW)
