"""Live telemetry: the in-process hub, the cross-process bus and stream tickets.

A committed ingest batch reaches every subscriber like this::

    ingest (worker thread) -> Hub.on_ingest -> event loop -> Hub.dispatch -> subscriber queues
                                              \\-> PostgresBus NOTIFY -> other processes' hubs

On SQLite there is one process, so the hub alone does the fan-out.
"""
