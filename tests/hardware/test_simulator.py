"""The pty simulator, read through real pyserial ports and decoded with our decoders."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial

from hardware.protocols import PROTOCOLS, Decoder, Fault, Sample, make_decoder
from hardware.simulator import (
    SimConfig,
    Simulator,
    Window,
    config_from_args,
    main,
    profile_temperature,
)
from hardware.thermocouple import compensated_temperature_c, emf_mv, max31855_corrected_c

Item = Sample | Fault
FAST = {"rate": 200.0, "noise_c": 0.0, "seed": 7}


@pytest.fixture
def running() -> Iterator[list[Simulator]]:
    """Simulators started by a test, stopped at its end whatever happens."""
    sims: list[Simulator] = []
    yield sims
    for sim in sims:
        sim.stop()


def start(sims: list[Simulator], **kw: object) -> Simulator:
    sim = Simulator(SimConfig(**{**FAST, **kw}))  # type: ignore[arg-type]
    sims.append(sim)
    return sim.start()


def read_for(port: serial.Serial, decoder: Decoder, seconds: float) -> list[tuple[float, Item]]:
    """Decoded items with the monotonic time at which their bytes arrived."""
    out: list[tuple[float, Item]] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        data = port.read(max(1, port.in_waiting))
        now = time.monotonic()
        out += [(now, item) for item in decoder.feed(data)]
    return out


def to_celsius(protocol: str, sample: Sample, cold_junction_c: float = 25.0) -> float:
    if protocol in ("arduino-thermocouple", "max31855-hex"):
        return max31855_corrected_c(sample.value, sample.meta["cold_junction_c"])
    return compensated_temperature_c("K", sample.value, cold_junction_c)


def samples(items: list[tuple[float, Item]]) -> list[Sample]:
    return [i for _, i in items if isinstance(i, Sample)]


def faults(items: list[tuple[float, Item]]) -> list[Fault]:
    return [i for _, i in items if isinstance(i, Fault)]


# ---------------------------------------------------------------- the profile


def test_profiles() -> None:
    assert profile_temperature("heat", 0, 25, 300, 60) == 25
    assert profile_temperature("heat", 30, 25, 300, 60) == pytest.approx(162.5)
    assert profile_temperature("heat", 600, 25, 300, 60) == 300
    assert profile_temperature("cool", 0, 25, 300, 60) == 300
    assert profile_temperature("cool", 60, 25, 300, 60) == 25
    assert profile_temperature("cycle", 0, 25, 300, 60) == pytest.approx(25)
    assert profile_temperature("cycle", 30, 25, 300, 60) == pytest.approx(300)
    assert profile_temperature("cycle", 60, 25, 300, 60) == pytest.approx(25)
    with pytest.raises(ValueError, match="unknown profile"):
        profile_temperature("melt", 0, 25, 300, 60)


@pytest.mark.parametrize(
    ("kw", "fragment"),
    [
        ({"protocol": "modbus"}, "unknown protocol"),
        ({"profile": "melt"}, "unknown profile"),
        ({"type": "X"}, "unknown thermocouple type"),
        ({"rate": 0.0}, "rate must be a positive"),
        ({"period_s": -1.0}, "period_s must be a positive"),
        ({"noise_c": -0.1}, "noise_c"),
        ({"garbage_every": -1}, "garbage_every"),
        ({"type": "T", "peak_c": 500.0}, "peak_c 500.0 °C is outside type T"),
        ({"cold_junction_c": -280.0}, "cold_junction_c"),
    ],
)
def test_invalid_config(kw: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        SimConfig(**kw)  # type: ignore[arg-type]


def test_cli_arguments() -> None:
    config = config_from_args(
        ["--protocol", "csv", "--type", "J", "--rate", "5", "--profile", "cycle",
         "--start-c", "20", "--peak-c", "200", "--period-s", "30", "--noise-c", "0",
         "--channel", "3", "--link", "/tmp/x", "--duration", "4", "--seed", "9",
         "--garbage-every", "4", "--open-probe-at", "1", "--open-probe-for", "2",
         "--pause-at", "2", "--pause-for", "1", "--unplug-at", "3", "--unplug-for", "0.5"]
    )  # fmt: skip
    assert config == SimConfig(
        protocol="csv", type="J", rate=5, profile="cycle", start_c=20, peak_c=200,
        period_s=30, noise_c=0, channel="3", link="/tmp/x", duration=4, seed=9,
        garbage_every=4, open_probe=Window(1, 2), pause=Window(2, 1), unplug=Window(3, 0.5),
    )  # fmt: skip


@pytest.mark.parametrize(
    "argv", [["--pause-at", "1"], ["--unplug-at", "1", "--unplug-for", "0"], ["--rate", "-1"]]
)
def test_cli_rejects_bad_arguments(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        config_from_args(argv)
    assert info.value.code == 2
    assert "benchlink-sim: error" in capsys.readouterr().err


# ---------------------------------------------------------------- every protocol


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_every_protocol_reads_like_a_serial_device(protocol: str, running: list[Simulator]) -> None:
    sim = start(running, protocol=protocol, start_c=25.0, peak_c=425.0, period_s=2.0)
    with serial.Serial(sim.path, 9600, timeout=0.05) as port:
        t_open = time.monotonic()
        items = read_for(port, make_decoder(protocol), 0.6)
    got = samples(items)
    assert len(got) >= 40  # 200/s for 0.6 s, minus scheduling slack
    assert not faults(items)
    temps = [to_celsius(protocol, s) for s in got]
    # Heating at 200 °C/s: the samples climb and never run ahead of the profile.
    quantum = 0.25 if protocol in ("arduino-thermocouple", "max31855-hex") else 0.01
    assert all(b >= a - 2 * quantum for a, b in itertools.pairwise(temps))
    assert temps[-1] - temps[0] > 50
    latest = sim.temperature_at(time.monotonic() - t_open + 1.0)
    assert all(24.5 <= t <= latest + 0.5 for t in temps)
    if protocol == "csv":
        assert {s.channel for s in got} == {"1"}
    if protocol == "jsonl":
        assert all(s.timestamp is not None and s.timestamp.tzinfo is not None for s in got)
        assert all(s.meta == {"cold_junction_c": 25.0} for s in got)
    if protocol in ("arduino-thermocouple", "max31855-hex"):
        assert all(s.meta["cold_junction_c"] == 25.0 for s in got)
        assert all(s.value * 4 == int(s.value * 4) for s in got)  # the chip's 0.25 °C steps


def test_value_protocol_is_nist_emf_of_the_profile(running: list[Simulator]) -> None:
    sim = start(
        running, protocol="value", type="J", start_c=100.0, peak_c=100.0, cold_junction_c=0.0
    )
    with serial.Serial(sim.path, 9600, timeout=0.05) as port:
        got = samples(read_for(port, make_decoder("value"), 0.2))
    assert got
    expected = round(emf_mv("J", 100.0), 4)
    assert round(expected, 3) == 5.269  # the NIST table's J(100 °C)
    assert {s.value for s in got} == {expected}


def test_noise_scatters_around_the_profile(running: list[Simulator]) -> None:
    sim = start(running, protocol="value", start_c=200.0, peak_c=200.0, noise_c=1.0)
    with serial.Serial(sim.path, 9600, timeout=0.05) as port:
        temps = [
            to_celsius("value", s) for s in samples(read_for(port, make_decoder("value"), 0.5))
        ]
    mean = sum(temps) / len(temps)
    sd = (sum((t - mean) ** 2 for t in temps) / len(temps)) ** 0.5
    assert mean == pytest.approx(200.0, abs=0.6)
    assert 0.6 < sd < 1.5


# ---------------------------------------------------------------- faults


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_garbage_is_skipped_and_decoding_resumes(protocol: str, running: list[Simulator]) -> None:
    sim = start(running, protocol=protocol, garbage_every=5)
    decoder = make_decoder(protocol)
    resumed = 0  # skips that a decoded sample followed
    pending = False
    with serial.Serial(sim.path, 9600, timeout=0.05) as port:
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            for byte in port.read(max(1, port.in_waiting)):  # byte-wise: exact order
                skipped_before = decoder.stats.skipped
                items = decoder.feed(bytes([byte]))
                if pending and any(isinstance(i, Sample) for i in items):
                    resumed += 1
                    pending = False
                pending = pending or decoder.stats.skipped > skipped_before
    # The writer thread writes a garbage line and then counts it: stop it before comparing,
    # or a line the decoder has already skipped may not be counted yet.
    sim.stop()
    assert decoder.stats.skipped >= 5
    assert decoder.stats.last_skip_reason == "line is not UTF-8"
    assert sim.garbage_lines >= decoder.stats.skipped
    # One garbage line per five samples, and the readings after each garbage line decode.
    assert decoder.stats.samples >= 4 * decoder.stats.skipped - 4
    assert resumed >= decoder.stats.skipped - 1


@pytest.mark.parametrize("protocol", ["arduino-thermocouple", "max31855-hex"])
def test_open_probe_yields_faults_then_readings(protocol: str, running: list[Simulator]) -> None:
    sim = start(running, protocol=protocol, open_probe=Window(0.2, 0.2))
    with serial.Serial(sim.path, 9600, timeout=0.05) as port:
        items = read_for(port, make_decoder(protocol), 0.7)
    kinds = [i.kind for _, i in items if isinstance(i, Fault)]
    assert len(kinds) >= 20
    assert set(kinds) == {"open_circuit"}
    first = next(n for n, (_, i) in enumerate(items) if isinstance(i, Fault))
    last = max(n for n, (_, i) in enumerate(items) if isinstance(i, Fault))
    assert any(isinstance(i, Sample) for _, i in items[:first])
    assert any(isinstance(i, Sample) for _, i in items[last:])
    assert all(isinstance(i, Fault) for _, i in items[first : last + 1])


@pytest.mark.parametrize("protocol", ["value", "csv", "jsonl"])
def test_open_probe_without_fault_syntax_is_skipped(
    protocol: str, running: list[Simulator]
) -> None:
    sim = start(running, protocol=protocol, open_probe=Window(0.1, 0.2))
    decoder = make_decoder(protocol)
    with serial.Serial(sim.path, 9600, timeout=0.05) as port:
        items = read_for(port, decoder, 0.5)
    assert decoder.stats.skipped >= 20
    assert decoder.stats.last_skip_reason is not None
    assert "finite" in decoder.stats.last_skip_reason or "number" in decoder.stats.last_skip_reason
    assert len(samples(items)) >= 20


def test_pause_silences_the_device_then_resumes(running: list[Simulator]) -> None:
    sim = start(running, protocol="jsonl", pause=Window(0.25, 0.4))
    with serial.Serial(sim.path, 9600, timeout=0.05) as port:
        items = read_for(port, make_decoder("jsonl"), 0.9)
    arrivals = [t for t, i in items if isinstance(i, Sample)]
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert max(gaps) >= 0.3
    assert sorted(gaps)[-2] < 0.25  # only one silence
    stamps = [s.timestamp for s in samples(items) if s.timestamp is not None]
    device_gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(stamps)]
    assert max(device_gaps) == pytest.approx(0.4, abs=0.06)
    assert arrivals[-1] - arrivals[0] > 0.6


def wait_for(predicate: object, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


def read_until_unplugged(port: serial.Serial, decoder: Decoder, link: Path) -> list[Item]:
    items: list[Item] = []
    end = time.monotonic() + 3.0
    while time.monotonic() < end:
        try:
            items += decoder.feed(port.read(max(1, port.in_waiting)))
        except serial.SerialException:
            break
        if not os.path.lexists(link):
            break
    return items


def test_unplug_removes_the_link_and_brings_it_back(
    tmp_path: Path, running: list[Simulator]
) -> None:
    link = tmp_path / "tty0"
    sim = start(running, protocol="value", link=str(link), unplug=Window(0.3, 0.5))
    assert sim.path == str(link)
    assert os.readlink(link).startswith("/dev/pts/")
    decoder = make_decoder("value")
    with serial.Serial(str(link), 9600, timeout=0.05) as port:
        before = read_until_unplugged(port, decoder, link)
    assert len(before) >= 20
    assert wait_for(lambda: not os.path.lexists(link), 1.0)
    gone_at = time.monotonic()
    assert wait_for(lambda: os.path.lexists(link), 2.0)
    assert time.monotonic() - gone_at >= 0.3
    assert os.readlink(link).startswith("/dev/pts/")
    assert os.path.exists(link)
    with serial.Serial(str(link), 9600, timeout=0.05) as port:
        after = samples(read_for(port, make_decoder("value"), 0.3))
    assert len(after) >= 20


def test_unplugged_port_reports_an_error_to_its_reader(
    tmp_path: Path, running: list[Simulator]
) -> None:
    link = tmp_path / "tty1"
    sim = start(running, protocol="value", link=str(link), unplug=Window(0.2, 0.5))
    port = serial.Serial(sim.path, 9600, timeout=0.05)
    try:
        with pytest.raises(serial.SerialException):
            end = time.monotonic() + 2.0
            while time.monotonic() < end:
                port.read(4096)
    finally:
        port.close()


def test_stop_removes_the_link_and_closes_the_pty(tmp_path: Path) -> None:
    link = tmp_path / "tty2"
    with Simulator(SimConfig(link=str(link), **FAST)) as sim:  # type: ignore[arg-type]
        target = os.readlink(link)
        assert os.path.exists(target)
        assert sim.plugged.is_set()
    assert not os.path.lexists(link)
    assert not sim.plugged.is_set()


def test_link_refuses_to_replace_a_regular_file(tmp_path: Path) -> None:
    link = tmp_path / "precious"
    link.write_text("data")
    fds_before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(FileExistsError):
        Simulator(SimConfig(link=str(link), **FAST)).start()  # type: ignore[arg-type]
    assert link.read_text() == "data"
    assert len(os.listdir("/proc/self/fd")) == fds_before  # the pty was closed again


def test_stale_link_is_replaced(tmp_path: Path, running: list[Simulator]) -> None:
    link = tmp_path / "tty3"
    link.symlink_to("/dev/pts/does-not-exist")
    sim = start(running, link=str(link))
    assert os.path.exists(sim.path)


def test_duration_ends_the_background_device(running: list[Simulator]) -> None:
    sim = start(running, duration=0.2)
    assert sim.wait(2.0)
    assert sim.samples_written == 40  # samples at k/rate for k = 0..39


def test_main_runs_in_process_for_its_duration(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--duration", "0.1", "--rate", "100", "--seed", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1
    assert out[0].startswith("/dev/pts/")


# ---------------------------------------------------------------- the real CLI


def spawn(args: list[str], *, script: bool = False) -> tuple[subprocess.Popen[str], str]:
    if script:
        cmd = [str(Path(sys.executable).parent / "benchlink-sim")]
    else:
        cmd = [sys.executable, "-m", "hardware.simulator"]
    proc = subprocess.Popen(
        [*cmd, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    path = proc.stdout.readline().strip()
    return proc, path


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_cli_subprocess_every_protocol(protocol: str, tmp_path: Path) -> None:
    link = tmp_path / "sim"
    proc, path = spawn(
        ["--protocol", protocol, "--rate", "200", "--noise-c", "0", "--link", str(link),
         "--peak-c", "100", "--period-s", "1", "--seed", "3"]
    )  # fmt: skip
    try:
        assert path == str(link)
        with serial.Serial(path, 9600, timeout=0.05) as port:
            got = samples(read_for(port, make_decoder(protocol), 0.4))
        assert len(got) >= 30
        temps = [to_celsius(protocol, s) for s in got]
        assert all(24.5 <= t <= 100.5 for t in temps)
        assert temps[-1] > temps[0]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0
    assert not os.path.lexists(link)


def test_cli_exits_on_sigint(tmp_path: Path) -> None:
    proc, path = spawn(["--link", str(tmp_path / "s"), "--rate", "50"])
    assert os.path.exists(path)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(5) == 0
    assert not os.path.lexists(path)


def test_console_script_runs_for_its_duration() -> None:
    proc, path = spawn(["--duration", "0.3", "--rate", "100"], script=True)
    assert path.startswith("/dev/pts/")
    assert proc.wait(5) == 0


def test_cli_unplug_prints_the_path_again(tmp_path: Path) -> None:
    link = tmp_path / "u"
    proc, path = spawn(
        ["--link", str(link), "--rate", "100", "--duration", "0.6",
         "--unplug-at", "0.2", "--unplug-for", "0.2"]
    )  # fmt: skip
    out, _ = proc.communicate(timeout=5)
    assert proc.returncode == 0
    assert path == str(link)
    assert out.splitlines() == [str(link)]  # announced again when it came back


def test_cli_reports_bad_arguments() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "hardware.simulator", "--type", "T", "--peak-c", "900"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert proc.returncode == 2
    assert "peak_c 900.0 °C is outside type T" in proc.stderr


def test_a_stop_raised_right_after_the_announcement_still_removes_the_link(tmp_path: Path) -> None:
    # The CLI's signal handler raises wherever the main thread is; the earliest place is the
    # path's announcement, before the device loop (and its cleanup) has begun.
    link = tmp_path / "s"

    class Interrupted(Exception):
        pass

    def announce(path: str) -> None:
        assert os.path.lexists(link)
        raise Interrupted

    sim = Simulator(SimConfig(link=str(link), **FAST), on_path=announce)  # type: ignore[arg-type]
    with pytest.raises(Interrupted):
        sim.run()
    assert not os.path.lexists(link)
