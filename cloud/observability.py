"""Prometheus metrics of the cloud service (one registry per app, so tests stay isolated)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram

if TYPE_CHECKING:
    from cloud.services.telemetry import Ingested


class Stats:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "benchlink_http_requests_total",
            "HTTP requests",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "benchlink_http_request_seconds",
            "HTTP request latency",
            ["route"],
            registry=self.registry,
        )
        self.readings = Counter(
            "benchlink_readings_ingested_total", "telemetry readings stored", registry=self.registry
        )
        self.batches = Counter(
            "benchlink_telemetry_batches_total",
            "telemetry batches",
            ["outcome"],
            registry=self.registry,
        )
        self.duplicate_readings = Counter(
            "benchlink_duplicate_readings_total",
            "telemetry readings dropped: the sensor had them (same timestamp, same raw value)",
            registry=self.registry,
        )
        self.replays = Counter(
            "benchlink_idempotent_replays_total",
            "responses replayed for a repeated key",
            registry=self.registry,
        )

    def readings_ingested(self, ingested: Ingested) -> None:
        if ingested.replayed:
            self.batches.labels("duplicate").inc()
            return
        self.batches.labels("stored").inc()
        self.duplicate_readings.inc(ingested.answer.duplicate)
        if ingested.published is not None:
            self.readings.inc(len(ingested.published.rows))
