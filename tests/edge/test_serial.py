"""The serial source on a real pseudo-terminal with the hardware decoders."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import sys
import threading
import tty
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from edge.buffer import Buffer
from edge.metrics import EdgeMetrics
from edge.sources.serial import SerialSensor, SerialSource
from edge.writer import Writer


class Pty:
    """A device on a pty, reached through a symlink that can vanish (an unplugged adapter)."""

    def __init__(self, link: Path) -> None:
        self.link = link
        self.master = -1
        self.plug()

    def plug(self) -> None:
        self.master, slave = os.openpty()
        tty.setraw(slave)
        self.slave_path = os.ttyname(slave)
        os.close(slave)
        self.link.unlink(missing_ok=True)
        self.link.symlink_to(self.slave_path)

    def unplug(self) -> None:
        self.link.unlink()
        os.close(self.master)
        self.master = -1

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def close(self) -> None:
        if self.master >= 0:
            os.close(self.master)


def serial_sensor(
    sid: str, port: Path, protocol: str = "value", channel: str | None = None
) -> SerialSensor:
    return SerialSensor.model_validate(
        {
            "sensor_id": sid,
            "token": "t",
            "run_id": "00000000-0000-4000-8000-000000000001",
            "capture_session_id": "00000000-0000-4000-8000-000000000002",
            "source": "serial",
            "port": str(port),
            "protocol": protocol,
            "channel": channel,
        }
    )


@contextlib.asynccontextmanager
async def capture(
    buffer: Buffer, sensors: list[SerialSensor], port: Path
) -> AsyncIterator[SerialSource]:
    for s in sensors:
        buffer.upsert_sensor(
            str(s.sensor_id), "t", "serial", str(s.run_id), str(s.capture_session_id)
        )
    metrics = EdgeMetrics()
    writer = Writer(buffer, metrics)
    src = SerialSource(
        str(port), sensors, writer, metrics, backoff_initial_s=0.05, backoff_max_s=0.2
    )
    async with asyncio.TaskGroup() as tg:
        wt = tg.create_task(writer.run())
        st = tg.create_task(src.run())
        try:
            yield src
        finally:
            st.cancel()
            await writer.close()
            await wt


def rows(buffer: Buffer) -> list[tuple[str, float]]:
    return [
        tuple(r)
        for r in buffer.conn.execute("SELECT sensor_id, raw_value FROM readings ORDER BY id")
    ]


async def wait_until(pred: object, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not pred():  # type: ignore[operator]
            await asyncio.sleep(0.02)


async def test_values_garbage_and_unplug(buffer: Buffer, tmp_path: Path) -> None:
    port = tmp_path / "ttyBENCH"
    dev = Pty(port)
    sid = "00000000-0000-4000-8000-00000000000a"
    try:
        async with capture(buffer, [serial_sensor(sid, port)], port) as src:
            await wait_until(lambda: src.state == "open")
            dev.write(b"1.25\r\n\x00\xff\xfegarbage\n2.5\n")
            await wait_until(lambda: src.readings_committed == 2)
            assert src.metrics.serial_skipped.labels(str(port))._value.get() >= 1
            dev.unplug()
            await wait_until(lambda: src.state == "backoff")
            await asyncio.sleep(0.3)  # a few failed reopen attempts
            dev.plug()
            await wait_until(lambda: src.state == "open")
            dev.write(b"3.75\n")
            await wait_until(lambda: src.readings_committed == 3)
    finally:
        dev.close()
    assert rows(buffer) == [(sid, 1.25), (sid, 2.5), (sid, 3.75)]
    ts = [r[0] for r in buffer.conn.execute("SELECT ts FROM readings")]
    assert all(t.endswith("+00:00") for t in ts)  # stamped in UTC at the edge


async def test_csv_channels_map_to_sensors_and_faults_are_not_readings(
    buffer: Buffer, tmp_path: Path
) -> None:
    port = tmp_path / "ttyCSV"
    dev = Pty(port)
    s1, s2 = "00000000-0000-4000-8000-0000000000c1", "00000000-0000-4000-8000-0000000000c2"
    sensors = [serial_sensor(s1, port, "csv", "1"), serial_sensor(s2, port, "csv", "2")]
    try:
        async with capture(buffer, sensors, port) as src:
            await wait_until(lambda: src.state == "open")
            dev.write(b"1,0.5\n2,0.75\n3,9.0\n1,1.5,2026-01-01T00:00:00Z\n")
            await wait_until(lambda: src.readings_committed == 3)
    finally:
        dev.close()
    assert rows(buffer) == [(s1, 0.5), (s2, 0.75), (s1, 1.5)]
    assert buffer.conn.execute("SELECT ts FROM readings WHERE raw_value = 1.5").fetchone()[0] == (
        "2026-01-01T00:00:00.000000+00:00"
    )


@pytest.mark.parametrize("protocol", ["max31855-hex"])
async def test_device_faults_are_counted(buffer: Buffer, tmp_path: Path, protocol: str) -> None:
    port = tmp_path / "ttyMAX"
    dev = Pty(port)
    sid = "00000000-0000-4000-8000-0000000000f1"
    try:
        async with capture(buffer, [serial_sensor(sid, port, protocol)], port) as src:
            await wait_until(lambda: src.state == "open")
            # 0x00010001: fault bit (16) and OC bit (0) set -> an open-circuit fault
            dev.write(b"00010001\n01900000\n")
            await wait_until(lambda: src.readings_committed == 1)
            faults = {
                m.labels["kind"]: m.value
                for metric in src.metrics.registry.collect()
                if metric.name == "benchlink_edge_serial_faults"
                for m in metric.samples
                if m.name.endswith("_total")
            }
    finally:
        dev.close()
    assert faults == {"open_circuit": 1.0}
    assert rows(buffer) == [(sid, 25.0)]


async def test_a_slow_device_does_not_cost_one_commit_per_line(
    buffer: Buffer, tmp_path: Path
) -> None:
    port = tmp_path / "ttySLOW"
    dev = Pty(port)
    sid = "00000000-0000-4000-8000-0000000000d1"
    try:
        async with capture(buffer, [serial_sensor(sid, port)], port) as src:
            await wait_until(lambda: src.state == "open")
            before = src.writer.commits
            for i in range(20):
                dev.write(f"{i}.5\n".encode())
                await asyncio.sleep(0.005)
            await wait_until(lambda: src.readings_committed == 20)
            commits = src.writer.commits - before
    finally:
        dev.close()
    assert [v for _, v in rows(buffer)] == [i + 0.5 for i in range(20)]
    assert commits <= 5, commits


async def test_a_decoder_failure_loses_the_chunk_not_the_port(
    buffer: Buffer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hardware.protocols import lines

    real = lines.ValueDecoder.handle_line

    def broken(self: object, text: str) -> object:
        if text == "13":
            raise OverflowError("a decoder bug")
        return real(self, text)  # type: ignore[arg-type]

    monkeypatch.setattr(lines.ValueDecoder, "handle_line", broken)
    port = tmp_path / "ttyBUG"
    dev = Pty(port)
    sid = "00000000-0000-4000-8000-0000000000d2"
    try:
        async with capture(buffer, [serial_sensor(sid, port)], port) as src:
            await wait_until(lambda: src.state == "open")
            dev.write(b"13\n")
            await asyncio.sleep(0.3)
            dev.write(b"14\n")
            await wait_until(lambda: src.readings_committed == 1)
            assert src.state == "open"
    finally:
        dev.close()
    assert rows(buffer) == [(sid, 14.0)]


def collect_counter(src: SerialSource, name: str) -> float:
    return sum(
        m.value
        for metric in src.metrics.registry.collect()
        if metric.name == name
        for m in metric.samples
        if m.name.endswith("_total")
    )


async def test_a_second_reader_of_the_port_is_refused(buffer: Buffer, tmp_path: Path) -> None:
    """Two readers would split the byte stream: the second opener gets nothing, the first
    every line, whole."""
    port = tmp_path / "ttyTWO"
    dev = Pty(port)
    sid = "00000000-0000-4000-8000-0000000000e1"
    try:
        async with capture(buffer, [serial_sensor(sid, port)], port) as first:
            await wait_until(lambda: first.state == "open")
            async with capture(buffer, [serial_sensor(sid, port)], port) as second:
                await wait_until(
                    lambda: second.metrics.errors.labels("serial_busy")._value.get() >= 2
                )
                lines = [f"{i}1.2051" for i in range(1, 40)]
                for line in lines:
                    dev.write(line.encode() + b"\n")
                    await asyncio.sleep(0.002)
                await wait_until(lambda: first.readings_committed == len(lines))
                assert second.state != "open" and second.readings_committed == 0
        # A reader that does not take the flock (screen, cat) is refused by the kernel
        # (TIOCEXCL); root is exempt, so try as an unprivileged user.
        async with capture(buffer, [serial_sensor(sid, port)], port) as held:
            await wait_until(lambda: held.state == "open")
            os.chmod(dev.slave_path, 0o666)
            probe = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                "import os, sys; os.setgid(65534); os.setuid(65534)\n"
                "try:\n    os.open(sys.argv[1], os.O_RDWR | os.O_NOCTTY)\n"
                "except OSError as e:\n    print(e.errno)\nelse:\n    print('opened')",
                dev.slave_path,
                stdout=asyncio.subprocess.PIPE,
            )
            out, _ = await probe.communicate()
            assert out.decode().strip() == str(errno.EBUSY)
    finally:
        dev.close()
    assert [v for _, v in rows(buffer)] == [float(line) for line in lines]


def device_mid_line_at_open(monkeypatch: pytest.MonkeyPatch, dev: Pty, tails: list[bytes]) -> None:
    """At each open, the device is in the middle of a line: the next of ``tails`` arrives
    right after the open (pyserial empties the tty's input at open, so only bytes sent after
    it can be read)."""
    real_open = SerialSource._open

    def open_(self: SerialSource) -> object:
        port = real_open(self)
        if tails:
            dev.write(tails.pop(0))
        return port

    monkeypatch.setattr(SerialSource, "_open", open_)


async def test_a_line_begun_before_the_open_is_dropped_and_counted(
    buffer: Buffer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first bytes after an open may be the tail of a line (its start went to another
    reader, or was sent before the open): never a reading of its own."""
    port = tmp_path / "ttyMID"
    dev = Pty(port)
    device_mid_line_at_open(monkeypatch, dev, [b"2051\n4.5\n"])  # the tail of "11.2051"
    sid = "00000000-0000-4000-8000-0000000000e2"
    try:
        async with capture(buffer, [serial_sensor(sid, port)], port) as src:
            await wait_until(lambda: src.readings_committed == 1)
            assert src.state == "open"
            assert src.partial_lines == 1
            assert collect_counter(src, "benchlink_edge_serial_partial_lines") == 1
    finally:
        dev.close()
    assert rows(buffer) == [(sid, 4.5)]


