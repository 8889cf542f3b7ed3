"""Where readings are written and read: :class:`~cloud.store.telemetry.base.TelemetryStore`
and its PostgreSQL and SQLite implementations."""
