"""The serial output of the common Arduino thermocouple example sketches.

Adafruit's MAX31855 ``serialthermocouple`` prints, after a banner (``MAX31855 test``,
``Initializing sensor...DONE.``), a pair per reading::

    Internal Temp = 24.50
    C = 23.75

and on a fault either ``Something wrong with thermocouple!`` (older versions) or
``Thermocouple fault(s) detected!`` followed by ``FAULT: Thermocouple is open - no
connections.`` / ``...short-circuited to GND.`` / ``...short-circuited to VCC.``. The MAX6675
sketch prints ``C = 23.25`` then ``F = 73.85``, and ``C = nan`` when the probe is open.
Common variants are read too: ``C: 23.75``, ``Celsius: 23.75``, a bare number, and
``Error: Open Circuit!`` / ``Short to GND!`` / ``Short to VCC!``.

The internal temperature becomes ``meta["cold_junction_c"]`` of the reading it precedes;
``F =`` lines repeat the ``C =`` reading and are not emitted again.
"""

from __future__ import annotations

import re

from hardware.protocols import Fault, Sample
from hardware.protocols._framing import LineDecoder, Skip, parse_number

_KEY_VALUE = re.compile(r"([A-Za-z][A-Za-z ]*?)\s*[=:]\s*(.*)")
_HOT_KEYS = frozenset({"c", "celsius", "temp", "temperature", "thermocouple", "tc"})
_INTERNAL_KEYS = frozenset(
    {"internal temp", "internal", "internal temperature", "cold junction", "cold junction temp"}
)
_FAHRENHEIT_KEYS = frozenset({"f", "fahrenheit"})
_INFO_KEYS = frozenset({"time", "thermocouple type"})
_FAULT_KEYS = frozenset({"fault", "error"})
_NOT_A_NUMBER = frozenset({"nan", "-nan", "inf", "-inf", "ovf"})
_BANNER = re.compile(
    r"MAX\d{4,5}\b.*\btest\b.*|Initializing sensor\.*(?:\s*DONE\.?)?|DONE\.?", re.IGNORECASE
)
_INIT_ERROR = re.compile(r"(?:Initializing sensor\.*\s*)?ERROR\.?", re.IGNORECASE)
_SOMETHING_WRONG = re.compile(r"Something wrong with thermocouple!?", re.IGNORECASE)
_FAULTS_DETECTED = re.compile(r"Thermocouple fault\(?s?\)? detected!?", re.IGNORECASE)


def fault_kind(message: str) -> str:
    lowered = message.lower()
    if "open" in lowered:
        return "open_circuit"
    if "gnd" in lowered or "ground" in lowered:
        return "short_to_gnd"
    if "vcc" in lowered:
        return "short_to_vcc"
    return "device_fault"


class ArduinoThermocoupleDecoder(LineDecoder):
    def __init__(self, *, max_line: int = 512) -> None:
        super().__init__(max_line=max_line)
        self._cold_junction_c: float | None = None
        # "Thermocouple fault(s) detected!" announces FAULT: lines; if none follows, the
        # fault is still reported (as a device fault) before the next reading.
        self._fault_announced = False

    def handle_line(self, text: str) -> list[Sample | Fault]:
        out: list[Sample | Fault] = []
        if _FAULTS_DETECTED.fullmatch(text):
            out += self._flush_announced()
            self._fault_announced = True
            return out
        m = _KEY_VALUE.fullmatch(text)
        key = m.group(1).strip().lower() if m else None
        if key in _FAULT_KEYS and m is not None:
            self._fault_announced = False
            return [self._fault(fault_kind(m.group(2)), text)]
        out += self._flush_announced()
        status = self._status(text)
        if status is not None:
            return [*out, *status]
        if m is None or key is None:
            return [*out, self._reading(text, text)]
        return self._keyed(key, m.group(2).strip(), text, out)

    def _status(self, text: str) -> list[Sample | Fault] | None:
        """What a status line of the board says (the banner: nothing); None for other lines."""
        if _SOMETHING_WRONG.fullmatch(text):
            return [self._fault("open_circuit", text)]
        if _INIT_ERROR.fullmatch(text):
            return [self._fault("device_fault", f"sensor did not initialise: {text}")]
        if _BANNER.fullmatch(text):
            return []
        return None

    def _keyed(
        self, key: str, value: str, text: str, out: list[Sample | Fault]
    ) -> list[Sample | Fault]:
        """A ``key: value`` line after ``out`` (faults announced before it)."""
        if key in _INTERNAL_KEYS:
            if value.lower() in _NOT_A_NUMBER:
                self._cold_junction_c = None
                raise Skip(f"internal temperature is not a number: {value!r}")
            self._cold_junction_c = parse_number(value, "internal temperature")
            return out
        if key in _HOT_KEYS:
            return [*out, self._reading(value, text)]
        if key in _FAHRENHEIT_KEYS or key in _INFO_KEYS:
            if key in _FAHRENHEIT_KEYS and value.lower() not in _NOT_A_NUMBER:
                parse_number(value, "fahrenheit")  # still reject garbage
            return out
        raise Skip(f"unknown line: {text[:40]!r}")

    def _reading(self, value: str, text: str) -> Sample | Fault:
        if value.lower() in _NOT_A_NUMBER:
            return self._fault("open_circuit", f"thermocouple reads {value} ({text})")
        celsius = parse_number(value, "temperature")
        meta: dict[str, object] = {"unit": "C"}
        if self._cold_junction_c is not None:
            meta["cold_junction_c"] = self._cold_junction_c
            self._cold_junction_c = None
        return Sample(celsius, meta=meta)

    def _fault(self, kind: str, detail: str) -> Fault:
        self._cold_junction_c = None  # the internal temperature belonged to this reading
        return Fault(kind, detail)

    def _flush_announced(self) -> list[Sample | Fault]:
        if not self._fault_announced:
            return []
        self._fault_announced = False
        return [self._fault("device_fault", "thermocouple fault(s) detected, no detail given")]
