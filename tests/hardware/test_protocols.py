"""Serial protocol decoders: tables per protocol, framing, chunking, fuzzing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hardware.protocols import (
    FAULT_KINDS,
    PROTOCOLS,
    Decoder,
    DecoderStats,
    Fault,
    Sample,
    make_decoder,
)
from hardware.protocols.max31855 import decode_frame, encode_frame

Item = Sample | Fault


def decode(protocol: str, data: bytes, **kw: int) -> tuple[list[Item], DecoderStats]:
    d = make_decoder(protocol, **kw)
    return d.feed(data), d.stats


def decode_bytewise(protocol: str, data: bytes, **kw: int) -> tuple[list[Item], DecoderStats]:
    d = make_decoder(protocol, **kw)
    out: list[Item] = []
    for i in range(len(data)):
        out += d.feed(data[i : i + 1])
    return out, d.stats


def one(protocol: str, line: bytes) -> Item:
    items, stats = decode(protocol, line + b"\n")
    assert stats.skipped == 0, stats.last_skip_reason
    assert len(items) == 1
    return items[0]


def skipped(protocol: str, line: bytes) -> str:
    items, stats = decode(protocol, line + b"\n")
    assert items == []
    assert stats.skipped == 1
    assert stats.last_skip_reason
    return stats.last_skip_reason


# ---------------------------------------------------------------- the factory


def test_protocols_and_factory() -> None:
    assert PROTOCOLS == ("value", "csv", "jsonl", "arduino-thermocouple", "max31855-hex")
    for p in PROTOCOLS:
        d: Decoder = make_decoder(p)
        assert d.stats == DecoderStats()
        assert d.feed(b"") == []


def test_unknown_protocol() -> None:
    with pytest.raises(ValueError, match="unknown protocol 'modbus'; one of value, csv"):
        make_decoder("modbus")
    with pytest.raises(ValueError, match="max_line"):
        make_decoder("value", max_line=0)


def test_decoders_are_independent() -> None:
    a, b = make_decoder("value"), make_decoder("value")
    a.feed(b"1\n")
    assert b.stats.samples == 0


# ---------------------------------------------------------------- framing


@pytest.mark.parametrize("protocol", ["value"])
@pytest.mark.parametrize(
    "data",
    [b"1\n2\n3\n", b"1\r\n2\r\n3\r\n", b"1\r2\r3\r", b"1\n\n2\r\n\r\n3\r", b"\n\n1\n2\n3\n\n"],
)
def test_terminators_and_blank_lines(protocol: str, data: bytes) -> None:
    items, stats = decode(protocol, data)
    assert items == [Sample(1.0), Sample(2.0), Sample(3.0)]
    assert stats == DecoderStats(lines=3, samples=3)


def test_partial_line_waits_for_its_terminator() -> None:
    d = make_decoder("value")
    assert d.feed(b"12") == []
    assert d.feed(b".5") == []
    assert d.stats.lines == 0
    assert d.feed(b"\n7") == [Sample(12.5)]
    assert d.feed(b"\r\n") == [Sample(7.0)]


def test_over_long_line_is_discarded_up_to_the_next_newline() -> None:
    data = b"1\n" + b"9" * 20 + b"\n2\n"
    for items, stats in (
        decode("value", data, max_line=8),
        decode_bytewise("value", data, max_line=8),
    ):
        assert items == [Sample(1.0), Sample(2.0)]
        assert stats.skipped == 1
        assert stats.lines == 3
        assert stats.last_skip_reason == "line longer than 8 bytes"


def test_line_of_exactly_max_line_is_kept() -> None:
    items, stats = decode("value", b"12345678\n123456789\n", max_line=8)
    assert items == [Sample(12345678.0)]
    assert stats.skipped == 1


def test_over_long_line_without_newline_yet_is_counted_once() -> None:
    d = make_decoder("value", max_line=4)
    for _ in range(10):
        assert d.feed(b"99999") == []
    assert d.stats.skipped == 1
    assert d.feed(b"\n5\n") == [Sample(5.0)]
    assert d.stats.skipped == 1


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"\xff\xfe1", "not UTF-8"),
        (b"1\x002", "control characters"),
        (b"\x00", "control characters"),
        (b"\x1b[0m1", "control characters"),
    ],
)
def test_undecodable_lines_are_skipped(line: bytes, reason: str) -> None:
    items, stats = decode("value", b"1\n" + line + b"\n2\n")
    assert items == [Sample(1.0), Sample(2.0)]
    assert stats.skipped == 1
    assert stats.last_skip_reason is not None
    assert reason in stats.last_skip_reason


def test_whitespace_only_lines_are_blank() -> None:
    items, stats = decode("value", b"  \n\t\n\xc2\xa0\n1\n")
    assert items == [Sample(1.0)]
    assert stats == DecoderStats(lines=1, samples=1)


# ---------------------------------------------------------------- value


@pytest.mark.parametrize(
    ("line", "value"),
    [(b"1", 1.0), (b"-3.554", -3.554), (b" +4.096 ", 4.096), (b"1e-3", 0.001), (b".5", 0.5),
     (b"5.", 5.0), (b"0", 0.0), (b"-0.0", 0.0), (b"41.276\t", 41.276)],
)  # fmt: skip
def test_value_lines(line: bytes, value: float) -> None:
    assert one("value", line) == Sample(value)


@pytest.mark.parametrize(
    "line",
    [b"abc", b"1,2", b"nan", b"inf", b"-Infinity", b"1e999", b"1_000", b"0x10", b"1 2", b"--1"],
)
def test_value_garbage(line: bytes) -> None:
    skipped("value", line)


# ---------------------------------------------------------------- csv

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
QUARTER_S = timedelta(milliseconds=250)
CJ = {"cold_junction_c": 24.5}


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"1,4.096", Sample(4.096, channel="1")),
        (b" ch2 , -1.5 ", Sample(-1.5, channel="ch2")),
        (b"1,4.096,2024-05-01T12:00:00Z", Sample(4.096, "1", T0)),
        (b"1,4.096,2024-05-01T14:00:00+02:00", Sample(4.096, "1", T0)),
        (b"1,4.096,2024-05-01 12:00:00.250+00:00", Sample(4.096, "1", T0 + QUARTER_S)),
        (b"1,4.096,1714564800", Sample(4.096, "1", T0)),
        (b"1,4.096,1714564800.5", Sample(4.096, "1", T0 + timedelta(milliseconds=500))),
    ],
)  # fmt: skip
def test_csv_lines(line: bytes, expected: Sample) -> None:
    item = one("csv", line)
    assert item == expected
    assert isinstance(item, Sample)
    if item.timestamp is not None:
        assert item.timestamp.tzinfo is UTC


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"4.096", "fields"),
        (b"1,2,3,4", "fields"),
        (b",4.096", "empty channel"),
        (b"1,abc", "not a number"),
        (b"1,nan", "not a number"),
        (b"1,4.0,2024-05-01T12:00:00", "no time zone"),
        (b"1,4.0,2024-05-01", "not RFC 3339"),
        (b"1,4.0,yesterday", "not RFC 3339"),
        (b"1,4.0,1e300", "out of range"),
    ],
)
def test_csv_garbage(line: bytes, reason: str) -> None:
    assert reason in skipped("csv", line)


# ---------------------------------------------------------------- jsonl


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b'{"value": 1.5}', Sample(1.5)),
        (b'{"raw_value": -2}', Sample(-2.0)),
        (b'{"value": 1, "timestamp": "2024-05-01T12:00:00Z"}', Sample(1.0, timestamp=T0)),
        (b'{"value": 1, "timestamp": 1714564800}', Sample(1.0, timestamp=T0)),
        (b'{"value": 1, "timestamp": null}', Sample(1.0)),
        (b'{"value": 1, "channel": "a"}', Sample(1.0, channel="a")),
        (b'{"value": 1, "channel": 3}', Sample(1.0, channel="3")),
        (b'{"value": 1, "meta": {"cold_junction_c": 24.5}}', Sample(1.0, meta=CJ)),
        (b'{"value": 1, "meta": null}', Sample(1.0)),
        (b' {"value": 1, "extra": [1, 2]} ', Sample(1.0)),
    ],
)  # fmt: skip
def test_jsonl_lines(line: bytes, expected: Sample) -> None:
    assert one("jsonl", line) == expected


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"{", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (b"3", "JSON object"),
        (b"{}", "exactly one"),
        (b'{"value": 1, "raw_value": 1}', "exactly one"),
        (b'{"value": "1"}', "must be a number"),
        (b'{"value": true}', "must be a number"),
        (b'{"value": NaN}', "not finite"),
        (b'{"value": Infinity}', "not finite"),
        (b'{"value": 1e999}', "not finite"),
        (b'{"value": 1' + b"0" * 400 + b"}", "too large"),
        (b'{"value": 1, "timestamp": "2024-05-01T12:00:00"}', "no time zone"),
        (b'{"value": 1, "timestamp": true}', "timestamp"),
        (b'{"value": 1, "timestamp": [1]}', "timestamp"),
        (b'{"value": 1, "channel": [1]}', "channel"),
        (b'{"value": 1, "meta": [1]}', "meta"),
        (b"[" * 100_000 + b"]" * 100_000, "not JSON"),
    ],
)
def test_jsonl_garbage(line: bytes, reason: str) -> None:
    items, stats = decode("jsonl", line + b"\n", max_line=1_000_000)
    assert items == []
    assert stats.skipped == 1
    assert stats.last_skip_reason is not None
    assert reason in stats.last_skip_reason


# ---------------------------------------------------------------- arduino-thermocouple

MAX31855_SESSION = b"""MAX31855 test\r
Initializing sensor...DONE.\r
Internal Temp = 24.50\r
C = 23.75\r
Internal Temp = 24.56\r
C = 150.25\r
Internal Temp = 24.50\r
Thermocouple fault(s) detected!\r
FAULT: Thermocouple is open - no connections.\r
Internal Temp = 24.62\r
Thermocouple fault(s) detected!\r
FAULT: Thermocouple is short-circuited to GND.\r
Thermocouple fault(s) detected!\r
FAULT: Thermocouple is short-circuited to VCC.\r
Internal Temp = 24.62\r
C = 24.00\r
"""


def test_arduino_max31855_session() -> None:
    items, stats = decode("arduino-thermocouple", MAX31855_SESSION)
    assert items == [
        Sample(23.75, meta={"cold_junction_c": 24.5, "unit": "C"}),
        Sample(150.25, meta={"cold_junction_c": 24.56, "unit": "C"}),
        Fault("open_circuit", "FAULT: Thermocouple is open - no connections."),
        Fault("short_to_gnd", "FAULT: Thermocouple is short-circuited to GND."),
        Fault("short_to_vcc", "FAULT: Thermocouple is short-circuited to VCC."),
        Sample(24.0, meta={"cold_junction_c": 24.62, "unit": "C"}),
    ]
    assert stats.skipped == 0
    assert stats.samples == 3
    assert stats.faults == 3


def test_arduino_max6675_session() -> None:
    data = b"MAX6675 test\nC = 23.25\nF = 73.85\nC = nan\nF = nan\nC = 25.50\nF = 77.90\n"
    items, stats = decode("arduino-thermocouple", data)
    assert items == [
        Sample(23.25, meta={"unit": "C"}),
        Fault("open_circuit", "thermocouple reads nan (C = nan)"),
        Sample(25.5, meta={"unit": "C"}),
    ]
    assert stats.skipped == 0


def test_arduino_old_sketch_something_wrong() -> None:
    data = b"Internal Temp = 25.00\nSomething wrong with thermocouple!\nC = 30.00\n"
    items, _ = decode("arduino-thermocouple", data)
    # The internal temperature belonged to the failed reading, not to the next one.
    assert items == [
        Fault("open_circuit", "Something wrong with thermocouple!"),
        Sample(30.0, meta={"unit": "C"}),
    ]


def test_arduino_fault_announced_without_detail_is_still_reported() -> None:
    items, _ = decode("arduino-thermocouple", b"Thermocouple fault(s) detected!\nC = 30.00\n")
    assert [type(i) for i in items] == [Fault, Sample]
    assert isinstance(items[0], Fault)
    assert items[0].kind == "device_fault"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"C: 23.75", Sample(23.75, meta={"unit": "C"})),
        (b"Celsius: 23.75", Sample(23.75, meta={"unit": "C"})),
        (b"23.75", Sample(23.75, meta={"unit": "C"})),
        (b"C = ovf", Fault("open_circuit", "thermocouple reads ovf (C = ovf)")),
        (b"Error: Open Circuit!", Fault("open_circuit", "Error: Open Circuit!")),
        (b"Error: Short to GND!", Fault("short_to_gnd", "Error: Short to GND!")),
        (b"Error: Short to VCC!", Fault("short_to_vcc", "Error: Short to VCC!")),
        (b"FAULT: something else", Fault("device_fault", "FAULT: something else")),
        (b"ERROR.", Fault("device_fault", "sensor did not initialise: ERROR.")),
    ],
)  # fmt: skip
def test_arduino_variants(line: bytes, expected: Item) -> None:
    assert one("arduino-thermocouple", line) == expected


@pytest.mark.parametrize(
    "line",
    [b"MAX31855 test", b"MAX6675 test", b"MAX31856 thermocouple test", b"Initializing sensor...",
     b"DONE.", b"F = 74.75", b"Time: 0.50", b"Thermocouple type: K Type"],
)  # fmt: skip
def test_arduino_banners_and_redundant_lines_are_silent(line: bytes) -> None:
    items, stats = decode("arduino-thermocouple", line + b"\n")
    assert items == []
    assert stats.skipped == 0
    assert stats.lines == 1


@pytest.mark.parametrize(
    "line",
    [b"C = warm", b"Internal Temp = nan", b"Internal Temp = x", b"F = hot", b"Q = 1", b"#$%^"],
)
def test_arduino_garbage(line: bytes) -> None:
    skipped("arduino-thermocouple", line)


def test_arduino_nan_internal_does_not_leak() -> None:
    items, _ = decode("arduino-thermocouple", b"Internal Temp = 24\nInternal Temp = nan\nC = 1\n")
    assert items == [Sample(1.0, meta={"unit": "C"})]


# ---------------------------------------------------------------- max31855-hex


@pytest.mark.parametrize(
    ("word", "hot", "internal"),
    [
        # Datasheet Table 2/3 examples.
        (0x64000000, 1600.0, 0.0),
        (0x3E800000, 1000.0, 0.0),
        (0x06400000, 100.0, 0.0),
        (0x01900000, 25.0, 0.0),
        (0x00000000, 0.0, 0.0),
        (0xFFFC0000, -0.25, 0.0),
        (0xFC000000, -64.0, 0.0),
        (0xF0600000, -250.0, 0.0),
        (0x00007F00, 0.0, 127.0),
        (0x00006490, 0.0, 100.5625),
        (0x00001900, 0.0, 25.0),
        (0x0000FFF0, 0.0, -0.0625),
        (0x0000FF00, 0.0, -1.0),
        (0x0000EC00, 0.0, -20.0),
        (0x0000C900, 0.0, -55.0),
    ],
)
def test_max31855_datasheet_values(word: int, hot: float, internal: float) -> None:
    for line in (b"%08X" % word, b"%08x" % word, b"0x%08x" % word, b"0X%08X" % word):
        assert one("max31855-hex", line) == Sample(
            hot, meta={"cold_junction_c": internal, "unit": "C"}
        )


@pytest.mark.parametrize(
    ("word", "kind"),
    [
        (0x00010001, "open_circuit"),
        (0x00010002, "short_to_gnd"),
        (0x00010004, "short_to_vcc"),
        (0x00010000, "device_fault"),
        (0x00000001, "open_circuit"),
        (0x0001000F & ~0x8, "open_circuit"),
    ],
)
def test_max31855_faults(word: int, kind: str) -> None:
    item = one("max31855-hex", b"%08x" % word)
    assert isinstance(item, Fault)
    assert item.kind == kind


def test_max31855_several_fault_bits_are_all_named() -> None:
    item = one("max31855-hex", b"00010006")
    assert isinstance(item, Fault)
    assert item.kind == "short_to_gnd"
    assert "short_to_vcc" in item.detail


@pytest.mark.parametrize(
    "line", [b"1234567", b"123456789", b"0x", b"GGGGGGGG", b"0x0000000g", b"00020000", b"00000008"]
)
def test_max31855_garbage(line: bytes) -> None:
    skipped("max31855-hex", line)


@settings(max_examples=300, deadline=None)
@given(
    hot=st.integers(-(1 << 13), (1 << 13) - 1),
    internal=st.integers(-(1 << 11), (1 << 11) - 1),
)
def test_max31855_encode_decode_round_trip(hot: int, internal: int) -> None:
    word = encode_frame(hot * 0.25, internal * 0.0625)
    assert decode_frame(word) == Sample(
        hot * 0.25, meta={"cold_junction_c": internal * 0.0625, "unit": "C"}
    )


def test_max31855_encode_quantises_and_checks() -> None:
    assert decode_frame(encode_frame(100.1, 25.03)) == Sample(
        100.0, meta={"cold_junction_c": 25.0, "unit": "C"}
    )
    with pytest.raises(ValueError, match="14-bit"):
        encode_frame(2048.0, 25.0)
    with pytest.raises(ValueError, match="12-bit"):
        encode_frame(20.0, 128.0)
    with pytest.raises(ValueError, match="unknown"):
        encode_frame(20.0, 25.0, faults=("melted",))
    for kind in ("open_circuit", "short_to_gnd", "short_to_vcc"):
        frame = decode_frame(encode_frame(0.0, 25.0, faults=(kind,)))
        assert isinstance(frame, Fault)
        assert frame.kind == kind


# ---------------------------------------------------------------- all protocols

GOOD_LINES: dict[str, list[bytes]] = {
    "value": [b"1.25", b"-3.5", b"41.276"],
    "csv": [b"1,1.25", b"2,-3.5,2024-05-01T12:00:00Z", b"1,41.276,1714564800"],
    "jsonl": [b'{"value": 1.25}', b'{"raw_value": -3.5, "channel": "2"}', b'{"value": 41.276}'],
    "arduino-thermocouple": [b"C = 1.25", b"Internal Temp = 24.50", b"C = -3.50"],
    "max31855-hex": [b"00140190", b"0x06400190", b"FFF00000"],
}
GOOD_COUNTS = {"value": 3, "csv": 3, "jsonl": 3, "arduino-thermocouple": 2, "max31855-hex": 3}


def test_good_lines_table_is_complete() -> None:
    assert set(GOOD_LINES) == set(PROTOCOLS)
    for p in PROTOCOLS:
        items, stats = decode(p, b"\n".join(GOOD_LINES[p]) + b"\n")
        assert len(items) == GOOD_COUNTS[p]
        assert stats.skipped == 0


STREAM = {
    p: b"\r\n".join(lines) + b"\n\xff\xfegarbage\n" + b"x" * 600 + b"\n" + b"\r".join(lines) + b"\r"
    for p, lines in GOOD_LINES.items()
}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_bytewise_feeding_equals_whole_feeding(protocol: str) -> None:
    whole, whole_stats = decode(protocol, STREAM[protocol])
    bytewise, bytewise_stats = decode_bytewise(protocol, STREAM[protocol])
    assert bytewise == whole
    assert bytewise_stats == whole_stats
    assert len(whole) == 2 * GOOD_COUNTS[protocol]
    assert whole_stats.skipped == 2


@pytest.mark.parametrize("protocol", PROTOCOLS)
@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(0, 10_000), max_size=20))
def test_any_chunking_gives_the_same_result(protocol: str, cuts: list[int]) -> None:
    data = STREAM[protocol]
    points = sorted({c % (len(data) + 1) for c in cuts})
    d = make_decoder(protocol)
    out: list[Item] = []
    for a, b in zip([0, *points], [*points, len(data)], strict=True):
        out += d.feed(data[a:b])
    whole, whole_stats = decode(protocol, data)
    assert out == whole
    assert d.stats == whole_stats


garbage_line = st.binary(min_size=1, max_size=80).filter(
    lambda b: b"\n" not in b and b"\r" not in b
)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@settings(max_examples=150, deadline=None)
@given(noise=st.binary(max_size=400))
def test_random_bytes_never_raise(protocol: str, noise: bytes) -> None:
    d = make_decoder(protocol, max_line=64)
    items = d.feed(noise)
    items += d.feed(b"\n")
    s = d.stats
    assert all(isinstance(i, Sample | Fault) for i in items)
    assert s.samples + s.faults == len(items)
    assert s.skipped <= s.lines
    # A line gives at most one sample (arduino may add an announced fault before it).
    assert s.samples + s.skipped <= s.lines
    for i in items:
        if isinstance(i, Fault):
            assert i.kind in FAULT_KINDS


@pytest.mark.parametrize("protocol", PROTOCOLS)
@settings(max_examples=100, deadline=None)
@given(garbage=st.lists(garbage_line, min_size=1, max_size=5), chunk=st.integers(1, 50))
def test_good_lines_after_garbage_still_decode(
    protocol: str, garbage: list[bytes], chunk: int
) -> None:
    good = b"\n".join(GOOD_LINES[protocol]) + b"\n"
    data = b"\n".join(garbage) + b"\n" + good
    d = make_decoder(protocol)
    out: list[Item] = []
    for i in range(0, len(data), chunk):
        out += d.feed(data[i : i + chunk])
    expected, _ = decode(protocol, good)
    assert out[-len(expected) :] == expected
    assert d.stats.skipped <= len(garbage)
    assert d.stats.lines >= len(expected)


def test_garbage_is_counted_for_every_protocol() -> None:
    for p in PROTOCOLS:
        _, stats = decode(p, b"\x01\x02\x03\n\xfe\xff\n" + b"\n".join(GOOD_LINES[p]) + b"\n")
        assert stats.skipped == 2, p


def test_timestamps_are_converted_to_utc() -> None:
    item = one("jsonl", b'{"value": 1, "timestamp": "2024-05-01T08:00:00-04:00"}')
    assert isinstance(item, Sample)
    assert item.timestamp == T0
    assert item.timestamp is not None
    assert item.timestamp.utcoffset() == timedelta(0)
    assert item.timestamp.tzinfo is UTC
    assert T0.astimezone(timezone(timedelta(hours=3))) == item.timestamp


def test_arduino_init_error_on_the_banner_line() -> None:
    item = one("arduino-thermocouple", b"Initializing sensor...ERROR.")
    assert isinstance(item, Fault)
    assert item.kind == "device_fault"
    assert "did not initialise" in item.detail


def test_jsonl_timestamps_out_of_range_in_utc_are_skipped() -> None:
    from hardware.protocols import Sample, make_decoder

    dec = make_decoder("jsonl")
    out = dec.feed(
        b'{"value": 1, "timestamp": "0001-01-01T00:00:00+01:00"}\n'
        b'{"value": 2, "timestamp": "2025-12-05T12:00:00Z"}\n'
    )
    assert [s.value for s in out if isinstance(s, Sample)] == [2.0]
    assert dec.stats.skipped == 1 and "range" in (dec.stats.last_skip_reason or "")
