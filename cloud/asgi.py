"""ASGI entry point: ``uvicorn cloud.asgi:app`` (settings from BENCHLINK_* variables)."""

import gc

from cloud.app import create_app

app = create_app()

# What is imported and built by now lives as long as the process: move it out of the cyclic
# collector's way, so that a full collection walks only what came later. Full collections of
# the whole heap took 86-117 ms on the benchmark machine, stalling whatever request or stream
# was in progress: they were the whole tail of the live latency (p99 157 ms at p50 47 ms).
# A young generation of 20,000 objects instead of 700: a 1000-reading request allocates
# thousands, and collecting every 700 cost a few ms per request (live p50 41-45 -> 35-38 ms
# in three runs each of bench.live on the benchmark machine).
gc.collect()
gc.freeze()
gc.set_threshold(20_000, 20, 20)
