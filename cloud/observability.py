"""Prometheus metrics of the cloud service (one registry per app, so tests stay isolated)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from cloud.db.uow import read_only

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

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
        self.webhook_attempts = Counter(
            "benchlink_webhook_attempts_total",
            "webhook delivery attempts: delivered, retry (failed, tried again), failed (given up)",
            ["outcome"],
            registry=self.registry,
        )
        self.replays = Counter(
            "benchlink_idempotent_replays_total",
            "responses replayed for a repeated key",
            registry=self.registry,
        )

        self.alarm_transitions = Counter(
            "benchlink_alarm_transitions_total",
            "alarm transitions committed, by the rule's kind and the transition"
            " (raised, acknowledged, cleared)",
            ["kind", "transition"],
            registry=self.registry,
        )

    def watch_edges(self, sessions: sessionmaker[Session]) -> None:
        """``benchlink_edges{state}``: edges by health, read from the database at each
        scrape (staleness is a matter of the time of reading, not of any write)."""
        self.registry.register(EdgeHealth(sessions))

    def readings_ingested(self, ingested: Ingested) -> None:
        if ingested.replayed:
            self.batches.labels("duplicate").inc()
            return
        self.batches.labels("stored").inc()
        self.duplicate_readings.inc(ingested.answer.duplicate)
        for published in ingested.publications():
            self.readings.inc(len(published.rows))

    def alarms_committed(self, messages: list[dict[str, Any]]) -> None:
        """Alarm transitions as their live messages say them (``type`` ``alarm.raised``...),
        counted once their transaction committed: a rolled-back one never happened."""
        for message in messages:
            transition = message["type"].removeprefix("alarm.")
            self.alarm_transitions.labels(message["kind"], transition).inc()


class EdgeHealth(Collector):
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def describe(self) -> list[GaugeMetricFamily]:
        # Without it the registry would collect (query the database) when registering.
        return [
            GaugeMetricFamily("benchlink_edges", "", labels=["state"]),
            GaugeMetricFamily("benchlink_edge_health", "", labels=["rule"]),
        ]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from cloud.health import counts_by_rule
        from cloud.services.edges import counts_by_state

        gauge = GaugeMetricFamily(
            "benchlink_edges",
            "registered edges by state: never (no heartbeat yet), online, stale (silent for"
            " more than 3 of its heartbeat periods)",
            labels=["state"],
        )
        try:
            with read_only(self.sessions) as db:
                counts = counts_by_state(db, datetime.now(UTC))
                by_rule = counts_by_rule(db)
        except Exception:  # a scrape while the database is down: the gauge is absent
            return
        for state, n in counts.items():
            gauge.add_metric([state], n)
        yield gauge
        conditions = GaugeMetricFamily(
            "benchlink_edge_health",
            "health conditions in force, by rule (docs/fleet.md, Health rules): edge_silent,"
            " sensor_silent, backlog_old, clock_offset, buffer_full",
            labels=["rule"],
        )
        for rule, n in by_rule.items():
            conditions.add_metric([rule], n)
        yield conditions
