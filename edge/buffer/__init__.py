"""The durable SQLite buffer (WAL): sensors, readings, sealed batches, dead letters.

- :mod:`~edge.buffer.core`: :class:`Buffer`, the connection, its thread and its transactions
- :mod:`~edge.buffer.records`: readings, writes, results, batches, dead letters
- :mod:`~edge.buffer.schema`: the tables and their named migrations
- :mod:`~edge.buffer.writes`: the group commit
- :mod:`~edge.buffer.inbox`: the de-duplication of redelivered MQTT messages
- :mod:`~edge.buffer.batches`: sealing, the send queue (what a batch holds: see there)
- :mod:`~edge.buffer.sensors`: sensors, tokens, bindings
- :mod:`~edge.buffer.operator`: retry, replay, retention, dead-letter rotation
- :mod:`~edge.buffer.reports`: status, gauges, the dead-letter list
- :mod:`~edge.buffer.faults`: device faults, as episodes waiting for the cloud
- :mod:`~edge.buffer.alarms`: alarm rules pulled from the cloud, evaluated at each commit

The modules hold the SQL; :class:`Buffer` opens the one transaction each public call runs in.
"""

from common.reading import meta_text
from edge.buffer.batches import MAX_BATCH_BYTES
from edge.buffer.core import (
    MAX_DEAD_LETTERS,
    MIN_FREE_BYTES,
    WAL_LIMIT_BYTES,
    Buffer,
    is_disk_full,
)
from edge.buffer.inbox import Delivery, message_digest
from edge.buffer.records import (
    DEAD,
    INFLIGHT,
    PENDING,
    SYNCED,
    Batch,
    BufferFull,
    DeadLetter,
    NewFault,
    NewReading,
    Write,
    WriteResult,
    reading_row_values,
    show,
    ts_text,
)
from edge.buffer.schema import SCHEME

__all__ = [
    "DEAD",
    "INFLIGHT",
    "MAX_BATCH_BYTES",
    "MAX_DEAD_LETTERS",
    "MIN_FREE_BYTES",
    "PENDING",
    "SCHEME",
    "SYNCED",
    "WAL_LIMIT_BYTES",
    "Batch",
    "Buffer",
    "BufferFull",
    "DeadLetter",
    "Delivery",
    "NewFault",
    "NewReading",
    "Write",
    "WriteResult",
    "is_disk_full",
    "message_digest",
    "meta_text",
    "reading_row_values",
    "show",
    "ts_text",
]
