"""Prometheus metrics of the edge daemon, in their own registry (not the process-global one)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server


class EdgeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.queue_depth = Gauge(
            "benchlink_edge_queue_depth", "Writes waiting for the group commit", registry=r
        )
        self.unsynced = Gauge(
            "benchlink_edge_unsynced_readings", "Readings in the buffer not yet synced", registry=r
        )
        self.buffer_bytes = Gauge(
            "benchlink_edge_buffer_bytes", "Bytes of live pages in the buffer", registry=r
        )
        self.committed = Counter(
            "benchlink_edge_readings_committed",
            "Readings committed to the buffer",
            ["source"],
            registry=r,
        )
        self.synced = Counter(
            "benchlink_edge_readings_synced",
            "Readings accepted by the cloud",
            ["sensor"],
            registry=r,
        )
        self.dropped = Counter(
            "benchlink_edge_readings_dropped",
            "Readings not stored (e.g. buffer_full on a serial port)",
            ["reason"],
            registry=r,
        )
        self.dead_lettered = Counter(
            "benchlink_edge_dead_lettered",
            "Items moved to the dead-letter table",
            ["kind"],
            registry=r,
        )
        self.dead_letters_rotated = Counter(
            "benchlink_edge_dead_letters_rotated",
            "Oldest dead-letter records deleted to keep buffer.max_dead_letters",
            registry=r,
        )
        self.errors = Counter("benchlink_edge_errors", "Errors by kind", ["kind"], registry=r)
        self.serial_faults = Counter(
            "benchlink_edge_serial_faults", "Device faults reported on serial", ["kind"], registry=r
        )
        self.serial_skipped = Counter(
            "benchlink_edge_serial_skipped",
            "Serial lines skipped (garbage, partial)",
            ["port"],
            registry=r,
        )
        self.serial_partial = Counter(
            "benchlink_edge_serial_partial_lines",
            "Serial lines dropped because they began before the port was (re)opened",
            ["port"],
            registry=r,
        )

    def serve(self, host: str, port: int) -> int:
        """Start the text endpoint in a thread; return the port it listens on."""
        server, _thread = start_http_server(port, host, registry=self.registry)
        return int(server.server_port)
