#!/usr/bin/env python3
"""Seed the demo: ``demo_project``, base experiments and runs, sensors with their tokens.

Works over HTTP against a running cloud (local, or the docker-compose one), so it is the same
for SQLite and PostgreSQL. Prints ``project_id``, ``owner_user_id`` and the full sensor tokens
(the server keeps only their hashes).

Running it again creates nothing twice: it finds the project (by name, for the same owner),
the experiments, runs and sensors it made before, and keeps the sensors' tokens: the ones it
was shown are saved in ``--tokens-file`` (default ``var/demo_tokens.json``, readable by you
only) and printed again while the server still has them. ``--rotate-tokens`` gives the sensors
fresh tokens (the previous ones stop working at once).

The owner user id is ``--owner-user-id``, else ``$BENCHLINK_DEMO_OWNER``, else the one saved in
``--owner-file`` (default ``var/demo_owner``), else a new one that is saved there.

.venv/bin/python bin/demo_seed.py --base-url http://localhost:8002
.venv/bin/python bin/demo_seed.py --json          # for machines
eval "$(.venv/bin/python bin/demo_seed.py --env)"  # OWNER, PROJECT, FURNACE_TOKEN, ...
.venv/bin/python bin/demo_seed.py --edge-toml var/edge.toml  # and an edge config
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import sys
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from common.cli import add_version, plain

REPO = Path(__file__).resolve().parents[1]
PROJECT_NAME = "demo_project"
DEFAULT_BASE_URL = os.environ.get("BASE", "http://localhost:8002")

#: The demo's sensors. The scenario's own ``temperature_raw`` is registered by its curl line
#: (docs/demo.md, bin/demo.py), not here: names are unique per project.
SENSORS: tuple[dict[str, Any], ...] = (
    {
        "name": "furnace_tc_k",
        "type": "thermocouple",
        "input_unit": "mV",
        "display_unit": "°C",
        "conversion_profile": {
            "version": "v1",
            "kind": "thermocouple",
            "payload": {"type": "K", "cold_junction_c": 24.5, "display": "C", "input": "mV"},
        },
    },
    {
        "name": "chamber_mqtt",
        "type": "temperature",
        "input_unit": "°C",
        "display_unit": "°C",
        "conversion_profile": {
            "version": "v1",
            "kind": "linear",
            "payload": {"a": 1.0, "b": 0.0},
        },
    },
)

EXPERIMENTS: tuple[dict[str, Any], ...] = (
    {
        "name": "Furnace calibration",
        "description": "Type K thermocouple against the furnace controller, 25 to 420 °C.",
        "tags": ["furnace", "calibration", "type-k"],
    },
    {
        "name": "Thermal cycling",
        "description": "Cycling between 120 and 320 °C; chamber sensor over MQTT.",
        "tags": ["cycling", "mqtt"],
    },
)


class ApiError(RuntimeError):
    """A request the cloud answered with an error (problem+json detail kept)."""

    def __init__(self, method: str, path: str, status: int, detail: str) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {detail}")
        self.status = status
        self.detail = detail


@dataclass
class Api:
    """The cloud's REST API as the project owner (identity headers of the gateway)."""

    base_url: str
    owner_user_id: str
    project_id: str | None = None
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30.0))

    def headers(self, key: str | None = None) -> dict[str, str]:
        h = {"X-User-Id": self.owner_user_id}
        if self.project_id:
            h |= {"X-Project-Id": self.project_id, "X-Project-Role": "owner"}
        if key:
            h["Idempotency-Key"] = key
        return h

    def request(
        self, method: str, path: str, *, json: Any = None, key: str | None = None, **params: Any
    ) -> Any:
        url = self.base_url.rstrip("/") + path
        r = self.http.request(method, url, json=json, params=params, headers=self.headers(key))
        if r.status_code >= 400:
            try:
                detail = str(r.json().get("detail", r.text))
            except ValueError:
                detail = r.text[:500]
            raise ApiError(method, path, r.status_code, detail)
        return r.json() if r.content else None

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, **params)

    def items(self, path: str, **params: Any) -> list[Any]:
        """Every item of a paginated list (``{"items", "next_cursor"}``), page by page."""
        found: list[Any] = []
        cursor = None
        while True:
            page = self.get(
                path, **{"limit": 500, **params, **({"cursor": cursor} if cursor else {})}
            )
            found += page["items"]
            cursor = page["next_cursor"]
            if not cursor:
                return found

    def post(self, path: str, body: Any = None, *, key: str | None = None) -> Any:
        return self.request("POST", path, json=body, key=key)

    def patch(self, path: str, body: Any) -> Any:
        return self.request("PATCH", path, json=body)

    def close(self) -> None:
        self.http.close()


