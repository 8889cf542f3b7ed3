"""A notebook reading a run, measured: how much its peak RSS grows while it does, next to how
many bytes it received. Prints one JSON object.

    python -m tests.client.memory_probe URL USER PROJECT RUN_ID WARMUP_UNTIL

Two reads: ``batches`` (``run.data.telemetry_batches()``, a frame per page, each dropped) and
``frame`` (``run.telemetry()``, the whole run as one pandas frame). ``WARMUP_UNTIL``: the
first readings, read once before measuring so that every import and allocator pool is in
place; before each read the kernel's peak (VmHWM) is reset, so a growth is that read's alone.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

from benchlink import Client, ExportProgress


def status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


url, user, project, run_id, warmup_until = sys.argv[1:6]
client = Client(url, user=user, project=project, role="owner")
run = client.runs.get(run_id)
for _ in run.data.telemetry_batches(until=warmup_until):
    pass
run.telemetry(until=warmup_until)

seen = {"bytes": 0, "readings": 0}


def progress(p: ExportProgress) -> None:
    seen["bytes"], seen["readings"] = p.bytes, p.rows or 0


def measure(read: Callable[[], int]) -> dict[str, int]:
    """The peak RSS growth while ``read()`` runs, the bytes it received, its readings."""
    seen.update(bytes=0, readings=0)
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = status_kb("VmRSS")
    count = read()
    return {"growth": (status_kb("VmHWM") - before) * 1024, "count": count, **seen}


def pages() -> int:
    return sum(len(page) for page in run.data.telemetry_batches(progress=progress))


frame_size = {"bytes": 0}


def frame() -> int:
    df = run.telemetry(progress=progress)
    frame_size["bytes"] = int(df.memory_usage(deep=True).sum())
    return len(df)


# Pages first: the frame's memory, once freed, would be there for them to reuse.
out = {"batches": measure(pages), "frame": measure(frame)}
out["frame"]["frame_bytes"] = frame_size["bytes"]
print(json.dumps(out))
