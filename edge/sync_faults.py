"""Sending a sensor's device-fault episodes (:mod:`edge.buffer.faults`) to the cloud.

A sensor's sync loop sends them before its next batch (:class:`edge.sync.SensorSync`): the
cloud evaluates a rule in time order and leaves out what is older than what it has seen, so
a fault must reach it before the readings that followed it (the first of which ends the
fault's alarm). Each episode goes as it stands, under its own id: a repeat after a lost
answer changes nothing in the cloud. The answers are read like a batch's (see
:func:`edge.sync.classify`): sent, retry later (the batches wait too), or refused for good
(the episode goes to the dead letters and the next one is sent).
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec

from common.faults import FAULTS_PATH
from edge.buffer import Buffer
from edge.cloud_client import Poster, TransportError
from edge.sync import Outcome, classify

log = logging.getLogger("benchlink.edge.sync")


def body(row: dict[str, Any]) -> bytes:
    """The episode as the cloud takes it (:class:`common.faults.FaultEpisode`)."""
    return msgspec.json.encode(
        {
            "episode_id": row["episode"],
            "run_id": row["run_id"],
            "capture_session_id": row["capture_session_id"],
            "kind": row["kind"],
            "first_timestamp": row["first_ts"],
            "last_timestamp": row["last_ts"],
            "count": row["count"],
            "detail": row["detail"],
        }
    )


async def send_faults(client: Poster, buffer: Buffer, sensor_id: str) -> Outcome | None:
    """Send the sensor's episodes that have news, oldest first; None when the cloud has them
    all (or refused some for good), else the outcome to retry after."""
    while True:
        todo, token = await buffer.call(
            lambda: (buffer.unsent_faults(sensor_id), buffer.token(sensor_id))
        )
        if not todo:
            return None
        for row in todo:
            outcome = await _post(client, sensor_id, token, row)
            episode = row["episode"]
            if outcome.kind == "synced":
                await buffer.call(buffer.mark_fault_sent, episode, row["count"])
            elif outcome.kind == "retry":
                await buffer.call(buffer.mark_fault_retry, episode, outcome.detail)
                return outcome
            else:
                await buffer.call(buffer.mark_fault_dead, episode, outcome.detail)
                log.error(
                    "fault episode %s of sensor %s (%s, %d fault(s)) dead-lettered: %s",
                    episode,
                    sensor_id,
                    row["kind"],
                    row["count"],
                    outcome.detail,
                )


async def _post(client: Poster, sensor_id: str, token: str, row: dict[str, Any]) -> Outcome:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    try:
        response = await client.post(FAULTS_PATH.format(sensor_id=sensor_id), body(row), headers)
    except TransportError as exc:
        return Outcome("retry", str(exc))
    outcome = classify(response)
    # A 422 naming fields of the episode is no "readings.N" split, and a 409 conflict is a
    # session not started: the episode is refused (a batch would be too, after its retries).
    refused = outcome.kind == "split" or outcome.conflict
    return Outcome("dead", outcome.detail) if refused else outcome
