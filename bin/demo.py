#!/usr/bin/env python3
"""``make demo``: the seed scenario end to end, on embedded defaults, in one command.

1. migrate the database (SQLite under var/ unless ``--database-url``) and start the cloud
   (``benchlink-cloud serve --dev-identity``, so the portal works in a plain browser);
2. seed ``demo_project`` (bin/demo_seed.py) and register the scenario's ``temperature_raw``
   sensor exactly as its curl line does;
3. create an experiment, a run and a running capture session;
4. start the thermocouple simulator on a pseudo-terminal and the edge daemon reading it
   (``furnace_tc_k``, type K); if a Mosquitto broker answers (``--mqtt-url``), a device
   publishes ``chamber_mqtt`` readings over MQTT through the edge as well;
5. stream ``temperature_raw`` with bin/demo_sensor.py and log ``loss`` metrics as it goes;
6. print the portal URL and what to look at, and keep running until Ctrl-C, or for
   ``--duration`` / ``$DURATION`` seconds; then wrap up: stop the capture session, log the
   last metrics and read them back, mark the run succeeded, archive the experiment, cancel
   the warm-up run with a batch status change, and print what landed.

Every child (cloud, simulator, edge) runs in its own process group, so Ctrl-C reaches only
this script, which wraps up through the still-running cloud and then stops them all. A second
Ctrl-C skips the wrap-up. Logs: ``<state-dir>/logs/``, with ``demo.log``: all this script
said, also after its stdout is gone.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import FrameType

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
from demo_children import PYTHON, REPO, Children, child_env, port_open, wait_ready
from demo_feed import Producers, metrics_while_running, stream_scenario_sensor
from demo_mqtt import forget_mqtt_session, mqtt_broker, publish_mqtt
from demo_report import guide, keep_transcript, print_summary, say, summarize, wrap_up
from demo_scene import (
    Scene,
    edge_argv,
    edge_client_id,
    edge_toml,
    set_the_scene,
    start_simulator,
    write_private,
)
from demo_seed import (
    PROJECT_NAME,
    Api,
    ApiError,
    Seed,
    add_owner_options,
    resolve_owner,
    seed,
    tokens_beside,
)

from common.cli import add_version, plain

# --- steps ---------------------------------------------------------------------------------


def migrate(database_url: str) -> None:
    subprocess.run(
        [PYTHON, str(REPO / "bin" / "migrate.py"), "--database-url", database_url],
        cwd=REPO,
        env=child_env(),
        check=True,
    )


def serve_options(args: argparse.Namespace, owner: str) -> list[str]:
    """``benchlink-cloud serve`` as the demo runs it: the portal opens on demo_project as its
    owner (the development identity, with that owner as its default)."""
    return [
        *("--host", args.host, "--port", str(args.port), "--database-url", args.database_url),
        *("--dev-identity", "--dev-identity-user", owner, "--dev-identity-project", PROJECT_NAME),
    ]


def start_cloud(children: Children, args: argparse.Namespace, owner: str) -> str:
    if port_open(args.host, args.port):
        other = args.port + 1
        raise RuntimeError(
            f"something already listens on {args.host}:{args.port} (another demo?): stop it, or "
            f'pick another port: --port {other} (with make: make demo DEMO_ARGS="--port {other}")'
        )
    url = f"http://{args.host}:{args.port}"
    argv = [PYTHON, "-m", "cloud.cli", "serve", *serve_options(args, owner), "--no-migrate"]
    wait_ready(url, children.start("cloud", [*argv, "--log-level", "warning"]))
    return url


def drain_edge(children: Children, config: Path) -> None:
    """Stop the simulator, let the edge sync what it buffered, then flush the rest."""
    children.stop("simulator")
    time.sleep(1.5)  # the edge's sync interval is 0.5 s
    children.stop("edge")
    subprocess.run(edge_argv(config, "flush"), cwd=REPO, env=child_env(), check=False, timeout=120)


def browse_again(args: argparse.Namespace, owner: str) -> str:
    """The command that serves the demo's database again, portal as after ``make demo``."""
    cloud = Path(PYTHON).parent / "benchlink-cloud"
    shown = cloud.relative_to(REPO) if cloud.is_relative_to(REPO) else cloud
    return shlex.join([str(shown), "serve", *serve_options(args, owner)])


# --- main ---------------------------------------------------------------------------------


class Interrupted(Exception):
    pass


def install_signals(stop: threading.Event) -> None:
    """First Ctrl-C / SIGTERM: wrap up. A second one: stop at once."""

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise Interrupted(signal.Signals(signum).name)
        say(f"\n{signal.Signals(signum).name}: wrapping up (again to stop at once)")
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def wait_until(stop: threading.Event, duration: float, checks: list[Callable[[], None]]) -> None:
    deadline = time.monotonic() + duration if duration else math.inf
    while not stop.wait(0.5) and time.monotonic() < deadline:
        for check in checks:
            check()


def start_edge(
    children: Children, args: argparse.Namespace, scene: Scene, base_url: str, mqtt: str | None
) -> Path:
    """The simulator on a pty and the edge daemon reading it; the edge config's path."""
    state: Path = args.state_dir
    config = state / "edge.toml"
    device = start_simulator(children, state, args.rate)
    write_private(config, edge_toml(scene, base_url, state, device, mqtt))
    children.start("edge", edge_argv(config, "run"))
    say(f"simulator on {device}; edge daemon with {config}")
    return config


