"""What feeds the demo while it runs, each in a thread: the scenario sensor streaming over
HTTP and a ``loss`` metric logged every 2 s; the first error of any stops the demo."""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from demo_scene import Scene
from demo_seed import Api
from demo_signal import Signal
from demo_telemetry import TelemetryClient, run_stream


@dataclass
class Producers:
    """Threads that feed the demo while it runs; the first error stops the demo."""

    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def spawn(self, name: str, target: Callable[[], object]) -> None:
        def guarded() -> None:
            try:
                target()
            except Exception as exc:  # reported by check(): a dead producer ends the demo
                self.errors.append(f"{name}: {type(exc).__name__}: {exc}")

        thread = threading.Thread(target=guarded, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def check(self) -> None:
        if self.errors:
            raise RuntimeError("; ".join(self.errors))

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)


def stream_scenario_sensor(scene: Scene, base_url: str, stop: threading.Event) -> Any:
    client = TelemetryClient(base_url, scene.token, scene.sensor_id, scene.run_id, scene.session_id)
    signal_ = Signal(profile="heat", scale=1.23, offset=0.2)  # raw = (T - b) / a
    try:
        return run_stream(
            client, signal_, duration_s=0, rate_hz=10, batch_size=5, should_stop=stop.is_set
        )
    finally:
        client.close()


def loss_at(step: int) -> float:
    return round(0.9 * math.exp(-step / 10) + 0.05 + random.uniform(0, 0.01), 4)


def log_metrics(api: Api, run_id: str, steps: range) -> None:
    now = datetime.now(UTC).isoformat()
    points = [{"name": "loss", "step": s, "value": loss_at(s), "timestamp": now} for s in steps]
    api.post(f"/api/v1/runs/{run_id}/metrics", {"metrics": points})


def metrics_while_running(
    api_factory: Callable[[], Api], run_id: str, stop: threading.Event
) -> int:
    api, step = api_factory(), 0
    try:
        while not stop.wait(2.0):
            step += 1
            log_metrics(api, run_id, range(step, step + 1))
    finally:
        api.close()
    return step
