"""A run's and an experiment's journal from the client, filtered by kind on the server (the
filter was once dropped on the way and every event came back)."""

from __future__ import annotations

from benchlink import Client


def test_events_by_kind(client: Client) -> None:
    exp = client.experiments.create("journal")
    run = exp.runs.create("r", params={"lr": 0.1})
    run.set_status("succeeded")
    kinds = [e["kind"] for e in run.events()]
    assert "run.created" in kinds and len(set(kinds)) > 1
    only = [e["kind"] for e in run.events(kind="run.created")]
    assert only == ["run.created"]
    assert [e["kind"] for e in run.events(kind="no.such.kind")] == []
