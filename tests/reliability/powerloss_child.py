"""The edge's commit path (Buffer + Writer's group commit) in a process of its own, committing
numbered readings until it is killed -9: ``python -m tests.reliability.powerloss_child BUFFER
SEED KILL_AT``.

It prints ``ready``, then per group ``submit <last seq of each write>`` before handing the
writes over and ``acked <last seq>`` once :meth:`Writer.submit` returned (the moment a source
may acknowledge to its device). ``KILL_AT`` > 0: the process kills itself at that SQLite
virtual-machine step counted inside :meth:`Buffer.commit` only -- a kill at a precise point of
a commit's statements, the fault a timer from outside hits only by chance; 0: it runs until
the parent kills it.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from edge.buffer import Buffer, NewReading, Write
from edge.metrics import EdgeMetrics
from edge.writer import Writer

SENSOR = "00000000-0000-4000-8000-00000000000a"
RUN = "00000000-0000-4000-8000-00000000000b"
SESSION = "00000000-0000-4000-8000-00000000000c"
BASE = datetime(2026, 1, 1, tzinfo=UTC)


def arm(buf: Buffer, kill_at: int) -> None:
    """SIGKILL at the ``kill_at``-th VM step of the commits (a fault at a precise moment)."""
    steps = 0
    inside = False

    def tick() -> int:
        nonlocal steps
        if inside:
            steps += 1
            if steps >= kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
        return 0

    buf.conn.set_progress_handler(tick, 1)
    commit = buf.commit

    def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal inside
        inside = True
        try:
            return commit(*args, **kwargs)
        finally:
            inside = False

    buf.commit = counted  # type: ignore[method-assign]


def reading(seq: int) -> NewReading:
    return NewReading(SENSOR, BASE + timedelta(milliseconds=seq), float(seq), {"seq": seq})


async def main(path: str, seed: int, kill_at: int) -> None:
    rng = random.Random(seed)
    buf = Buffer(path)
    buf.upsert_sensor(SENSOR, "token", "serial", RUN, SESSION)
    seq = int(buf.conn.execute("SELECT COUNT(*) FROM readings").fetchone()[0])
    if kill_at:
        arm(buf, kill_at)
    writer = Writer(buf, EdgeMetrics())
    runner = asyncio.create_task(writer.run())
    print("ready", flush=True)
    while not runner.done():
        writes = []
        for _ in range(rng.randint(1, 4)):  # several writes: one group commit
            n = rng.randint(1, 60)
            writes.append(Write([reading(s) for s in range(seq, seq + n)]))
            seq += n
        print("submit", *(int(w.readings[-1].raw_value) for w in writes), flush=True)
        await asyncio.gather(*(writer.submit(w) for w in writes))
        print("acked", seq - 1, flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
