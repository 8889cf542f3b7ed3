"""A notebook as a process, for the offline tests: it logs metrics while told to, says so on
stdout, and waits to be killed.

    python -m tests.client.notebook URL USER PROJECT RUN_ID OFFLINE_DIR STEPS
"""

from __future__ import annotations

import sys
import time

from benchlink import Client, Retry

url, user, project, run_id, offline_dir, steps = sys.argv[1:7]
client = Client(
    url,
    user=user,
    project=project,
    role="owner",
    offline_dir=offline_dir,
    retry=Retry(attempts=2, backoff=0.05, cap=0.2),
)
run = client.runs.get(run_id)
print("ready", flush=True)
sys.stdin.readline()  # the test takes the server down, then says go
for step in range(int(steps)):
    run.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
print("logged", client.metrics_logger.pending(), flush=True)
time.sleep(600)  # killed here (kill -9): nothing runs on the way out
