"""Keeping a heartbeat under its size limit.

The cloud refuses a request body over its limit (1 MiB by default) with 413, and an edge whose
every heartbeat is refused looks silent for ever. Many sensors, each with 200 session segments
and 200 dead-lettered ranges with long reasons, make a document of several MiB; so a heartbeat
over its limit (:data:`common.heartbeat.MAX_HEARTBEAT_BYTES`, less after the cloud answered
413) is cut, the least useful detail first, each step applied to every sensor and the
document measured again:

1. dead-lettered reasons and sensors' last errors shortened;
2. the oldest capture sessions (each whole) and dead-lettered ranges left out, ever fewer
   kept per sensor (what the cloud does with that: :class:`common.heartbeat.SeqLeftOut`);
3. each sensor's waiting ranges joined into one (errs towards "waiting", never "missing");
4. whole sequence reports, then whole sensors, those whose last reading is oldest first.

The document then says what it left out (``truncated``, and each report's ``left_out``). A
heartbeat under its limit is sent as the model encodes it, untouched.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from typing import Any

from common.heartbeat import MAX_HEARTBEAT_BYTES, Heartbeat
from edge.buffer.sequence import add_left_out, capped, fewest_dead, newest_sessions

#: what reasons and last errors are shortened to
REASON_CHARS = 100
ERROR_CHARS = 200
#: the session segments and dead-lettered ranges kept per sensor, step by step
KEEP = (100, 50, 20, 10, 5, 2, 1, 0)

Doc = dict[str, Any]


def encode(doc: object) -> bytes:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def fit(beat: Heartbeat, limit: int = MAX_HEARTBEAT_BYTES) -> bytes:
    """The heartbeat's JSON, at most ``limit`` bytes (unless even its bare state is over:
    then the smallest it can be). Unset fields are left out (a cloud older than a field
    takes the document unless that field has something to say)."""
    body = beat.model_dump_json(exclude_none=True).encode()
    if len(body) <= limit:
        return body
    return _Cut(beat.model_dump(mode="json", exclude_none=True), len(body), limit).run()


class _Cut:
    def __init__(self, doc: Doc, full_bytes: int, limit: int) -> None:
        self.doc, self.limit = doc, limit
        self.sensors: dict[str, Doc] = doc.setdefault("sensors", {})
        # in the document from the first step on, so that its own bytes are measured
        self.note: Doc = {"full_bytes": full_bytes, "limit_bytes": limit}
        doc["truncated"] = self.note

    def run(self) -> bytes:
        steps: list[Callable[[], object]] = [self.shorten]
        steps += [partial(self.keep, n) for n in KEEP]
        steps.append(self.join_waiting)
        for step in steps:
            step()
            body = encode(self.doc)
            if len(body) <= self.limit:
                return body
        for shed in (self.drop_report, self.drop_sensor):
            # estimated from each part's own size, then measured: a few rounds at most
            while len(body) > self.limit and self._shed(len(body) - self.limit, shed):
                body = encode(self.doc)
        return body

    def _reports(self) -> list[Doc]:
        return [s["sequence"] for s in self.sensors.values() if s.get("sequence")]

    def shorten(self) -> None:
        self.note["reasons_cut_to"] = REASON_CHARS
        for state in self.sensors.values():
            if state.get("last_error"):
                state["last_error"] = state["last_error"][:ERROR_CHARS]
            for d in (state.get("sequence") or {}).get("dead", []):
                d["reason"] = d["reason"][:REASON_CHARS]

    def keep(self, n: int) -> None:
        for seq in self._reports():
            sessions, sessions_out = newest_sessions(seq["sessions"], max(n, 1))
            dead, dead_out, dead_readings = fewest_dead(seq["dead"], n, sessions)
            seq["sessions"], seq["dead"] = sessions, dead
            add_left_out(seq, sessions_out, dead_out, dead_readings)
            self.note["sessions"] = self.note.get("sessions", 0) + sessions_out
            self.note["dead"] = self.note.get("dead", 0) + dead_out

    def join_waiting(self) -> None:
        for seq in self._reports():
            if len(seq["waiting"]) > 1:
                seq["waiting"] = capped(seq["waiting"], 1)
                self.note["waiting_joined"] = self.note.get("waiting_joined", 0) + 1

    def _shed(self, over: int, shed: Callable[[str], int]) -> bool:
        """Take parts away with ``shed`` (it returns the bytes it freed) until ``over`` bytes
        are gone; whether anything was taken."""
        took = False
        for sid in self._least_useful():
            if over <= 0:
                break
            freed = shed(sid)
            over -= freed
            took = took or freed > 0
        return took

    def _least_useful(self) -> list[str]:
        """Sensor ids, the one whose last reading is oldest (or that has none) first."""

        def age(sid: str) -> tuple[float, str]:
            a = self.sensors[sid].get("last_reading_age_s")
            return (-(a if a is not None else float("inf")), sid)

        return sorted(self.sensors, key=age)

    def drop_report(self, sid: str) -> int:
        seq = self.sensors[sid].pop("sequence", None)
        if seq is None:
            return 0
        self.note["sequence_reports"] = self.note.get("sequence_reports", 0) + 1
        return len(encode(seq)) + len('"sequence":,')

    def drop_sensor(self, sid: str) -> int:
        state = self.sensors.pop(sid)
        self.note["sensors"] = self.note.get("sensors", 0) + 1
        return len(encode(state)) + len(encode(sid)) + 2