@dataclass
class SeededSensor:
    name: str
    id: str
    kind: str
    token: str | None
    token_preview: str | None
    created: bool
    rotated: bool


@dataclass
class Seed:
    base_url: str
    owner_user_id: str
    project_id: str
    project_created: bool
    experiments: dict[str, str]
    runs: dict[str, str]
    sensors: list[SeededSensor]

    def sensor(self, name: str) -> SeededSensor:
        return next(s for s in self.sensors if s.name == name)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class TokenStore:
    """Sensor tokens this seed was shown, by sensor id, in a file only its owner may read: the
    server keeps only hashes, and a re-run should not have to rotate to print them again."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.tokens: dict[str, str] = {}
        if path is not None and path.is_file():
            with contextlib.suppress(ValueError):
                loaded = json.loads(path.read_text())
                self.tokens = {str(k): str(v) for k, v in loaded.items()}

    def known(self, sensor_id: str, preview: str | None) -> str | None:
        """The saved token of a sensor if it is still the one the server has (by its preview:
        a token rotated elsewhere no longer matches)."""
        token = self.tokens.get(sensor_id)
        if token is None or preview is None:
            return None
        head, _, tail = preview.partition("…")
        return token if token.startswith(head) and token.endswith(tail) else None

    def save(self, sensor_id: str, token: str) -> None:
        self.tokens[sensor_id] = token
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(self.tokens, f, indent=2)
        self.path.chmod(0o600)


# --- finding or creating each object ------------------------------------------------------


def ensure_project(api: Api) -> tuple[str, bool]:
    found = api.get("/api/v1/projects", name=PROJECT_NAME, limit=1)["items"]
    if found:
        return str(found[0]["id"]), False
    body = {"name": PROJECT_NAME, "description": "The benchlink demo scenario."}
    created = api.post("/api/v1/projects", body, key=f"demo-seed-project-{api.owner_user_id}")
    return str(created["id"]), True


def find_experiment(api: Api, name: str) -> dict[str, Any] | None:
    page = api.get("/api/v1/experiments", q=name, include_archived="true", limit=500)
    return next((e for e in page["items"] if e["name"] == name), None)


def ensure_experiment(api: Api, spec: dict[str, Any]) -> str:
    found = find_experiment(api, spec["name"])
    if found:
        return str(found["id"])
    body = {"project_id": api.project_id, **spec}
    return str(api.post("/api/v1/experiments", body, key=f"demo-seed-exp-{spec['name']}")["id"])


def ensure_run(api: Api, experiment_id: str, name: str) -> str:
    runs = api.get(f"/api/v1/experiments/{experiment_id}/runs", limit=500)["items"]
    found = next((r for r in runs if r["name"] == name), None)
    if found:
        return str(found["id"])
    path = f"/api/v1/experiments/{experiment_id}/runs"
    body = {"name": name, "params": {"seeded": True}}
    return str(api.post(path, body, key=f"demo-seed-run-{experiment_id}-{name}")["id"])


def ensure_sensor(
    api: Api, spec: dict[str, Any], tokens: TokenStore, *, rotate: bool, need_token: bool
) -> SeededSensor:
    """The sensor, registered if missing. An existing one keeps its token unless ``rotate``
    (or ``need_token`` and its token is not saved here: then only a rotation can show one)."""
    found = api.get("/api/v1/sensors", name=spec["name"])["items"]
    kind = spec["conversion_profile"]["kind"]
    if not found:
        body = {"project_id": api.project_id, **spec}
        # No Idempotency-Key: a replayed registration would hand out a token we may have rotated.
        out = api.post("/api/v1/sensors", body)
        s = out["sensor"]
        tokens.save(s["id"], out["token"])
        return SeededSensor(s["name"], s["id"], kind, out["token"], s["token_preview"], True, False)
    s = found[0]
    kept = tokens.known(s["id"], s["token_preview"])
    if not rotate and (kept or not need_token):
        return SeededSensor(s["name"], s["id"], kind, kept, s["token_preview"], False, False)
    out = api.post(f"/api/v1/sensors/{s['id']}/rotate-token")
    s = out["sensor"]
    tokens.save(s["id"], out["token"])
    return SeededSensor(s["name"], s["id"], kind, out["token"], s["token_preview"], False, True)


def ensure_running_session(api: Api, run_id: str) -> str:
    """The run's running capture session, or a new one (the next ordinal)."""
    base = f"/api/v1/runs/{run_id}/capture-sessions"
    running = api.get(base, status="running", limit=1)["items"]
    if running:
        return str(running[0]["id"])
    ordinal = max((s["ordinal_number"] for s in api.items(base)), default=0) + 1
    return str(api.post(base, {"ordinal_number": ordinal, "status": "running"})["id"])


