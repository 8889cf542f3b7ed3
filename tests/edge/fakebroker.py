"""A stand-in for the broker side of aiomqtt, for the MQTT source's logic: the messages it
delivers (with packet id and DUP flag) and the acks it receives. The real broker is used by
test_integration_mqtt.py; this one makes a crash between two precise steps reproducible."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiomqtt

from edge.sources.mqtt import _Delivered


def message(topic: str, payload: bytes, mid: int, *, dup: bool = False) -> _Delivered:
    m = _Delivered(topic, payload, 1, False, mid, None)
    m.dup = dup
    return m


class FakeClient:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[aiomqtt.Message] = asyncio.Queue()
        self.acked: list[int] = []
        self.connects = 0

    async def __aenter__(self) -> FakeClient:
        self.connects += 1
        return self

    async def __aexit__(self, *exc: Any) -> None:
        return None

    async def subscribe(self, topic: str, qos: int) -> None:
        return None

    @property
    def messages(self) -> AsyncIterator[aiomqtt.Message]:
        async def gen() -> AsyncIterator[aiomqtt.Message]:
            while True:
                yield await self.queue.get()

        return gen()

    def arrived(self, first: aiomqtt.Message) -> Iterator[aiomqtt.Message]:
        yield first
        while not self.queue.empty():
            yield self.queue.get_nowait()

    def ack(self, m: aiomqtt.Message) -> None:
        self.acked.append(m.mid)

    def deliver(self, *messages: aiomqtt.Message) -> None:
        for m in messages:
            self.queue.put_nowait(m)
