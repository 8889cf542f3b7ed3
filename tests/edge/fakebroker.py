"""A stand-in for the broker side of the MQTT client, for the MQTT source's logic: the messages
it delivers (with packet id and DUP flag) and the acks it receives. The real broker is used by
test_integration_mqtt.py; this one makes a crash between two precise steps reproducible."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from edge.sources.mqtt import Delivered


def message(topic: str, payload: bytes, mid: int, *, dup: bool = False) -> Delivered:
    return Delivered(topic, payload, 1, mid, dup)


class FakeClient:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[Delivered] = asyncio.Queue()
        self.acked: list[int] = []
        self.connects = 0

    async def __aenter__(self) -> FakeClient:
        self.connects += 1
        return self

    async def __aexit__(self, *exc: Any) -> None:
        return None

    async def subscribe(self, topic: str, qos: int) -> None:
        return None

    async def burst(self, limit: int) -> list[Delivered]:
        out = [await self.queue.get()]
        while len(out) < limit and not self.queue.empty():
            out.append(self.queue.get_nowait())
        return out

    def ack_all(self, messages: Sequence[Delivered]) -> None:
        self.acked += [m.mid for m in messages]

    def deliver(self, *messages: Delivered) -> None:
        for m in messages:
            self.queue.put_nowait(m)
