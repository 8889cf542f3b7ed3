"""A run's data as frames, against a real cloud: readings with a tz-aware UTC index, raw and
converted values and the units of the profile version that converted each; metrics; a
chart-sized series; pandas, Arrow and polars alike."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

from benchlink import CaptureSession, Client, NewSensor
from tests.client.conftest import send_readings
from tests.support.cloud import CloudServer

LINEAR = {"kind": "linear", "payload": {"a": 2.0, "b": 1.0}}


def _sensor(client: Client, name: str = "oven") -> NewSensor:
    return client.sensors.create(
        name, type="thermocouple", input_unit="mV", display_unit="C", profile=LINEAR
    )


def _session(client: Client) -> CaptureSession:
    return client.experiments.create("e").runs.create("r").sessions.create()


def test_telemetry_is_a_frame_with_utc_index_values_and_units(
    cloud: CloudServer, client: Client
) -> None:
    new, session = _sensor(client), _session(client)
    times = send_readings(cloud.url, new.token, new.sensor.id, session, [1.0, 2.0, 3.5])
    # A unit change makes profile version v2, effective from just after the readings sent:
    # later readings carry its units.
    after = (times[-1] + timedelta(microseconds=1)).isoformat()
    sensor = client.http.request(
        "PATCH",
        f"/api/v1/sensors/{new.sensor.id}",
        json={"display_unit": "K", "effective_from": after},
    )
    assert sensor["conversion_profile"]["version"] == "v2"  # errors raise
    later = send_readings(
        cloud.url, new.token, new.sensor.id, session, [4.0], start=times[-1] + timedelta(seconds=1)
    )
    run = client.runs.get(session.run_id)

    df = run.telemetry(sensor=new.sensor)

    assert isinstance(df.index, pd.DatetimeIndex) and str(df.index.tz) == "UTC"
    assert list(df.index) == [pd.Timestamp(t) for t in [*times, *later]]
    assert list(df["raw_value"]) == [1.0, 2.0, 3.5, 4.0]
    # linear declares no output unit: a new display unit labels the value, it converts nothing
    assert list(df["value"]) == [3.0, 5.0, 8.0, 9.0]
    assert list(df["profile_version"]) == ["v1", "v1", "v1", "v2"]
    assert list(df["unit"]) == ["°C", "°C", "°C", "K"] and set(df["raw_unit"]) == {"mV"}
    assert set(df["sensor"]) == {"oven"} and set(df["capture_session_id"]) == {session.id}
    assert not df["late"].any()
    v1 = run.telemetry(sensor="oven", profile_version="v1")
    assert list(v1["raw_value"]) == [1.0, 2.0, 3.5]
    window = run.telemetry(since=times[1], until=times[2])
    assert list(window["raw_value"]) == [2.0]


def test_pages_are_followed_and_frames_come_as_arrow_and_polars(
    cloud: CloudServer, client: Client
) -> None:
    new, session = _sensor(client), _session(client)
    raws = [float(i) for i in range(7)]
    send_readings(cloud.url, new.token, new.sensor.id, session, raws)
    run = client.runs.get(session.run_id)

    batches = list(run.data.telemetry_batches(page_size=3))
    table = run.telemetry(frame="arrow")
    polars = run.telemetry(frame="polars")

    assert [len(b) for b in batches] == [3, 3, 1]
    assert list(pd.concat(batches)["raw_value"]) == raws
    assert isinstance(table, pa.Table) and table.column("raw_value").to_pylist() == raws
    assert table.schema.field("timestamp").type == pa.timestamp("us", tz="UTC")
    assert table.column("unit").to_pylist() == ["°C"] * 7
    assert isinstance(polars, pl.DataFrame) and polars["value"].to_list() == [
        2 * r + 1 for r in raws
    ]
    assert polars.schema["timestamp"] == pl.Datetime("us", "UTC")


def test_metrics_and_series_frames(cloud: CloudServer, client: Client) -> None:
    new, session = _sensor(client), _session(client)
    send_readings(cloud.url, new.token, new.sensor.id, session, [float(i % 10) for i in range(100)])
    run = client.runs.get(session.run_id)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for step in range(5):
        run.log_metrics(
            {"loss": 1.0 / (step + 1), "lr": 0.1},
            step=step,
            timestamp=start + timedelta(minutes=step),
        )
    run.log_metrics({"temp": 21.5}, step=0, unit="degC")
    run.flush()

    loss = run.metrics("loss")
    every = run.metrics()
    chart = run.series(new.sensor, max_points=10)

    assert list(loss.index) == [0, 1, 2, 3, 4] and loss.index.name == "step"
    assert list(loss["value"]) == pytest.approx([1.0, 0.5, 1 / 3, 0.25, 0.2])
    assert loss["timestamp"].iloc[1] == pd.Timestamp(start + timedelta(minutes=1))
    assert sorted(set(every.index.get_level_values("name"))) == ["loss", "lr", "temp"]
    assert every.loc[("temp", 0), "unit"] == "°C"
    assert (
        chart.attrs["downsampled"] and chart.attrs["total"] == 100 and chart.attrs["unit"] == "°C"
    )
    assert 5 <= len(chart) <= 10 and int(chart["count"].sum()) == 100
    assert chart["max"].max() == 19.0 and chart["min"].min() == 1.0
    assert str(chart.index.tz) == "UTC"


def test_times_without_a_zone_are_refused(cloud: CloudServer, client: Client) -> None:
    run = client.experiments.create("e").runs.create()
    with pytest.raises(ValueError, match="no time zone"):
        run.telemetry(since=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="not a finite number"):
        run.log_metrics({"loss": float("nan")}, step=1)