async def test_the_first_line_after_a_reopen_mid_line_is_dropped_and_counted(
    buffer: Buffer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read error mid-line closes the port; the device goes on sending, and what arrives
    after the reopen starts mid-line: that piece is dropped and counted, the next line kept."""
    from edge.sources import serial as serial_source

    real_read = serial_source._read_some
    fail = threading.Event()

    def read_some(port: object) -> bytes:
        if fail.is_set():
            fail.clear()
            raise OSError(errno.EIO, "injected read error")
        return real_read(port)  # type: ignore[arg-type]

    monkeypatch.setattr(serial_source, "_read_some", read_some)
    port = tmp_path / "ttyRE"
    dev = Pty(port)
    tails = [b"", b"2051\n7.5\n"]  # the first open is clean; the reopen comes mid-line
    device_mid_line_at_open(monkeypatch, dev, tails)
    sid = "00000000-0000-4000-8000-0000000000e3"
    try:
        async with capture(buffer, [serial_sensor(sid, port)], port) as src:
            await wait_until(lambda: src.state == "open")
            dev.write(b"3.25\n11.")
            await wait_until(lambda: src.readings_committed == 1)
            await asyncio.sleep(0.15)  # "11." read: the decoder holds the line's start
            fail.set()
            await wait_until(lambda: src.readings_committed == 2)
            assert not tails
            assert src.partial_lines == 1
            assert collect_counter(src, "benchlink_edge_serial_partial_lines") == 1
    finally:
        dev.close()
    assert rows(buffer) == [(sid, 3.25), (sid, 7.5)]


async def test_lines_read_at_one_instant_get_their_own_timestamps(
    buffer: Buffer, tmp_path: Path
) -> None:
    """Several lines in one read share their arrival; the cloud keeps one reading per sensor
    and timestamp, so each is stamped strictly after the one before."""
    port = tmp_path / "ttyBURST"
    dev = Pty(port)
    sid = "00000000-0000-4000-8000-0000000000d2"
    try:
        async with capture(buffer, [serial_sensor(sid, port)], port) as src:
            await wait_until(lambda: src.state == "open")
            dev.write("".join(f"{i}.25\n" for i in range(50)).encode())
            await wait_until(lambda: src.readings_committed == 50)
    finally:
        dev.close()
    stamps = [r[0] for r in buffer.conn.execute("SELECT ts FROM readings ORDER BY id")]
    assert len(stamps) == 50 and stamps == sorted(set(stamps))


async def test_a_device_fault_is_counted_never_stored_as_a_reading(
    buffer: Buffer, tmp_path: Path
) -> None:
    from hardware.protocols.max31855 import encode_frame

    port = tmp_path / "ttyTC"
    dev = Pty(port)
    sid = "00000000-0000-4000-8000-0000000000f1"
    frames = [
        encode_frame(21.5, 24.0),
        encode_frame(0.0, 24.0, faults=("open_circuit",)),
        encode_frame(22.0, 24.0),
    ]
    try:
        async with capture(buffer, [serial_sensor(sid, port, "max31855-hex")], port) as src:
            await wait_until(lambda: src.state == "open")
            dev.write(b"".join(f"{f:08x}\n".encode() for f in frames))
            await wait_until(lambda: src.readings_committed == 2)
            assert src.metrics.serial_faults.labels("open_circuit")._value.get() == 1
    finally:
        dev.close()
    assert rows(buffer) == [(sid, 21.5), (sid, 22.0)]


async def test_consecutive_faults_of_a_kind_are_one_episode_that_a_reading_ends(
    buffer: Buffer, tmp_path: Path
) -> None:
    """An open probe reports a fault per line: one row per episode (kind, first and last
    time, count), not per fault; another kind or a reading starts the next one. Each
    episode lies between the readings around it, and the sensor is marked for its sync."""
    from hardware.protocols.max31855 import encode_frame

    port = tmp_path / "ttyTC"
    dev = Pty(port)
    sid = "00000000-0000-4000-8000-0000000000f2"
    ok, open_, gnd = (
        encode_frame(21.5, 24.0),
        encode_frame(0.0, 24.0, faults=("open_circuit",)),
        encode_frame(0.0, 24.0, faults=("short_to_gnd",)),
    )
    frames = [ok, *[open_] * 5, *[gnd] * 2, ok, *[open_] * 3, ok]
    try:
        async with capture(buffer, [serial_sensor(sid, port, "max31855-hex")], port) as src:
            await wait_until(lambda: src.state == "open")
            for f in frames:  # one line at a time, as a device sends them
                dev.write(f"{f:08x}\n".encode())
                await asyncio.sleep(0.01)
            await wait_until(lambda: src.readings_committed == 3)
    finally:
        dev.close()
    episodes = buffer.conn.execute(
        "SELECT sensor_id, kind, count, first_ts, last_ts, sent_count FROM faults ORDER BY id"
    ).fetchall()
    assert [(e[0], e[1], e[2], e[5]) for e in episodes] == [
        (sid, "open_circuit", 5, 0),
        (sid, "short_to_gnd", 2, 0),
        (sid, "open_circuit", 3, 0),
    ]
    stamps = [r[0] for r in buffer.conn.execute("SELECT ts FROM readings ORDER BY id")]
    assert stamps[0] < episodes[0][3] < episodes[0][4] < episodes[1][3] <= episodes[1][4]
    assert episodes[1][4] < stamps[1] < episodes[2][3] < episodes[2][4] < stamps[2]
    assert buffer.fault_sensors == {sid}
    assert [row["count"] for row in buffer.unsent_faults(sid)] == [5, 2, 3]
