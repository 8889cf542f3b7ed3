"""Live latency: a sender process posts readings at a steady rate, in batches of
``Sizes.live_batch`` (1000 every 100 ms for 10,000/s: what an edge sends at that rate, its
``batch_size`` filled in a tenth of a second), each stamped with the wall clock just before
its POST; a WebSocket client subscribed by sensor receives them, and latency is receive time
minus that stamp.

The client subscribes with ``?batch=true``, as the portal does: at this rate a frame per
reading costs the server and the client far more than the readings themselves (a reading is
~300 bytes of JSON; one frame per 100-reading batch instead of 100). Each reading's latency
is taken from its own timestamp inside the frame.

Every reading must arrive, exactly once and in order. Anything else the stream sends (an
``overflow`` notice: the slow-client policy cut the client off; a ``reset``) or a closed
connection fails the run with that message, instead of being counted as lost readings.

With more than one cloud worker the POST and the WebSocket usually land in different
processes, so the figure includes the LISTEN/NOTIFY hop between them.
"""

from __future__ import annotations

import asyncio
import gc
import json
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from websockets.asyncio.client import connect

from bench.harness import Cloud, Row, Sizes, pg_database
from bench.project import Bench, bootstrap

SENDER = """
import asyncio, gc, json, sys, time
from datetime import UTC, datetime, timedelta
import httpx
url, token, sensor, run, session = sys.argv[1:6]
rate, seconds, per_tick = int(sys.argv[6]), float(sys.argv[7]), int(sys.argv[8])
tick = per_tick / rate
# Bodies are encoded before the clock starts, with a placeholder of the stamp's fixed width
# put in at send time: encoding 1000 readings took this process 2-3 ms, and that is the
# sender's own work, not the cloud's.
PLACEHOLDER = b"2000-01-01T00:00:00.000000+00:00"
ticks = int(seconds / tick)
bodies = [json.dumps({"sensor_id": sensor, "run_id": run, "capture_session_id": session,
    "readings": [{"timestamp": PLACEHOLDER.decode(), "raw_value": k * per_tick + i}
                 for i in range(per_tick)]}, separators=(",", ":")).encode()
          for k in range(ticks)]
# The cloud keeps one reading per sensor and timestamp: the readings of a POST are stamped a
# microsecond apart, the last with the clock just before the POST (so a latency is never
# made shorter than it was).
parts = [body.split(PLACEHOLDER) for body in bodies]
def stamped(k):
    now = datetime.now(UTC)
    first = now - timedelta(microseconds=per_tick - 1)
    if first.second == now.second:
        head, us = now.strftime("%Y-%m-%dT%H:%M:%S.").encode(), first.microsecond
        stamps = [head + b"%06d+00:00" % (us + i) for i in range(per_tick)]
    else:
        stamps = [(first + timedelta(microseconds=i)).strftime(
            "%Y-%m-%dT%H:%M:%S.%f+00:00").encode() for i in range(per_tick)]
    out = [b""] * (2 * per_tick + 1)
    out[0::2], out[1::2] = parts[k], stamps
    return b"".join(out)
async def main():
    async with httpx.AsyncClient(base_url=url, timeout=30) as c:
        await c.get("/healthz")
        pending = set()
        async def post(body):
            r = await c.post("/api/v1/telemetry", content=body, headers={
                "Authorization": "Bearer " + token, "Content-Type": "application/json"})
            if r.status_code != 202:
                print("error", r.status_code, r.text[:300], file=sys.stderr, flush=True)
        # What is built by now lives to the end: a full collection of it (tens of ms here)
        # would stall a POST after its stamp.
        gc.collect()
        gc.freeze()
        start = time.perf_counter()
        for k in range(ticks):
            delay = start + k * tick - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            t = asyncio.create_task(post(stamped(k)))
            pending.add(t)
            t.add_done_callback(pending.discard)
        await asyncio.gather(*pending)
        print(ticks * per_tick, flush=True)
asyncio.run(main())
"""


class StreamBroken(RuntimeError):
    """The stream sent something other than readings, or closed."""


