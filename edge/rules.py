"""The daemon's pull of its sensors' alarm rules (``GET /api/v1/sensors/{id}/edge-rules``,
each with its sensor's token), cached in the buffer (:mod:`edge.buffer.alarms`, which
evaluates them at each commit).

Pulled at start, every :data:`PULL_EVERY_S`, and after a sync round once the cloud answers
again (rules may have changed while it was away). A pull that fails keeps the cached rules:
a daemon restarted while the cloud is away evaluates the ones it last had. Sensor tokens,
not the edge's: every edge has them (``[edge] token`` is optional), and a token answers for
its own sensor's rules only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from pydantic import ValidationError

from common.edge_rules import EDGE_RULES_PATH, EdgeRules
from edge.buffer import Buffer
from edge.cloud_client import Requester, TransportError

log = logging.getLogger("benchlink.edge.alarms")

#: how often the rules are pulled again while the cloud answers
PULL_EVERY_S = 60.0


class RulePuller:
    def __init__(
        self,
        buffer: Buffer,
        client: Requester,
        sensor_ids: list[str],
        every_s: float = PULL_EVERY_S,
    ) -> None:
        self.buffer, self.client = buffer, client
        self.sensor_ids, self.every_s = sensor_ids, every_s
        self.wake = asyncio.Event()
        #: sensors whose last pull failed, with why (logged once until it changes)
        self.failing: dict[str, str] = {}
        self.pulls = 0

    def after_sync_round(self, sensor_id: str, answered: bool) -> None:
        """A sync round the cloud answered, for a sensor whose last pull failed: pull now."""
        if answered and sensor_id in self.failing:
            self.wake.set()

    async def run(self) -> None:
        while True:
            self.wake.clear()
            for sid in self.sensor_ids:
                try:
                    await self.pull(sid)
                except Exception:  # a bug or a busy buffer must not stop the daemon
                    log.exception("alarm rules of sensor %s: pull failed", sid)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.every_s):
                    await self.wake.wait()

    async def pull(self, sensor_id: str) -> bool:
        """Pull one sensor's rules into the buffer; False when the cloud did not give them."""
        token = await self.buffer.call(self.buffer.token, sensor_id)
        path = EDGE_RULES_PATH.format(sensor_id=sensor_id)
        try:
            answer = await self.client.request(
                "GET", path, None, {"Authorization": f"Bearer {token}"}
            )
        except TransportError as exc:
            return self._failed(sensor_id, f"cloud unreachable ({exc})")
        if answer.status != 200:
            return self._failed(sensor_id, f"answered {answer.status} {answer.text[:300]}")
        try:
            rules = EdgeRules.model_validate_json(answer.body)
        except ValidationError as exc:
            return self._failed(sensor_id, f"an answer this edge cannot read ({exc})"[:500])
        n = await self.buffer.call(self.buffer.set_rules, sensor_id, rules)
        self.pulls += 1
        if self.failing.pop(sensor_id, None) is not None or self.pulls <= len(self.sensor_ids):
            log.info("alarm rules of sensor %s: %d pulled from the cloud", sensor_id, n)
        return True

    def _failed(self, sensor_id: str, why: str) -> bool:
        if self.failing.get(sensor_id) != why:
            log.warning(
                "alarm rules of sensor %s: not pulled, %s; the cached ones are evaluated",
                sensor_id,
                why,
            )
        self.failing[sensor_id] = why
        return False
