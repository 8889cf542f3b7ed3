"""Power loss of the edge: kill -9 inside SQLite commits, many times, at seeded random moments
(a VM step inside :meth:`Buffer.commit`, or a timer from outside that also lands in fsyncs).

After every kill the same buffer file (same inode: never deleted or recreated) opens cleanly,
passes SQLite's integrity check, and holds exactly the readings 0..M once each, where M is at
least the last acknowledged reading and at most the last one handed over (a group commit is
all or nothing)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from edge.buffer import Buffer
from tests.reliability.conftest import Figures, scale
from tests.support.cloud import REPO

CHILD = "tests.reliability.powerloss_child"


def kill_once(
    buffer: Path, out: Path, rng: random.Random, before: int
) -> tuple[str, int, list[int]]:
    """One life of the writer, ended by kill -9: (how, last acked seq, the last seq of each
    write handed over). ``before``: the last seq committed by the lives before."""
    how = rng.choice(("inside", "timer"))
    kill_at = rng.randint(1, 40_000) if how == "inside" else 0
    with out.open("w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", CHILD, str(buffer), str(rng.randrange(2**31)), str(kill_at)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    try:
        deadline = time.monotonic() + 30
        while "ready" not in out.read_text() and proc.poll() is None:
            assert time.monotonic() < deadline, out.read_text()[-2000:]
            time.sleep(0.01)
        if how == "timer":
            time.sleep(rng.uniform(0.0, 0.4))
            proc.send_signal(signal.SIGKILL)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:  # the step came later than 10 s of commits
            how = "timer"
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, out.read_text()[-2000:]
    acked, handed = before, [before]
    for line in out.read_text().splitlines():
        word, *nums = line.split()
        if word == "acked":
            acked = int(nums[0])
        elif word == "submit":
            handed = [acked, *map(int, nums)]
    return how, acked, handed


def check_buffer(buffer: Path, inode: int, acked: int, handed: list[int]) -> int:
    """The buffer after a kill; returns the last committed seq."""
    assert buffer.stat().st_ino == inode, "the buffer file was replaced"
    buf = Buffer(buffer)  # opens cleanly: no exception, no recovery by deleting
    try:
        assert buf.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        seqs = [int(r) for (r,) in buf.conn.execute("SELECT raw_value FROM readings ORDER BY id")]
    finally:
        buf.close()
    doubled = [s for s, n in Counter(seqs).items() if n > 1]
    assert not doubled, f"readings stored twice: {doubled[:10]}"
    assert seqs == list(range(len(seqs))), "a hole: a reading committed after one that was not"
    last = len(seqs) - 1
    assert last >= acked, f"acknowledged readings lost: {acked - last}"
    # All or nothing per group: the end of an acknowledged write or of one handed over.
    assert last in handed, f"a torn group commit: ended at {last}, writes ended at {handed}"
    return last


def test_kill9_inside_sqlite_commits_never_loses_or_tears(
    tmp_path: Path, rng: random.Random, figures: Figures, seed_note: str
) -> None:
    buffer = tmp_path / "buffer.db"
    Buffer(buffer).close()
    inode = buffer.stat().st_ino
    kills: Counter[str] = Counter()
    outcome: Counter[str] = Counter()
    started = time.monotonic()
    last = -1
    for i in range(int(scale(10, 200))):
        how, acked, handed = kill_once(buffer, tmp_path / "child.out", rng, last)
        try:
            last = check_buffer(buffer, inode, acked, handed)
        except AssertionError as exc:
            raise AssertionError(f"after kill {i + 1} ({how}), {seed_note}: {exc}") from None
        kills[how] += 1
        outcome["in-flight group kept" if last > acked else "in-flight group rolled back"] += 1
    assert os.path.exists(buffer)
    figures.record(
        "power",
        "kill -9 of the edge's writer inside SQLite commits",
        faults={f"kill -9 ({k})": n for k, n in sorted(kills.items())},
        readings=last + 1,
        lost=0,
        doubled=0,
        reopened_clean=sum(kills.values()),
        outcome=dict(outcome),
        seconds=round(time.monotonic() - started, 1),
    )
