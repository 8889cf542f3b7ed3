"""MAX31855 frames as 32-bit hex words, one per line (``0x`` prefix optional).

=========  ===================================================================
D31-D18    thermocouple temperature, 14-bit two's complement, 0.25 °C
D17        reserved (0)
D16        fault: set when any of D2-D0 is
D15-D4     internal (cold-junction) temperature, 12-bit two's complement, 0.0625 °C
D3         reserved (0)
D2         short to VCC
D1         short to GND
D0         open circuit
=========  ===================================================================
"""

from __future__ import annotations

import re

from hardware.protocols import Fault, Sample
from hardware.protocols._framing import LineDecoder, Skip

_FRAME = re.compile(r"(?:0[xX])?([0-9A-Fa-f]{8})")

FAULT_BIT = 1 << 16
RESERVED_BITS = (1 << 17) | (1 << 3)
#: (bit, kind, detail), in the order they are reported
FAULT_BITS: tuple[tuple[int, str, str], ...] = (
    (1 << 0, "open_circuit", "thermocouple is open (OC fault bit)"),
    (1 << 1, "short_to_gnd", "thermocouple is short-circuited to GND (SCG fault bit)"),
    (1 << 2, "short_to_vcc", "thermocouple is short-circuited to VCC (SCV fault bit)"),
)

HOT_LSB_C = 0.25
INTERNAL_LSB_C = 0.0625
HOT_RANGE_C = (-(1 << 13) * HOT_LSB_C, ((1 << 13) - 1) * HOT_LSB_C)  # -2048 to 2047.75
INTERNAL_RANGE_C = (-(1 << 11) * INTERNAL_LSB_C, ((1 << 11) - 1) * INTERNAL_LSB_C)


def _signed(value: int, bits: int) -> int:
    return value - (1 << bits) if value & (1 << (bits - 1)) else value


def _field(celsius: float, lsb: float, bits: int, what: str) -> int:
    counts = round(celsius / lsb)
    if not -(1 << (bits - 1)) <= counts < (1 << (bits - 1)):
        raise ValueError(f"{what} {celsius} °C does not fit the MAX31855's {bits}-bit field")
    return counts & ((1 << bits) - 1)


def encode_frame(hot_c: float, internal_c: float, *, faults: tuple[str, ...] = ()) -> int:
    """The 32-bit word a MAX31855 sends (temperatures rounded to the chip's resolution).

    ``faults`` names fault kinds among open_circuit, short_to_gnd, short_to_vcc.
    """
    word = _field(hot_c, HOT_LSB_C, 14, "thermocouple temperature") << 18
    word |= _field(internal_c, INTERNAL_LSB_C, 12, "internal temperature") << 4
    for bit, kind, _ in FAULT_BITS:
        if kind in faults:
            word |= bit | FAULT_BIT
    unknown = set(faults) - {kind for _, kind, _ in FAULT_BITS}
    if unknown:
        raise ValueError(f"unknown MAX31855 fault kinds {sorted(unknown)}")
    return word


def decode_frame(word: int) -> Sample | Fault:
    """A sample (hot °C, meta cold_junction_c) or the frame's fault; Skip if malformed."""
    if not 0 <= word <= 0xFFFFFFFF:
        raise Skip(f"frame {word:#x} is not a 32-bit word")
    if word & RESERVED_BITS:
        raise Skip(f"frame {word:#010x} has reserved bits D17/D3 set")
    set_bits = [(kind, detail) for bit, kind, detail in FAULT_BITS if word & bit]
    if set_bits:
        # D16 should accompany any of D2-D0; a frame with only the detail bit is still a fault.
        kind, detail = set_bits[0]
        if len(set_bits) > 1:
            detail += "; also " + ", ".join(k for k, _ in set_bits[1:])
        return Fault(kind, detail)
    if word & FAULT_BIT:
        return Fault("device_fault", "fault bit D16 set without a fault detail bit")
    hot = _signed(word >> 18, 14) * HOT_LSB_C
    internal = _signed((word >> 4) & 0xFFF, 12) * INTERNAL_LSB_C
    return Sample(hot, meta={"cold_junction_c": internal, "unit": "C"})


class Max31855HexDecoder(LineDecoder):
    def handle_line(self, text: str) -> list[Sample | Fault]:
        m = _FRAME.fullmatch(text)
        if m is None:
            raise Skip(f"not a 32-bit hex frame: {text[:40]!r}")
        return [decode_frame(int(m.group(1), 16))]
