"""Deleting and restoring runs and experiments from the client, against the real cloud: what
is deleted vanishes from reads at once, is listed until its purge time, and comes back with
its data; a DELETE whose answer is lost and retried still reports the deletion."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from benchlink import Client, Conflict, Deleted, Experiment, NotFound, Run
from tests.client.conftest import QUICK, new_project, send_readings
from tests.support.cloud import CloudServer

LINEAR = {"kind": "linear", "payload": {"a": 2.0, "b": 1.0}}


def test_a_run_is_deleted_listed_and_restored_with_its_data(
    cloud: CloudServer, client: Client
) -> None:
    new = client.sensors.create(
        "oven", type="thermocouple", input_unit="mV", display_unit="C", profile=LINEAR
    )
    exp = client.experiments.create("furnace")
    run = exp.runs.create("r", params={"setpoint_c": 420})
    keep = exp.runs.create("other")
    session = run.sessions.create(started_at=datetime.now(UTC) - timedelta(minutes=5))
    send_readings(cloud.url, new.token, new.sensor.id, session, [1.0, 2.0, 3.0])
    session.stop()

    gone = run.delete()
    assert isinstance(gone, Deleted)
    assert (gone.kind, gone.id, gone.name, gone.experiment_id) == ("run", run.id, "r", exp.id)
    assert gone.deleted_at is not None and gone.purge_after is not None
    assert gone.purge_after > gone.deleted_at and gone.purge_after.tzinfo is not None
    with pytest.raises(NotFound):
        client.runs.get(run.id)
    assert [r.id for r in exp.runs] == [keep.id]
    assert [(d.kind, d.id) for d in client.deleted()] == [("run", run.id)]
    # Deleting it again reports the same deletion (a DELETE acts once; see below).
    again = client.runs.delete(run.id)
    assert (again.id, again.purge_after) == (run.id, gone.purge_after)

    back = client.deleted()[0].restore()
    assert isinstance(back, Run) and back.id == run.id and back.params == {"setpoint_c": 420}
    assert client.deleted() == []
    assert list(client.runs.get(run.id).telemetry()["raw_value"]) == [1.0, 2.0, 3.0]

    client.runs.delete(run)
    restored = client.runs.restore(run.id)
    assert restored.id == run.id and client.runs.get(run.id).name == "r"


def test_an_experiment_takes_its_runs_with_it_and_brings_them_back(client: Client) -> None:
    exp = client.experiments.create("furnace", tags=["oven"])
    runs = [exp.runs.create(f"r{i}") for i in range(2)]

    gone = client.experiments.delete(exp.id)
    assert (gone.kind, gone.id, gone.name) == ("experiment", exp.id, "furnace")
    with pytest.raises(NotFound):
        client.experiments.get(exp.id)
    for r in runs:
        with pytest.raises(NotFound):
            client.runs.get(r.id)
    # The runs went with their experiment: listed only through it, restored only with it.
    assert [(d.kind, d.id) for d in client.deleted()] == [("experiment", exp.id)]
    with pytest.raises(Conflict, match="restore experiment"):
        client.runs.restore(runs[0].id)

    back = exp.restore()
    assert isinstance(back, Experiment) and back is exp and exp.tags == ["oven"]
    assert sorted(r.id for r in exp.runs) == sorted(r.id for r in runs)
    assert client.deleted() == []

    exp.delete()
    assert client.experiments.restore(exp.id).id == exp.id
    assert client.experiments.get(exp.id).name == "furnace"


def test_deleting_what_does_not_exist_is_not_found(client: Client) -> None:
    exp = client.experiments.create("e")
    run = exp.runs.create("r")
    exp.delete()
    # Deleted with its experiment, the run is not in the deleted list: not found on its own.
    with pytest.raises(NotFound):
        client.runs.delete(run.id)
    with pytest.raises(NotFound):
        client.runs.delete("00000000-0000-4000-8000-000000000000")


class LoseDeleteAnswer(httpx.BaseTransport):
    """Sends each request for real; the first DELETE's answer is read and then dropped, as a
    connection reset after the server acted would."""

    def __init__(self) -> None:
        self.real = httpx.HTTPTransport()
        self.deletes = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.real.handle_request(request)
        if request.method == "DELETE":
            self.deletes += 1
            if self.deletes == 1:
                assert response.status_code == 200
                response.read()
                response.close()
                raise httpx.ReadError("connection reset after the server answered")
        return response

    def close(self) -> None:
        self.real.close()


def test_a_delete_whose_answer_is_lost_reports_the_deletion(cloud: CloudServer) -> None:
    owner = new_project(cloud.url)
    lossy = LoseDeleteAnswer()
    cfg = owner.config
    with (
        owner,
        Client(
            cloud.url, user=cfg.user, project=cfg.project, role="owner", retry=QUICK,
            transport=lossy,
        ) as client,
    ):  # fmt: skip
        run = owner.experiments.create("e").runs.create("r")
        gone = client.runs.get(run.id).delete()
        assert lossy.deletes == 2  # the retry found it deleted (404) ...
        assert (gone.kind, gone.id) == ("run", run.id)  # ... and still reports the deletion
        assert [d.id for d in owner.deleted()] == [run.id]