def edge_toml(result: Seed, session_id: str, device: str, mqtt_url: str) -> str:
    """An edge config for the seeded sensors on the "Furnace calibration" baseline run:
    furnace_tc_k from the simulator's serial device, chamber_mqtt over MQTT."""
    run_id = result.runs["Furnace calibration"]
    furnace, chamber = result.sensor("furnace_tc_k"), result.sensor("chamber_mqtt")
    if not (furnace.token and chamber.token):
        raise ValueError(
            "--edge-toml needs the sensors' tokens, which are not saved in the tokens file: "
            "add --rotate-tokens to give them fresh ones"
        )

    def sensor(s: SeededSensor, source: str) -> str:
        return (
            f'[[sensors]]\nsensor_id = "{s.id}"\ntoken = "{s.token}"\nrun_id = "{run_id}"\n'
            f'capture_session_id = "{session_id}"\nsource = "{source}"\n'
        )

    return (
        "# Written by bin/demo_seed.py --edge-toml. Holds sensor tokens: keep it private.\n"
        f'[cloud]\nurl = "{result.base_url}"\n\n'
        '[buffer]\npath = "/var/lib/benchlink/buffer.db"\n\n'
        f'[mqtt]\nurl = "{mqtt_url}"\n\n'
        + sensor(furnace, "serial")
        + f'port = "{device}"\nbaudrate = 9600\nprotocol = "value"\n\n'
        + sensor(chamber, "mqtt")
    )


def write_edge_toml(result: Seed, path: Path, device: str, mqtt_url: str) -> None:
    api = Api(result.base_url, result.owner_user_id, result.project_id)
    try:
        session_id = ensure_running_session(api, result.runs["Furnace calibration"])
    finally:
        api.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(edge_toml(result, session_id, device, mqtt_url))
    path.chmod(0o600)


def seed(
    base_url: str,
    owner_user_id: str,
    *,
    rotate: bool = False,
    need_tokens: bool = False,
    tokens_file: Path | None = None,
) -> Seed:
    """Find or create everything. ``need_tokens``: rotate the tokens of sensors whose token
    is not in ``tokens_file`` (a caller that must hand them to an edge)."""
    api = Api(base_url, owner_user_id)
    tokens = TokenStore(tokens_file)
    try:
        project_id, created = ensure_project(api)
        api.project_id = project_id
        experiments = {e["name"]: ensure_experiment(api, e) for e in EXPERIMENTS}
        runs = {name: ensure_run(api, eid, "baseline") for name, eid in experiments.items()}
        sensors = [
            ensure_sensor(api, spec, tokens, rotate=rotate, need_token=need_tokens)
            for spec in SENSORS
        ]
    finally:
        api.close()
    return Seed(base_url, owner_user_id, project_id, created, experiments, runs, sensors)


# --- owner id -----------------------------------------------------------------------------


def resolve_owner(explicit: str | None, owner_file: Path) -> str:
    """The owner id to use, saving a newly generated one so the next run finds the project."""
    chosen = explicit or os.environ.get("BENCHLINK_DEMO_OWNER")
    if chosen:
        return str(uuid.UUID(chosen))
    if owner_file.is_file():
        return str(uuid.UUID(owner_file.read_text().strip()))
    owner = str(uuid.uuid4())
    owner_file.parent.mkdir(parents=True, exist_ok=True)
    owner_file.write_text(owner + "\n")
    return owner


#: where the demo scripts keep the owner's id between runs
OWNER_FILE = REPO / "var" / "demo_owner"


