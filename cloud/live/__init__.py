"""Live telemetry: the in-process hub, the cross-process bus, the database reads behind it
and stream tickets.

A committed ingest batch reaches every subscriber like this::

    ingest transaction -> commit position + pg_notify(header) --commit--> every process's
                 LISTEN -> Hub.announce
    Hub.announce -> (a subscriber matches?) rows: kept by this process's ingest, else read
                 -> Hub.dispatch -> subscriber queues

On SQLite there is one process: the after-commit listener announces the batch with its rows.
A resumed client gets what committed after its last event, in commit position order
(:mod:`cloud.live.positions`), from the ring of recent headers or from the database.
"""
