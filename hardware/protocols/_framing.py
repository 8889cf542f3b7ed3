"""Line framing shared by every protocol, and the base class of the decoders."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod

from hardware.protocols import DecoderStats, Fault, Sample

_TERMINATORS = re.compile(rb"[\r\n]")
# Control characters other than tab: line noise, never part of a device's text.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")

_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


class Skip(Exception):
    """Raised by a decoder's line handler: the line is skipped with this reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse_number(text: str, what: str = "value") -> float:
    """A finite decimal number (no underscores, no inf/nan words), or Skip."""
    text = text.strip()
    if not _NUMBER.fullmatch(text):
        raise Skip(f"{what} is not a number: {text[:40]!r}")
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise Skip(f"{what} is not finite: {text[:40]!r}")
    return value


class LineDecoder(ABC):
    """Frames lines and hands each decoded, stripped, non-blank one to :meth:`handle_line`."""

    def __init__(self, *, max_line: int = 512) -> None:
        if max_line < 1:
            raise ValueError(f"max_line must be at least 1, not {max_line}")
        self.stats = DecoderStats()
        self.max_line = max_line
        self._partial = bytearray()
        self._discarding = False  # inside an over-long line, until its terminator

    def feed(self, data: bytes) -> list[Sample | Fault]:
        out: list[Sample | Fault] = []
        pos = 0
        for m in _TERMINATORS.finditer(data):
            self._take(data[pos : m.start()])
            self._end_line(out)
            pos = m.end()
        self._take(data[pos:])
        return out

    def _take(self, piece: bytes) -> None:
        """Append to the current line; drop it as soon as it is known to be too long."""
        if self._discarding:
            return
        self._partial += piece
        if len(self._partial) > self.max_line:
            self._partial.clear()
            self._discarding = True
            self.stats.lines += 1
            self._skip(f"line longer than {self.max_line} bytes")

    def _end_line(self, out: list[Sample | Fault]) -> None:
        if self._discarding:
            self._discarding = False
            return
        raw = bytes(self._partial)
        self._partial.clear()
        try:
            text = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            self.stats.lines += 1
            self._skip("line is not UTF-8")
            return
        if not text:
            return
        self.stats.lines += 1
        if _CONTROL.search(text):
            self._skip("line contains control characters")
            return
        try:
            items = self.handle_line(text)
        except Skip as skip:
            self._skip(skip.reason)
            return
        for item in items:
            if isinstance(item, Sample):
                self.stats.samples += 1
            else:
                self.stats.faults += 1
            out.append(item)

    def _skip(self, reason: str) -> None:
        self.stats.skipped += 1
        self.stats.last_skip_reason = reason

    @abstractmethod
    def handle_line(self, text: str) -> list[Sample | Fault]:
        """Decode one line; raise :class:`Skip` for a line that cannot be used."""