def add_owner_options(p: argparse.ArgumentParser, *, default: str | None, help: str) -> None:
    """``--owner-user-id`` and ``--owner-file``, as every demo script that reads as the owner
    takes them."""
    p.add_argument("--owner-user-id", default=default, help=help)
    p.add_argument(
        "--owner-file",
        type=Path,
        default=OWNER_FILE,
        help="the owner's id as bin/demo_seed.py keeps it between runs (default: var/demo_owner)",
    )


def tokens_beside(owner_file: Path) -> Path:
    return owner_file.parent / "demo_tokens.json"


# --- output -------------------------------------------------------------------------------


def env_lines(result: Seed) -> list[str]:
    values = {
        "BASE": result.base_url,
        "OWNER": result.owner_user_id,
        "PROJECT": result.project_id,
    }
    for name, eid in result.experiments.items():
        prefix = name.split()[0].upper()  # "Furnace calibration" -> FURNACE_EXPERIMENT
        values[f"{prefix}_EXPERIMENT"] = eid
        values[f"{prefix}_RUN"] = result.runs[name]
    for s in result.sensors:
        prefix = s.name.split("_")[0].upper()
        values[f"{prefix}_SENSOR"] = s.id
        if s.token:
            values[f"{prefix}_TOKEN"] = s.token
    return [f"export {k}={shlex.quote(v)}" for k, v in values.items()]


def human_lines(result: Seed) -> list[str]:
    state = "created" if result.project_created else "found (re-run: nothing duplicated)"
    lines = [
        f"{PROJECT_NAME}: {state}",
        f"project_id     {result.project_id}",
        f"owner_user_id  {result.owner_user_id}",
    ]
    lines += [f"experiment     {eid}  {name}" for name, eid in result.experiments.items()]
    lines += [f"run            {rid}  {name} / baseline" for name, rid in result.runs.items()]
    for s in result.sensors:
        how = "registered" if s.created else ("token rotated" if s.rotated else "token kept")
        lines.append(f"sensor         {s.id}  {s.name} ({s.kind}, {how})")
        if s.token:
            lines.append(f"  token        {s.token}")
        else:
            lines.append(f"  token        {s.token_preview} (not saved here; --rotate-tokens)")
    if any(s.rotated for s in result.sensors):
        lines.append("Rotated: the sensors' previous tokens no longer work.")
    lines.append(
        "The server keeps only the tokens' hashes; this seed saved them in its tokens file "
        "(private to you) and shows them again on a re-run."
    )
    return lines


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=plain(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_version(p)
    p.add_argument("--base-url", default=DEFAULT_BASE_URL, help="default: $BASE or %(default)s")
    add_owner_options(
        p,
        default=None,
        help="the demo project's owner (default: $BENCHLINK_DEMO_OWNER, else --owner-file)",
    )
    p.add_argument(
        "--tokens-file",
        type=Path,
        default=None,
        help="where the sensors' tokens are saved (mode 0600) so that a re-run shows them "
        "again (default: demo_tokens.json beside --owner-file)",
    )
    p.add_argument(
        "--rotate-tokens",
        action="store_true",
        help="give the existing sensors fresh tokens (the previous ones stop working)",
    )
    p.add_argument(
        "--edge-toml",
        type=Path,
        default=None,
        help="also write an edge config for the seeded sensors (a running capture session on "
        "the Furnace calibration baseline run is made if there is none)",
    )
    p.add_argument(
        "--edge-device",
        default="/var/lib/benchlink/tty-furnace",
        help="--edge-toml: the serial device of the furnace sensor (%(default)s)",
    )
    p.add_argument(
        "--edge-mqtt-url",
        default="mqtt://localhost:1883",
        help="--edge-toml: the broker (%(default)s)",
    )
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print one JSON object")
    out.add_argument("--env", action="store_true", help="print shell `export` lines")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    owner = resolve_owner(args.owner_user_id, args.owner_file)
    try:
        tokens_file = args.tokens_file or tokens_beside(args.owner_file)
        result = seed(
            args.base_url,
            owner,
            rotate=args.rotate_tokens,
            tokens_file=tokens_file,
        )
        if args.edge_toml:
            write_edge_toml(result, args.edge_toml, args.edge_device, args.edge_mqtt_url)
    except (ApiError, httpx.HTTPError, ValueError) as exc:
        print(f"demo_seed: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        print("\n".join(env_lines(result) if args.env else human_lines(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