def start_producers(
    scene: Scene, base_url: str, owner: str, mqtt: str | None
) -> tuple[Producers, list[int]]:
    """The scenario sensor, the metrics and (with a broker and the edge) the MQTT device;
    the list gets the number of metric steps logged once the producers stop."""
    producers = Producers()
    producers.spawn("demo_sensor", lambda: stream_scenario_sensor(scene, base_url, producers.stop))
    metric_steps: list[int] = []

    def metrics() -> None:
        factory = lambda: Api(base_url, owner, scene.seed.project_id)  # noqa: E731
        metric_steps.append(metrics_while_running(factory, scene.run_id, producers.stop))

    producers.spawn("metrics", metrics)
    if mqtt:
        producers.spawn("mqtt device", lambda: publish_mqtt(scene, mqtt, producers.stop))
    return producers, metric_steps


def stop_edge(children: Children, config: Path, scene: Scene, mqtt: str | None) -> None:
    drain_edge(children, config)
    if mqtt:
        try:
            forget_mqtt_session(mqtt, edge_client_id(scene))
        except (OSError, RuntimeError) as exc:
            say(f"MQTT: the demo edge's session was not removed from the broker: {exc}")


def set_up(args: argparse.Namespace, children: Children) -> tuple[str, str, Seed]:
    """Migrate, start the cloud and seed demo_project: the cloud's URL, the owner, the seed."""
    state: Path = args.state_dir
    state.mkdir(parents=True, exist_ok=True)
    (state / "edge-buffer.db").unlink(missing_ok=True)  # a scratch buffer per demo run
    migrate(args.database_url)
    owner = resolve_owner(args.owner_user_id, args.owner_file)
    base_url = start_cloud(children, args, owner)
    say(f"cloud: {base_url} ({args.database_url})")
    seeded = seed(base_url, owner, need_tokens=True, tokens_file=tokens_beside(args.owner_file))
    say(f"seeded demo_project {seeded.project_id} for owner {owner}")
    return base_url, owner, seeded


def finish(api: Api, scene: Scene, metric_steps: list[int], state: Path) -> None:
    """Wrap up through the cloud, then print and keep the summary."""
    wrap_up(api, scene, metric_steps[0] if metric_steps else 0)
    summary = summarize(api, scene)
    api.close()
    print_summary(summary)
    (state / "summary.json").write_text(json.dumps(summary, indent=2))


def run_demo(args: argparse.Namespace, children: Children, stop: threading.Event) -> int:
    base_url, owner, seeded = set_up(args, children)
    api = Api(base_url, owner, seeded.project_id)
    scene = set_the_scene(api, seeded)
    say(f"scenario sensor temperature_raw {scene.sensor_id}; run {scene.run_id}")
    mqtt, why_not = (None, "--no-mqtt") if args.no_mqtt else mqtt_broker(args.mqtt_url)
    if mqtt is None:
        say(f"MQTT: {why_not}; going on without the MQTT device")
    edge_mqtt = None if args.no_edge else mqtt
    config = None if args.no_edge else start_edge(children, args, scene, base_url, mqtt)
    producers, metric_steps = start_producers(scene, base_url, owner, edge_mqtt)
    guide(api, base_url, scene, edge_mqtt)
    wait_until(stop, args.duration, [children.check, producers.check])
    producers.join()
    producers.check()
    if config is not None:
        stop_edge(children, config, scene, mqtt)
    finish(api, scene, metric_steps, args.state_dir)
    if args.serve_after:
        say(f"\nThe cloud keeps serving {base_url}/ until Ctrl-C.")
        stop.clear()
        wait_until(stop, 0, [children.check])
    say(f"\nEverything stays in {args.database_url}. To browse it again at {base_url}/:")
    say(f"  {browse_again(args, owner)}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=plain(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_version(p)
    p.add_argument("--host", default="127.0.0.1", help="the cloud's address (%(default)s)")
    p.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("PORT", "8002")),
        help="the cloud's port (default: $PORT or 8002)",
    )
    p.add_argument(
        "--database-url",
        default=os.environ.get("BENCHLINK_DATABASE_URL", f"sqlite:///{REPO / 'var' / 'demo.db'}"),
        help="the cloud's database (default: $BENCHLINK_DATABASE_URL or var/demo.db)",
    )
    p.add_argument(
        "--duration",
        type=float,
        default=float(os.environ.get("DURATION") or 0),
        help="seconds, then wrap up and exit (default: $DURATION, else until Ctrl-C)",
    )
    p.add_argument(
        "--state-dir",
        type=Path,
        default=REPO / "var" / "demo",
        help="edge config, buffer and logs (default: var/demo)",
    )
    add_owner_options(p, default=None, help="the demo project's owner (a UUID)")
    p.add_argument(
        "--mqtt-url", default="mqtt://127.0.0.1:1883", help="the broker to try (%(default)s)"
    )
    p.add_argument("--no-mqtt", action="store_true", help="do not use a broker even if one runs")
    p.add_argument("--no-edge", action="store_true", help="no simulator and edge daemon")
    p.add_argument("--rate", type=float, default=10.0, help="simulator samples per second")
    p.add_argument("--serve-after", action="store_true", help="keep the cloud up at the end")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    children = Children(args.state_dir / "logs")
    keep_transcript(children.log_dir / "demo.log")
    stop = threading.Event()
    install_signals(stop)
    try:
        return run_demo(args, children, stop)
    except Interrupted as exc:
        say(f"{exc}: stopping at once")
        return 130
    except (RuntimeError, ApiError, httpx.HTTPError, subprocess.SubprocessError) as exc:
        say(f"demo: {exc}")
        say(f"logs: {children.log_dir}")
        return 1
    except Exception:  # a defect: its traceback also where a closed stdout cannot lose it
        say(traceback.format_exc().rstrip(), terminal=False)
        raise
    finally:
        children.stop_all()


if __name__ == "__main__":
    sys.exit(main())
