"""The live stream against a real server on SQLite: order, filters, isolation, SSE, resume."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.live.helpers import (
    ingest,
    next_message,
    nothing_more,
    readings,
    register_sensor,
    sse_events,
    take,
    ws_url,
)
from tests.support.cloud import Bench, CloudServer, bootstrap


async def test_websocket_pushes_every_reading_in_order_with_converted_values(
    server: CloudServer, bench: Bench
) -> None:
    url = ws_url(server.url, sensor_id=bench.sensor_id)
    async with connect(url, additional_headers=bench.headers) as ws:
        hello = await next_message(ws)
        assert hello["type"] == "subscribed"
        assert hello["filter"]["sensor_id"] == bench.sensor_id
        started = time.perf_counter()
        await ingest(server.url, bench, [0.5])
        first = (await readings(ws, 1))[0]
        latency = time.perf_counter() - started
        for k in range(3):
            await ingest(server.url, bench, [k * 100 + i for i in range(100)])
        got = await readings(ws, 300)
        await nothing_more(ws)
    assert latency < 1.0, f"first reading took {latency:.3f}s (including the POST)"
    assert first["raw_value"] == 0.5 and first["value"] == 2.0  # linear a=2, b=1
    assert [m["raw_value"] for m in got] == [float(i) for i in range(300)]
    assert all(m["value"] == 2 * m["raw_value"] + 1 for m in got)
    assert {m["unit"] for m in got} == {"°C"}  # registered as "C": the canonical spelling
    assert {m["capture_session_id"] for m in got} == {bench.capture_session_id}
    assert {m["run_id"] for m in got} == {bench.run_id}
    assert {m["late"] for m in got} == {False}
    ids = [m["id"] for m in [first, *got]]
    assert len(set(ids)) == len(ids)
    batches = [int(i.split("-")[0]) for i in ids]
    assert batches == sorted(batches)
    # each reading names its batch's commit position: one per batch, growing with each batch
    positions = [m["position"] for m in [first, *got]]
    assert [positions[0], *positions[1::100]] == sorted(set(positions)) and len(set(positions)) == 4
    assert got[0]["timestamp"].endswith("+00:00")


async def test_a_client_sees_only_what_its_filter_names(server: CloudServer, bench: Bench) -> None:
    other_sensor, other_token = register_sensor(bench)
    stranger = bootstrap(server.url)
    headers = bench.headers
    async with (
        connect(
            ws_url(server.url, sensor_id=bench.sensor_id), additional_headers=headers
        ) as by_sensor,
        connect(ws_url(server.url, run_id=bench.run_id), additional_headers=headers) as by_run,
        connect(
            ws_url(server.url, capture_session_id=bench.capture_session_id, sensor_id=other_sensor),
            additional_headers=headers,
        ) as by_session_and_sensor,
    ):
        for ws in (by_sensor, by_run, by_session_and_sensor):
            assert (await next_message(ws))["type"] == "subscribed"
        await ingest(server.url, stranger, [7.0, 7.0])  # another project entirely
        await ingest(server.url, bench, [1.0, 2.0])
        await ingest(server.url, bench, [3.0], sensor_id=other_sensor, token=other_token)

        mine = await readings(by_sensor, 2)
        whole_run = await readings(by_run, 3)
        other = await readings(by_session_and_sensor, 1)
        for ws in (by_sensor, by_run, by_session_and_sensor):
            await nothing_more(ws, 0.3)
    assert [m["raw_value"] for m in mine] == [1.0, 2.0]
    assert {m["sensor_id"] for m in mine} == {bench.sensor_id}
    assert [m["raw_value"] for m in whole_run] == [1.0, 2.0, 3.0]
    assert [(m["sensor_id"], m["raw_value"]) for m in other] == [(other_sensor, 3.0)]


@pytest.mark.parametrize("key", ["sensor_id", "run_id", "capture_session_id"])
async def test_another_projects_ids_are_refused_like_rest(
    server: CloudServer, bench: Bench, key: str
) -> None:
    stranger = bootstrap(server.url)
    foreign = getattr(stranger, key)
    with pytest.raises(InvalidStatus) as refused:
        async with connect(ws_url(server.url, **{key: foreign}), additional_headers=bench.headers):
            pass
    assert refused.value.response.status_code == 404
    async with httpx.AsyncClient(base_url=server.url, headers=bench.headers) as c:
        sse = await c.get("/api/v1/telemetry/stream/sse", params={key: foreign})
        rest = await c.get("/api/v1/telemetry", params={key: foreign, "limit": 1})
        series = await c.get("/api/v1/telemetry/series", params={"sensor_id": stranger.sensor_id})
    assert sse.status_code == 404
    assert sse.headers["content-type"] == "application/problem+json"
    assert series.status_code == 404
    # The REST listing answers an empty page, never the other project's readings.
    assert rest.status_code in (200, 404) and rest.json().get("items", []) == []


async def test_identity_and_filter_are_required(server: CloudServer, bench: Bench) -> None:
    with pytest.raises(InvalidStatus) as anonymous:
        async with connect(ws_url(server.url, sensor_id=bench.sensor_id)):
            pass
    assert anonymous.value.response.status_code == 401
    with pytest.raises(InvalidStatus) as unfiltered:
        async with connect(ws_url(server.url), additional_headers=bench.headers):
            pass
    assert unfiltered.value.response.status_code == 422
    with pytest.raises(InvalidStatus) as malformed:
        async with connect(ws_url(server.url, run_id="nope"), additional_headers=bench.headers):
            pass
    assert malformed.value.response.status_code == 422


async def test_sse_carries_the_same_events_and_resumes_after_last_event_id(
    server: CloudServer, bench: Bench
) -> None:
    params = {"capture_session_id": bench.capture_session_id}
    async with httpx.AsyncClient(base_url=server.url, headers=bench.headers, timeout=30) as c:
        async with c.stream("GET", "/api/v1/telemetry/stream/sse", params=params) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            events = sse_events(r)
            (hello,) = await take(events, 1)
            assert hello["event"] == "subscribed"
            await ingest(server.url, bench, [1.0, 2.0, 3.0])
            first = await take(events, 3)
        assert [e["event"] for e in first] == ["reading"] * 3
        assert [e["data"]["raw_value"] for e in first] == [1.0, 2.0, 3.0]
        assert all(e["id"] == e["data"]["id"] for e in first)

        # Disconnected: these arrive while nobody listens.
        await ingest(server.url, bench, [4.0, 5.0])
        await ingest(server.url, bench, [6.0])

        resume = {"Last-Event-ID": first[-1]["id"]}
        async with c.stream(
            "GET", "/api/v1/telemetry/stream/sse", params=params, headers=resume
        ) as r:
            events = sse_events(r)
            (hello,) = await take(events, 1)
            assert hello["data"]["resumed_from"] == first[-1]["id"]
            missed = await take(events, 3)
            await ingest(server.url, bench, [7.0])
            live = await take(events, 1)
    values = [e["data"]["raw_value"] for e in [*missed, *live]]
    assert values == [4.0, 5.0, 6.0, 7.0]  # no gap, nothing twice


async def test_websocket_resumes_too_and_an_unknown_resume_point_says_reset(
    server: CloudServer, bench: Bench
) -> None:
    url = ws_url(server.url, sensor_id=bench.sensor_id)
    async with connect(url, additional_headers=bench.headers) as ws:
        await next_message(ws)
        await ingest(server.url, bench, [1.0, 2.0])
        seen = await readings(ws, 2)
    await ingest(server.url, bench, [3.0])
    resumed = ws_url(server.url, sensor_id=bench.sensor_id, last_event_id=seen[0]["id"])
    async with connect(resumed, additional_headers=bench.headers) as ws:
        await next_message(ws)
        assert [m["raw_value"] for m in await readings(ws, 2)] == [2.0, 3.0]
    lost = ws_url(server.url, sensor_id=bench.sensor_id, last_event_id="1-999999")
    async with connect(lost, additional_headers=bench.headers) as ws:
        await next_message(ws)
        reset = await next_message(ws)
    assert reset["type"] == "reset"


async def test_resume_reads_the_database_however_much_other_projects_ingested_meanwhile(
    server: CloudServer, bench: Bench
) -> None:
    # The old in-memory ring held the newest 20,000 events of every project: this much
    # traffic elsewhere pushed a client's resume point out of it.
    url = ws_url(server.url, sensor_id=bench.sensor_id)
    async with connect(url, additional_headers=bench.headers) as ws:
        await next_message(ws)
        await ingest(server.url, bench, [1.0, 2.0])
        seen = await readings(ws, 2)
    stranger = bootstrap(server.url)
    for k in range(11):
        await ingest(server.url, stranger, [float(i) for i in range(2000)], ago_s=50 - k)
    await ingest(server.url, bench, [3.0, 4.0])
    resumed = ws_url(server.url, sensor_id=bench.sensor_id, last_event_id=seen[0]["id"])
    async with connect(resumed, additional_headers=bench.headers) as ws:
        assert (await next_message(ws))["resumed_from"] == seen[0]["id"]
        missed = await readings(ws, 3)
        await nothing_more(ws, 0.3)
    assert missed[0] == seen[1]
    assert [m["raw_value"] for m in missed] == [2.0, 3.0, 4.0]


async def test_batch_frames_carry_the_same_readings_as_one_frame_each(
    server: CloudServer, bench: Bench
) -> None:
    single = ws_url(server.url, sensor_id=bench.sensor_id)
    batched = ws_url(server.url, sensor_id=bench.sensor_id, batch="true")
    params = {"sensor_id": bench.sensor_id, "batch": "true"}
    async with (
        connect(single, additional_headers=bench.headers) as one_each,
        connect(batched, additional_headers=bench.headers, max_size=None) as grouped,
        httpx.AsyncClient(base_url=server.url, headers=bench.headers, timeout=30) as c,
        c.stream("GET", "/api/v1/telemetry/stream/sse", params=params) as r,
    ):
        events = sse_events(r)
        assert (await take(events, 1))[0]["data"]["batch"] is True
        assert (await next_message(one_each))["batch"] is False
        assert (await next_message(grouped))["batch"] is True
        await ingest(server.url, bench, [float(i) for i in range(1200)])
        await ingest(server.url, bench, [-1.0])
        expected = await readings(one_each, 1201)
        frames: list[dict[str, Any]] = []
        async with asyncio.timeout(10):
            while sum(len(f["items"]) for f in frames) < 1201:
                frames.append(await next_message(grouped))
        sse_items: list[dict[str, Any]] = []
        async with asyncio.timeout(10):
            while len(sse_items) < 1201:
                ev = await anext(events)
                assert ev["event"] == "readings" and ev["id"] == ev["data"]["items"][-1]["id"]
                sse_items += ev["data"]["items"]
        await nothing_more(grouped, 0.3)
    assert {f["type"] for f in frames} == {"readings"}
    assert 2 <= len(frames) <= 3  # at most 1000 readings a message
    assert [m for f in frames for m in f["items"]] == expected
    assert sse_items == expected


async def test_a_stream_closed_before_its_first_reading_resumes_from_where_it_started(
    server: CloudServer, bench: Bench
) -> None:
    url = ws_url(server.url, sensor_id=bench.sensor_id)
    async with connect(url, additional_headers=bench.headers) as ws:
        hello = await next_message(ws)
        await nothing_more(ws, 0.2)
    assert hello["id"].startswith("p") and hello["resumed_from"] is None
    # Nobody listens: these are stored after the stream started and before it resumes.
    await ingest(server.url, bench, [1.0, 2.0])
    await ingest(server.url, bench, [3.0])
    resumed = ws_url(server.url, sensor_id=bench.sensor_id, last_event_id=hello["id"])
    async with connect(resumed, additional_headers=bench.headers) as ws:
        again = await next_message(ws)
        missed = await readings(ws, 3)
        await ingest(server.url, bench, [4.0])
        live = await readings(ws, 1)
        await nothing_more(ws, 0.3)
    assert again["resumed_from"] == again["id"] == hello["id"]
    assert [m["raw_value"] for m in [*missed, *live]] == [1.0, 2.0, 3.0, 4.0]
    # A position no batch has reached (another database's): reset, and live from now on.
    unknown = ws_url(server.url, sensor_id=bench.sensor_id, last_event_id="p999999999")
    async with connect(unknown, additional_headers=bench.headers) as ws:
        fresh = await next_message(ws)
        assert (await next_message(ws))["type"] == "reset"
        await ingest(server.url, bench, [5.0])
        assert [m["raw_value"] for m in await readings(ws, 1)] == [5.0]
    assert fresh["id"].startswith("p") and fresh["id"] != "p999999999"


async def test_sse_subscribed_event_carries_where_it_started_and_last_event_id_resumes_there(
    server: CloudServer, bench: Bench
) -> None:
    params = {"run_id": bench.run_id}
    async with httpx.AsyncClient(base_url=server.url, headers=bench.headers, timeout=30) as c:
        async with c.stream("GET", "/api/v1/telemetry/stream/sse", params=params) as r:
            (hello,) = await take(sse_events(r), 1)
        # What an EventSource would send on reconnecting: the last id it saw.
        assert hello["event"] == "subscribed" and hello["id"] == hello["data"]["id"]
        await ingest(server.url, bench, [1.0, 2.0])
        resume = {"Last-Event-ID": hello["id"]}
        async with c.stream(
            "GET", "/api/v1/telemetry/stream/sse", params=params, headers=resume
        ) as r:
            events = sse_events(r)
            (again,) = await take(events, 1)
            missed = await take(events, 2)
    assert again["id"] == hello["id"] and again["data"]["resumed_from"] == hello["id"]
    assert [e["data"]["raw_value"] for e in missed] == [1.0, 2.0]