async def _receive(
    url: str, bench: Bench, rate: int, seconds: float, batch: int, sampler: object
) -> tuple[list[float], int]:
    ws_url = (
        url.replace("http://", "ws://")
        + f"/api/v1/telemetry/stream?sensor_id={bench.sensor_id}&batch=true"
    )
    latencies: list[float] = []
    # raw_value k is the sender's k-th reading. Concurrent POSTs may commit (and so stream)
    # in another order than they were sent; each reading must still arrive exactly once.
    seen = bytearray(int(rate * seconds) + rate)
    async with connect(ws_url, additional_headers=bench.headers, max_size=None) as ws:
        hello = json.loads(await ws.recv())
        assert hello["type"] == "subscribed" and hello["batch"] is True, hello
        sender = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            SENDER,
            url,
            bench.token,
            bench.sensor_id,
            bench.run_id,
            bench.capture_session_id,
            str(rate),
            str(seconds),
            str(batch),
            stdout=subprocess.PIPE,
        )
        sent_task = asyncio.create_task(sender.communicate())

        async def receive() -> None:
            frames = 0
            async for raw in ws:
                received = time.time()
                msg = json.loads(raw)
                if msg["type"] != "readings":
                    raise StreamBroken(f"the stream sent {msg}")
                for item in msg["items"]:
                    k = int(item["raw_value"])
                    if seen[k]:
                        raise StreamBroken(f"reading {k} arrived twice")
                    seen[k] = 1
                    sent_at = datetime.fromisoformat(item["timestamp"]).timestamp()
                    latencies.append((received - sent_at) * 1000)
                frames += 1
                if frames % 20 == 0:
                    sampler.sample()  # type: ignore[attr-defined]
            raise StreamBroken(f"the stream closed: {ws.close_code} {ws.close_reason}")

        # The same for the measuring client: its own full collections would delay receipts.
        gc.collect()
        gc.freeze()
        receiver = asyncio.create_task(receive())
        # A broken stream ends the run at once, with its reason.
        await asyncio.wait({sent_task, receiver}, return_when=asyncio.FIRST_COMPLETED)
        if receiver.done():
            sender.kill()
            await sent_task
            receiver.result()
        out, _ = await sent_task
        expected = int(out.split()[0])
        # everything was sent; give the stream a moment to deliver the rest
        last_count, deadline = -1, time.monotonic() + 5
        while len(latencies) < expected and time.monotonic() < deadline and not receiver.done():
            if len(latencies) != last_count:
                last_count, deadline = len(latencies), time.monotonic() + 5
            await asyncio.sleep(0.05)
        if receiver.done():
            receiver.result()
        receiver.cancel()
    return latencies, expected


def latency(sizes: Sizes, logs: Path) -> Row:
    with pg_database() as url, Cloud(url, sizes.cloud_workers, logs / "cloud-live.log") as cloud:
        bench = bootstrap(cloud.url)
        assert cloud.rss is not None
        cloud.rss.reset()
        lat, sent = asyncio.run(
            _receive(
                cloud.url,
                bench,
                sizes.live_rate,
                sizes.live_seconds,
                sizes.live_batch,
                cloud.rss,
            )
        )
        if len(lat) < sent:  # and none twice: the missing ones never came
            raise RuntimeError(
                f"the stream delivered {len(lat)} of {sent} readings and then nothing for 5 s"
            )
        steady = lat[len(lat) // 10 :]  # the first tenth warms connections and caches
        q = statistics.quantiles(steady, n=100, method="inclusive")
        p50, p99 = statistics.median(steady), q[98]
        return Row(
            name="live_latency",
            what=f"live latency at {sizes.live_rate:,}/s, ms p99 (p50 {p50:.1f})",
            figure=p99,
            unit="ms",
            target="p99 < 50 ms",
            passed=p99 < 50,
            rss_mb={"cloud": cloud.rss.mb},
            extra={
                "p50_ms": round(p50, 2),
                "p99_ms": round(p99, 2),
                "readings": sent,
                "batch": sizes.live_batch,
            },
        )
