"""Tables. The schema is the same on PostgreSQL and SQLite (Alembic creates it on both).

Telemetry, metrics and events are append-heavy: they get integer keys (cheap, ordered, good
for keyset pagination) and are written in bulk by Core statements or COPY, not ORM objects.

The tables are defined by area in the modules of this package; every one is imported here,
so ``from cloud.db import models`` gives them all as ``models.X`` and ``Base.metadata``
(what Alembic compares and builds) holds every table.
"""

from cloud.db.models.alarms import Alarm, AlarmRule, SensorFault
from cloud.db.models.api_state import IdempotencyRecord, StreamTicketUse
from cloud.db.models.base import NAMING, Base, BigId, TokenColumns, utcnow
from cloud.db.models.catalog import (
    Annotation,
    CaptureSession,
    Edge,
    Experiment,
    ExperimentTag,
    Project,
    Run,
    Sensor,
    SensorProfile,
)
from cloud.db.models.conversion import ReprocessedValue, ReprocessJob, SensorCalibration
from cloud.db.models.journal import Event, Webhook, WebhookDelivery
from cloud.db.models.telemetry import (
    Metric,
    TelemetryBatch,
    TelemetryBatchCommit,
    TelemetryReading,
    TelemetryRollup,
    TelemetrySeqRange,
)

__all__ = [
    "NAMING",
    "Alarm",
    "AlarmRule",
    "Annotation",
    "Base",
    "BigId",
    "CaptureSession",
    "Edge",
    "Event",
    "Experiment",
    "ExperimentTag",
    "IdempotencyRecord",
    "Metric",
    "Project",
    "ReprocessJob",
    "ReprocessedValue",
    "Run",
    "Sensor",
    "SensorCalibration",
    "SensorFault",
    "SensorProfile",
    "StreamTicketUse",
    "TelemetryBatch",
    "TelemetryBatchCommit",
    "TelemetryReading",
    "TelemetryRollup",
    "TelemetrySeqRange",
    "TokenColumns",
    "Webhook",
    "WebhookDelivery",
    "utcnow",
]
