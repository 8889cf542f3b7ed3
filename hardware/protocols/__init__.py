"""Serial line protocols: pure decoders from a byte stream to samples and faults (no I/O).

Every decoder accepts the byte stream in any chunking (:meth:`Decoder.feed`) and shares the
line framing of :mod:`hardware.protocols._framing`: lines end at ``\\n``, ``\\r\\n`` or a bare
``\\r``; a partial line waits for the next ``feed``; an over-long line, bytes that are not
UTF-8, or control characters make the line skipped and counted in :class:`DecoderStats`;
blank lines are ignored. A decoder never raises on input: whatever it cannot read is
skipped with a reason, and the next good line decodes.

Protocols (:data:`PROTOCOLS`):

``value``
    one finite number per line.
``csv``
    ``channel,value[,timestamp]``; timestamp RFC 3339 with a zone, or epoch seconds.
``jsonl``
    one JSON object per line: ``{"value"|"raw_value": n, "timestamp"?, "channel"?, "meta"?}``.
``arduino-thermocouple``
    the serial output of the Adafruit MAX31855 / MAX6675 example sketches.
``max31855-hex``
    one 32-bit MAX31855 frame per line, in hex.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol


@dataclass(frozen=True)
class Sample:
    #: the number the device reported (mV for ``value`` from the simulator, °C for
    #: arduino-thermocouple and max31855-hex)
    value: float
    #: csv channel (or a jsonl "channel"); None otherwise
    channel: str | None = None
    #: aware UTC datetime if the device sent one, else None
    timestamp: datetime | None = None
    #: e.g. {"cold_junction_c": 24.5, "unit": "C"}
    meta: dict[str, Any] = field(default_factory=dict)


#: The kinds a :class:`Fault` can have.
FAULT_KINDS: tuple[str, ...] = ("open_circuit", "short_to_gnd", "short_to_vcc", "device_fault")


@dataclass(frozen=True)
class Fault:
    kind: str  # one of FAULT_KINDS
    detail: str
    channel: str | None = None


@dataclass
class DecoderStats:
    lines: int = 0  # complete non-blank lines seen (over-long ones included)
    samples: int = 0
    faults: int = 0
    skipped: int = 0  # garbage / malformed / over-long lines skipped
    last_skip_reason: str | None = None


class Decoder(Protocol):
    stats: DecoderStats

    def feed(self, data: bytes) -> list[Sample | Fault]:
        """Decode the next bytes of the stream (any chunking); never raises on bad input."""
        ...


PROTOCOLS: tuple[str, ...] = ("value", "csv", "jsonl", "arduino-thermocouple", "max31855-hex")


def make_decoder(protocol: str, *, max_line: int = 512) -> Decoder:
    """A fresh decoder for ``protocol``; ValueError for an unknown protocol or bad max_line."""
    # Imported here: the decoder modules import the types above.
    from hardware.protocols._framing import LineDecoder
    from hardware.protocols.arduino import ArduinoThermocoupleDecoder
    from hardware.protocols.lines import CsvDecoder, JsonLinesDecoder, ValueDecoder
    from hardware.protocols.max31855 import Max31855HexDecoder

    if max_line < 1:
        raise ValueError(f"max_line must be at least 1, not {max_line}")
    decoders: dict[str, type[LineDecoder]] = {
        "value": ValueDecoder,
        "csv": CsvDecoder,
        "jsonl": JsonLinesDecoder,
        "arduino-thermocouple": ArduinoThermocoupleDecoder,
        "max31855-hex": Max31855HexDecoder,
    }
    cls = decoders.get(protocol)
    if cls is None:
        raise ValueError(f"unknown protocol {protocol!r}; one of {', '.join(PROTOCOLS)}")
    return cls(max_line=max_line)
