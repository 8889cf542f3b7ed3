"""Alarm transitions on the live stream: raised, acknowledged and cleared reach a watching
client between the readings, on one process (SQLite) and from one process to another
(PostgreSQL, NOTIFYed by the transaction that made them)."""

from __future__ import annotations

from pathlib import Path

import httpx
from websockets.asyncio.client import connect

from tests.live.helpers import TICKET_SECRET, ingest, next_message, readings, ws_url
from tests.support.cloud import Bench, CloudServer, bootstrap


def _rule(bench: Bench, base_url: str, threshold: float) -> None:
    r = httpx.post(
        f"{base_url}/api/v1/sensors/{bench.sensor_id}/alarm-rules",
        json={"kind": "above", "threshold": threshold, "hysteresis": 1},
        headers=bench.headers,
    )
    assert r.status_code == 201, r.text


async def test_raised_acknowledged_and_cleared_come_between_the_readings(
    server: CloudServer, bench: Bench
) -> None:
    _rule(bench, server.url, 20.0)  # values are 2 * raw + 1
    async with (
        connect(ws_url(server.url, run_id=bench.run_id), additional_headers=bench.headers) as ws,
        connect(
            ws_url(server.url, run_id=bench.run_id, batch="1"), additional_headers=bench.headers
        ) as batched,  # fmt: skip
    ):
        assert (await next_message(ws))["type"] == "subscribed"
        assert (await next_message(batched))["type"] == "subscribed"
        await ingest(server.url, bench, [1.0, 12.0, 13.0], ago_s=5)
        assert [m["value"] for m in await readings(ws, 3)] == [3.0, 25.0, 27.0]
        raised = await next_message(ws)
        assert raised["type"] == "alarm.raised" and raised["value"] == 25.0, raised
        assert raised["sensor_id"] == bench.sensor_id and raised["late"] is False
        group = await next_message(batched)
        assert group["type"] == "readings" and len(group["items"]) == 3
        assert (await next_message(batched))["type"] == "alarm.raised"

        r = httpx.post(f"{server.url}/api/v1/alarms/{raised['alarm_id']}/ack",
                       json={"note": "on it"}, headers=bench.headers)  # fmt: skip
        assert r.status_code == 200, r.text
        acked = await next_message(ws)
        assert acked["type"] == "alarm.acknowledged" and acked["state"] == "acknowledged"
        assert acked["acknowledged_by"] == f"user:{bench.owner_user_id}"

        await ingest(server.url, bench, [5.0], ago_s=1)
        await readings(ws, 1)
        cleared = await next_message(ws)
        assert cleared["type"] == "alarm.cleared" and cleared["cleared_at"] is not None


async def test_an_alarm_raised_on_one_process_reaches_a_client_of_the_other(
    pg_url: str, tmp_path: Path
) -> None:
    env = {"BENCHLINK_STREAM_TICKET_SECRET": TICKET_SECRET}
    with (
        CloudServer(pg_url, env=env, log_path=tmp_path / "a.log") as a,
        CloudServer(pg_url, env=env, log_path=tmp_path / "b.log") as b,
    ):
        bench = bootstrap(a.url)
        _rule(bench, a.url, 20.0)
        url = ws_url(b.url, sensor_id=bench.sensor_id)
        async with connect(url, additional_headers=bench.headers) as remote:
            assert (await next_message(remote))["type"] == "subscribed"
            await ingest(a.url, bench, [30.0], ago_s=5)
            [reading] = await readings(remote, 1)
            raised = await next_message(remote)
            assert raised["type"] == "alarm.raised" and raised["value"] == reading["value"], raised
