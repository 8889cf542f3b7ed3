"""A thermocouple interface on a pseudo-terminal: ``benchlink-sim``.

The simulator opens a pty pair, puts the slave in raw mode and writes one reading per sample
period in the chosen line protocol, so any program reads it like ``/dev/ttyUSB0``
(``serial.Serial(path, 9600, timeout=1)``). The first line it prints on stdout is the device
path: the ``--link`` symlink if given (use it: it survives an unplug), else ``/dev/pts/N``.

What each protocol carries (the hot junction follows ``--profile``, plus Gaussian noise):

- ``value``: the thermocouple emf in mV against a cold junction at ``--cold-junction-c``,
  from the NIST reference functions (a ``thermocouple`` profile with that cold_junction_c
  turns it back into °C);
- ``csv``: ``channel,emf_mv``; ``jsonl``: ``{"value": emf_mv, "timestamp": device UTC time,
  "meta": {"cold_junction_c": ...}}``;
- ``arduino-thermocouple``: the Adafruit MAX31855 sketch's ``Internal Temp = ...`` /
  ``C = ...`` pairs; ``max31855-hex``: the chip's 32-bit frames. Both report what the chip
  would: its linear 41.276 µV/°C model, in 0.25 °C steps.

Faults: ``--garbage-every N`` writes a line of random non-UTF-8 bytes before every Nth
sample; ``--open-probe-at/--open-probe-for`` makes the probe open (fault lines, or ``nan``
for the protocols that have no fault syntax); ``--pause-at/--pause-for`` silences the device;
``--unplug-at/--unplug-for`` removes the device (link removed, pty closed) and brings it back
on a new pty (link re-created).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import signal
import sys
import threading
import time
import tty
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from types import FrameType

from common.cli import Parser, add_version
from hardware.protocols import PROTOCOLS
from hardware.protocols.max31855 import encode_frame
from hardware.thermocouple import MAX31855_MV_PER_C, emf_mv, get_type

PROFILES: tuple[str, ...] = ("heat", "cool", "cycle")


def profile_temperature(
    profile: str, elapsed_s: float, start_c: float, peak_c: float, period_s: float
) -> float:
    """The simulated hot-junction temperature ``elapsed_s`` seconds after the start.

    ``heat`` ramps linearly from start to peak over one period then holds; ``cool`` ramps from
    peak down to start then holds; ``cycle`` swings start → peak → start every period
    (raised cosine).
    """
    frac = max(elapsed_s, 0.0) / period_s
    if profile == "heat":
        return start_c + (peak_c - start_c) * min(frac, 1.0)
    if profile == "cool":
        return peak_c + (start_c - peak_c) * min(frac, 1.0)
    if profile == "cycle":
        return start_c + (peak_c - start_c) * (1.0 - math.cos(2.0 * math.pi * frac)) / 2.0
    raise ValueError(f"unknown profile {profile!r}; one of {', '.join(PROFILES)}")


@dataclass(frozen=True)
class Window:
    """A fault active from ``at`` for ``length`` seconds after the simulator starts."""

    at: float
    length: float

    def contains(self, elapsed_s: float) -> bool:
        return self.at <= elapsed_s < self.at + self.length


@dataclass(frozen=True)
class SimConfig:
    protocol: str = "value"
    type: str = "K"
    rate: float = 10.0  # samples per second
    profile: str = "heat"
    start_c: float = 25.0
    peak_c: float = 300.0
    period_s: float = 60.0
    noise_c: float = 0.2
    channel: str = "1"
    cold_junction_c: float = 25.0
    link: str | None = None
    duration: float | None = None
    seed: int | None = None
    garbage_every: int = 0
    open_probe: Window | None = None
    pause: Window | None = None
    unplug: Window | None = None

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {self.protocol!r}; one of {', '.join(PROTOCOLS)}")
        if self.profile not in PROFILES:
            raise ValueError(f"unknown profile {self.profile!r}; one of {', '.join(PROFILES)}")
        tc = get_type(self.type)  # ValueError for an unknown type
        for name in ("rate", "period_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, not {value}")
        if not (math.isfinite(self.noise_c) and self.noise_c >= 0):
            raise ValueError(f"noise_c must be zero or positive, not {self.noise_c}")
        if self.garbage_every < 0:
            raise ValueError(f"garbage_every must be zero or positive, not {self.garbage_every}")
        # Keep the noisy temperature and the cold junction inside what NIST covers.
        margin = 6 * self.noise_c
        lo, hi = tc.inverse_t_min + margin, tc.inverse_t_max - margin
        for name in ("start_c", "peak_c", "cold_junction_c"):
            value = getattr(self, name)
            if not (lo <= value <= hi):
                raise ValueError(
                    f"{name} {value} °C is outside type {self.type}'s usable range "
                    f"{lo:g} to {hi:g} °C (with room for the noise)"
                )


class Simulator:
    """The device. ``start()`` runs it in a background thread; ``stop()`` ends it cleanly.

    ``run()`` runs it in the calling thread until ``duration`` or :meth:`request_stop`.
    ``on_path`` is called with the device path whenever the device (re)appears.
    """

    def __init__(self, config: SimConfig, on_path: Callable[[str], None] | None = None) -> None:
        self.config = config
        self._on_path = on_path
        self._rng = random.Random(config.seed)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._master: int | None = None
        self._slave: int | None = None
        self._slave_name: str | None = None
        self._t0 = 0.0
        self.samples_written = 0
        self.garbage_lines = 0
        self.dropped_bytes = 0  # written while no reader drained the pty
        self.plugged = threading.Event()

    # ------------------------------------------------------------------ lifecycle

    @property
    def path(self) -> str:
        """The path clients open: the link if configured, else the current slave."""
        if self.config.link is not None:
            return self.config.link
        if self._slave_name is None:
            raise RuntimeError("the simulator is not started")
        return self._slave_name

    def start(self) -> Simulator:
        if self._thread is not None:
            raise RuntimeError("the simulator is already started")
        self._plug()
        self._thread = threading.Thread(target=self._loop, name="benchlink-sim", daemon=True)
        self._thread.start()
        return self

    def run(self) -> None:
        self._plug()
        self._loop()

    def request_stop(self) -> None:
        self._stop.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._unplug()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the background device to finish (``duration``); True if it did."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ the pty

    def _plug(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)
        # A real UART drops what nobody reads; never block the device on a full buffer.
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        self._slave_name = os.ttyname(slave)
        if self.config.link is not None:
            try:
                _point_link(self.config.link, self._slave_name)
            except OSError:
                self._close_pty()
                raise
        self.plugged.set()
        if self._on_path is not None:
            self._on_path(self.path)

    def _unplug(self) -> None:
        self.plugged.clear()
        link = self.config.link
        if link is not None and os.path.islink(link):
            os.unlink(link)
        self._close_pty()

    def _close_pty(self) -> None:
        for fd in (self._master, self._slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = None

    def _write(self, data: bytes) -> None:
        if self._master is None:
            return
        try:
            written = os.write(self._master, data)
        except BlockingIOError:
            written = 0
        except OSError:  # the pty went away under us
            written = 0
        self.dropped_bytes += len(data) - written

    # ------------------------------------------------------------------ the device

    def temperature_at(self, elapsed_s: float) -> float:
        c = self.config
        return profile_temperature(c.profile, elapsed_s, c.start_c, c.peak_c, c.period_s)

    def _loop(self) -> None:
        c = self.config
        self._t0 = time.monotonic()
        k = 0
        try:
            while not self._stop.is_set():
                elapsed = k / c.rate
                if c.duration is not None and elapsed >= c.duration:
                    break
                if self._stop.wait(max(0.0, self._t0 + elapsed - time.monotonic())):
                    break
                if c.unplug is not None and c.unplug.contains(elapsed) and self.plugged.is_set():
                    self._unplug()
                    end = c.unplug.at + c.unplug.length
                    if self._stop.wait(max(0.0, self._t0 + end - time.monotonic())):
                        break
                    self._plug()
                    k = math.ceil((time.monotonic() - self._t0) * c.rate)
                    continue
                if c.pause is None or not c.pause.contains(elapsed):
                    self._emit(k, elapsed)
                k += 1
        finally:
            if self._thread is None:  # run() in the caller's thread owns the cleanup
                self._unplug()

    def _emit(self, k: int, elapsed: float) -> None:
        c = self.config
        if c.garbage_every and k > 0 and k % c.garbage_every == 0:
            self._write(self._garbage())
            self.garbage_lines += 1
        probe_open = c.open_probe is not None and c.open_probe.contains(elapsed)
        hot = self.temperature_at(elapsed) + self._rng.gauss(0.0, c.noise_c)
        self._write(self._reading(hot, probe_open).encode("ascii"))
        self.samples_written += 1

    def _garbage(self) -> bytes:
        # Line noise that no protocol can read: bytes that are never valid UTF-8 among ASCII,
        # ended by a newline so the next reading starts on a fresh line.
        noise = [self._rng.choice(b"\x80\x81\xfe\xff\xc0\x00") for _ in range(3)]
        noise += [self._rng.randrange(0x20, 0x7F) for _ in range(self._rng.randrange(0, 30))]
        self._rng.shuffle(noise)
        return bytes(noise) + b"\xff\n"

    def _reading(self, hot_c: float, probe_open: bool) -> str:
        c = self.config
        cj = c.cold_junction_c
        p = c.protocol
        if p in ("value", "csv", "jsonl"):
            mv = emf_mv(c.type, hot_c) - emf_mv(c.type, cj)
            if p == "value":
                return "nan\n" if probe_open else f"{mv:.4f}\n"
            if p == "csv":
                return f"{c.channel},{'nan' if probe_open else f'{mv:.4f}'}\n"
            stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            value = "NaN" if probe_open else f"{mv:.4f}"
            meta = json.dumps({"cold_junction_c": cj})
            return f'{{"value": {value}, "timestamp": "{stamp}", "meta": {meta}}}\n'
        # What a MAX31855 reports: cold junction + emf over its constant Seebeck coefficient.
        reported = cj + (emf_mv(c.type, hot_c) - emf_mv(c.type, cj)) / MAX31855_MV_PER_C
        reported = max(-2048.0, min(2047.75, round(reported * 4) / 4))
        internal = round(cj * 16) / 16
        if p == "max31855-hex":
            faults = ("open_circuit",) if probe_open else ()
            return f"{encode_frame(0.0 if probe_open else reported, internal, faults=faults):08X}\n"
        lines = f"Internal Temp = {internal:.2f}\r\n"
        if probe_open:
            return (
                lines + "Thermocouple fault(s) detected!\r\n"
                "FAULT: Thermocouple is open - no connections.\r\n"
            )
        return lines + f"C = {reported:.2f}\r\n"


def _point_link(link: str, target: str) -> None:
    """Make ``link`` a symlink to ``target`` atomically; never replace a non-link."""
    if os.path.lexists(link) and not os.path.islink(link):
        raise FileExistsError(f"{link} exists and is not a symlink; refusing to replace it")
    tmp = f"{link}.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, link)


# ---------------------------------------------------------------------- CLI


def _window(args: argparse.Namespace, name: str) -> Window | None:
    at, length = getattr(args, f"{name}_at"), getattr(args, f"{name}_for")
    if at is None:
        return None
    if length is None or length <= 0:
        raise ValueError(f"--{name.replace('_', '-')}-for must be positive with --{name}-at")
    return Window(at, length)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="benchlink-sim",
        description="A thermocouple interface on a pseudo-terminal (prints its path first).",
    )
    add_version(p)
    p.add_argument(
        "--protocol", choices=PROTOCOLS, default="value", help="line protocol (default: value)"
    )
    p.add_argument("--type", default="K", help="thermocouple type: B E J K N R S T")
    p.add_argument("--rate", type=float, default=10.0, help="samples per second")
    p.add_argument(
        "--profile", choices=PROFILES, default="heat", help="temperature course (default: heat)"
    )
    p.add_argument("--start-c", type=float, default=25.0, help="start temperature, °C (25)")
    p.add_argument("--peak-c", type=float, default=300.0, help="peak temperature, °C (300)")
    p.add_argument("--period-s", type=float, default=60.0, help="profile period, s (60)")
    p.add_argument("--noise-c", type=float, default=0.2, help="Gaussian noise, °C (0.2)")
    p.add_argument("--channel", default="1", help="csv channel")
    p.add_argument(
        "--cold-junction-c", type=float, default=25.0, help="cold junction temperature, °C (25)"
    )
    p.add_argument("--link", help="symlink to the device (re-created after an unplug)")
    p.add_argument("--duration", type=float, help="seconds to run (default: until a signal)")
    p.add_argument("--seed", type=int, help="noise seed (reproducible signal)")
    p.add_argument(
        "--garbage-every",
        type=int,
        default=0,
        metavar="N",
        help="a line of random non-UTF-8 bytes before every Nth sample (0: never)",
    )
    for name, what in (
        ("open-probe", "open the probe"),
        ("pause", "silence the device"),
        ("unplug", "remove the device"),
    ):
        p.add_argument(f"--{name}-at", type=float, metavar="S", help=f"{what} S seconds in")
        p.add_argument(f"--{name}-for", type=float, metavar="S", help="... for S seconds")
    return p


def config_from_args(argv: list[str] | None = None) -> SimConfig:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return SimConfig(
            protocol=args.protocol,
            type=args.type,
            rate=args.rate,
            profile=args.profile,
            start_c=args.start_c,
            peak_c=args.peak_c,
            period_s=args.period_s,
            noise_c=args.noise_c,
            channel=args.channel,
            cold_junction_c=args.cold_junction_c,
            link=args.link,
            duration=args.duration,
            seed=args.seed,
            garbage_every=args.garbage_every,
            open_probe=_window(args, "open_probe"),
            pause=_window(args, "pause"),
            unplug=_window(args, "unplug"),
        )
    except ValueError as exc:
        parser.error(str(exc))


class _Stopped(BaseException):
    """SIGINT or SIGTERM: raised in the main thread, it ends ``run()`` through its cleanup."""


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[None]:
    stopping = False

    def handler(signum: int, frame: FrameType | None) -> None:
        # Raise, not sim.request_stop(): setting the Event takes its lock, which the main
        # thread, interrupted inside Event.wait, may be holding -- SIGINT hung the simulator
        # about one time in thirty. A second signal during the cleanup is ignored.
        nonlocal stopping
        if not stopping:
            stopping = True
            raise _Stopped

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    except _Stopped:
        pass
    finally:
        stopping = True  # a signal from here on has nothing left to stop
        for s, h in previous.items():
            signal.signal(s, h)


def main(argv: list[str] | None = None) -> int:
    config = config_from_args(argv)

    def announce(path: str) -> None:
        print(path, flush=True)

    sim = Simulator(config, on_path=announce)
    with _stop_on_signals():
        try:
            sim.run()
        except FileExistsError as exc:
            print(f"benchlink-sim: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
