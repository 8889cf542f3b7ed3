"""The operator CLI in-process: what it refuses, what it never prints."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from edge.buffer import Buffer
from edge.cli import EXIT_CONFIG, main
from tests.edge.helpers import write_config

TOKEN = "bl_s3cr3t"


def sensor(**extra: object) -> dict[str, object]:
    return {  # the token first: pydantic shortens a long input_value after ~50 characters
        "token": TOKEN,
        "sensor_id": str(uuid.uuid4()),
        "run_id": str(uuid.uuid4()),
        "capture_session_id": str(uuid.uuid4()),
        "source": "mqtt",
        **extra,
    }


@pytest.mark.parametrize(
    "bad",
    [
        {"source": "serial"},  # no port: the sensor table's own validator refuses it
        {"run_id": "not-a-uuid"},
        {"baudrate": "fast"},
        {"colour": "red"},
    ],
)
def test_a_bad_config_never_prints_the_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: dict[str, object]
) -> None:
    cfg = write_config(
        tmp_path / "edge.toml",
        cloud_url="http://127.0.0.1:1",
        buffer=tmp_path / "b.db",
        sensors=[sensor(**bad)],
    )
    assert main(["--config", str(cfg), "status"]) == EXIT_CONFIG
    out = capsys.readouterr()
    assert "config" in out.err
    assert TOKEN not in out.out + out.err
    assert "s3cr3t" not in out.out + out.err


def test_bind_takes_uuids_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    s = sensor()
    cfg = write_config(
        tmp_path / "edge.toml",
        cloud_url="http://127.0.0.1:1",
        buffer=tmp_path / "b.db",
        sensors=[s],
    )
    buf = Buffer(tmp_path / "b.db")
    buf.upsert_sensor(str(s["sensor_id"]), TOKEN, "mqtt", str(s["run_id"]), "x")
    buf.close()
    run, ses = str(uuid.uuid4()), str(uuid.uuid4())
    for args in (
        [str(s["sensor_id"]), "--run-id", "run-42", "--capture-session-id", ses],
        [str(s["sensor_id"]), "--run-id", run, "--capture-session-id", "' OR 1=1"],
        ["sensor-a", "--run-id", run, "--capture-session-id", ses],
    ):
        with pytest.raises(SystemExit) as exit_:
            main(["--config", str(cfg), "bind", *args])
        assert exit_.value.code == 2
        assert "is not a UUID" in capsys.readouterr().err
    assert main(["--config", str(cfg), "bind", str(s["sensor_id"]), "--run-id", run.upper(),
                 "--capture-session-id", ses]) == 0  # fmt: skip
    buf = Buffer(tmp_path / "b.db")
    try:
        assert buf.sensors()[0]["run_id"] == run  # canonical form
    finally:
        buf.close()
