"""docker-compose.yml, Dockerfile and .dockerignore, checked by reading them (no Docker engine
here): the services, their order, ports, environment, volumes, healthchecks, and that every
file they name exists."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from demo_seed import Seed, SeededSensor, edge_toml

from edge.config import load_config
from tests.demo.conftest import REPO

COMPOSE = REPO / "docker-compose.yml"
DEFAULT = re.compile(r"\$\{(\w+):-([^}]*)\}")


def resolve(value: str) -> str:
    """``${VAR:-default}`` as Compose resolves it with VAR unset."""
    return DEFAULT.sub(lambda m: m.group(2), value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = compose["services"]
    return result


def script(service: dict[str, Any]) -> str:
    command = service["command"]
    assert command[:2] == ["sh", "-ec"], "a shell command that stops at the first failure"
    return str(command[2])


def test_the_services(services: dict[str, Any], compose: dict[str, Any]) -> None:
    assert set(services) == {"postgres", "migrate", "cloud", "mosquitto", "edge"}
    assert set(compose["volumes"]) == {"pgdata", "mosquitto-data", "edge-buffer"}
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = resolve(volume).split(":")[0]
            if not source.startswith("."):
                assert source in compose["volumes"], f"{name}: undeclared volume {source}"


def test_postgres_is_healthy_before_anything_uses_it(services: dict[str, Any]) -> None:
    pg = services["postgres"]
    assert pg["image"].startswith("postgres:")
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    assert "pgdata:/var/lib/postgresql/data" in pg["volumes"]
    env = pg["environment"]
    assert env["POSTGRES_USER"] == "benchlink" and env["POSTGRES_DB"] == "benchlink"


def test_migrate_runs_once_then_the_cloud_starts(services: dict[str, Any]) -> None:
    migrate, cloud = services["migrate"], services["cloud"]
    assert migrate["command"][:3] == ["python", "bin/migrate.py", "--database-url"]
    assert (REPO / "bin" / "migrate.py").is_file()
    assert migrate["restart"] == "no"
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    url = resolve(migrate["command"][3])
    assert url == "postgresql://benchlink:benchlink@postgres:5432/benchlink"
    assert resolve(cloud["environment"]["BENCHLINK_DATABASE_URL"]) == url
    assert cloud["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "migrate": {"condition": "service_completed_successfully"},
    }


def test_the_cloud_serves_on_8002(services: dict[str, Any]) -> None:
    cloud = services["cloud"]
    assert cloud["build"] == "."
    assert [resolve(port) for port in cloud["ports"]] == ["127.0.0.1:8002:8002"]
    argv = cloud["command"]
    assert argv[:2] == ["benchlink-cloud", "serve"]
    assert argv[argv.index("--host") + 1] == "0.0.0.0"
    assert argv[argv.index("--port") + 1] == "8002"
    assert "--no-migrate" in argv  # the migrate service did it
    assert "/readyz" in " ".join(cloud["healthcheck"]["test"])
    assert resolve(cloud["environment"]["BENCHLINK_ENVIRONMENT"]) == "development"


def published(port: str) -> tuple[str, str]:
    """The host address and port of a ``ports`` entry (Compose's short syntax)."""
    parts = resolve(port).split(":")
    return (parts[0] if len(parts) == 3 else "0.0.0.0", parts[-2])


def test_nothing_is_published_beyond_this_machine_by_default(services: dict[str, Any]) -> None:
    """A port without a host address is published on every interface: the API (with the
    identity headers it trusts) and the broker would be reachable from the network."""
    for name, service in services.items():
        for port in service.get("ports", []):
            assert published(port)[0] == "127.0.0.1", f"{name} publishes {port}"
            assert "${BENCHLINK_PUBLISH_ADDR:-127.0.0.1}:" in port  # one knob opens them


def test_the_dev_identity_is_off_unless_turned_on(services: dict[str, Any]) -> None:
    env = services["cloud"]["environment"]
    assert resolve(str(env.get("BENCHLINK_DEV_IDENTITY", "false"))).lower() in ("false", "0", "")
    assert "--dev-identity" not in services["cloud"]["command"]


def test_mosquitto_uses_the_repos_config_credentials_and_acl(services: dict[str, Any]) -> None:
    mosq = services["mosquitto"]
    assert mosq["image"] == "eclipse-mosquitto:2"
    assert [resolve(port) for port in mosq["ports"]] == ["127.0.0.1:1883:1883"]
    mounts = {resolve(v).split(":")[1]: resolve(v).split(":")[0] for v in mosq["volumes"]}
    assert mounts["/benchlink/mosquitto"] == "./mosquitto"
    assert mounts["/benchlink/passwords"] == "./mosquitto/passwords.example"
    assert mounts["/var/lib/mosquitto"] == "mosquitto-data"
    assert (REPO / mounts["/benchlink/passwords"]).is_file()
    text = script(mosq)
    for used in re.findall(r"/benchlink/mosquitto/([\w./]+)", text):
        assert (REPO / "mosquitto" / used).is_file(), f"the command uses a missing {used}"
    assert "mosquitto_passwd -U plain" in text  # only the plain-text lines (test_mosquitto.py)
    assert (
        text.strip().splitlines()[-1] == "exec mosquitto -c /run/benchlink-mosquitto/mosquitto.conf"
    )
    # The persistence directory of mosquitto.conf is the volume.
    conf = (REPO / "mosquitto" / "mosquitto.conf").read_text()
    assert "persistence_location /var/lib/mosquitto/" in conf
    # conf.d/auth.conf points at the files the command prepares.
    auth = (REPO / "mosquitto" / "conf.d" / "auth.conf").read_text()
    assert "allow_anonymous false" in auth
    assert "password_file /run/benchlink-mosquitto/passwords" in auth
    assert "acl_file /run/benchlink-mosquitto/acl" in auth
    assert "cp /benchlink/mosquitto/acl acl" in text
    health = " ".join(mosq["healthcheck"]["test"])
    assert "-u benchlink-edge" in health and "$$EDGE_MQTT_PASSWORD" in health


def test_the_acl_gives_each_device_its_own_topic() -> None:
    acl = [
        line
        for line in (REPO / "mosquitto" / "acl").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert acl[0] == "pattern write benchlink/sensors/%u/readings"
    assert acl[1:3] == ["user benchlink-edge", "topic read benchlink/sensors/+/readings"]


def dockerfile_user() -> tuple[str, int]:
    """The image's unprivileged user: its name and uid (``useradd --uid``)."""
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    useradd = shlex.split(re.search(r"useradd ([^&]+)", text)[1])  # type: ignore[index]
    return useradd[-1], int(useradd[useradd.index("--uid") + 1])


def as_benchlink_user(edge: dict[str, Any]) -> tuple[str, str]:
    """The edge service hands the mounted config to the image's user before it drops to that
    user: the path of the copy the daemon reads, and the script run as that user."""
    name, uid = dockerfile_user()
    assert uid == 10001 and f"USER {name}" in (REPO / "Dockerfile").read_text()
    # The seed writes the config 0600 for the host user: the image's user could not read the
    # mount itself, so the service starts as root, copies it, and runs nothing else as root.
    assert edge["user"] == "root"
    mounted = next(resolve(v).split(":")[1] for v in edge["volumes"] if v.endswith(":ro"))
    lines = script(edge).strip().splitlines()
    copy = shlex.split(lines[1])
    assert copy[:5] == ["install", "-o", name, "-m", "0600"] and copy[5] == mounted
    assert shlex.split(lines[0]) == ["install", "-d", "-o", name, "-m", "0700", "/run/benchlink"]
    drop = shlex.split("\n".join(lines[2:]))  # the last command: everything else is in it
    assert drop[:5] == ["exec", "setpriv", f"--reuid={name}", "--regid=nogroup", "--init-groups"]
    assert drop[5:7] == ["sh", "-ec"] and len(drop) == 8
    return copy[6], drop[7]


def test_the_edge_runs_the_simulator_and_the_daemon(
    services: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    edge = services["edge"]
    assert edge["profiles"] == ["edge"]
    assert edge["depends_on"] == {
        "cloud": {"condition": "service_healthy"},
        "mosquitto": {"condition": "service_healthy"},
    }
    config_path, inner = as_benchlink_user(edge)
    lines = inner.replace("\\\n", " ").strip().splitlines()
    sim = shlex.split(lines[0])
    assert sim[0] == "benchlink-sim"
    link = sim[sim.index("--link") + 1]
    assert lines[-1].strip() == f"exec benchlink-edge --config {config_path} run"
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert {"benchlink-sim", "benchlink-edge", "benchlink-cloud"} <= set(scripts)
    # The config demo_seed.py writes, with the service's environment, is a valid edge config
    # whose serial sensor reads the simulator's link.
    mounts = {resolve(v).split(":")[1]: resolve(v).split(":")[0] for v in edge["volumes"]}
    assert mounts["/etc/benchlink/edge.toml"] == "./var/edge.toml"
    seeded = Seed(
        "http://localhost:8002",
        "00000000-0000-4000-8000-0000000000aa",
        "00000000-0000-4000-8000-0000000000bb",
        True,
        {"Furnace calibration": "00000000-0000-4000-8000-0000000000cc"},
        {"Furnace calibration": "00000000-0000-4000-8000-0000000000dd"},
        [
            SeededSensor(
                "furnace_tc_k", "00000000-0000-4000-8000-000000000001", "t", "a", "", True, False
            ),
            SeededSensor(
                "chamber_mqtt", "00000000-0000-4000-8000-000000000002", "l", "b", "", True, False
            ),
        ],
    )
    config = tmp_path / "edge.toml"
    config.write_text(edge_toml(seeded, "00000000-0000-4000-8000-0000000000ee", link, "mqtt://x"))
    for key, value in edge["environment"].items():
        monkeypatch.setenv(key, resolve(str(value)))
    cfg = load_config(config)
    assert cfg.cloud.url == "http://cloud:8002"
    assert cfg.mqtt.url == "mqtt://mosquitto:1883" and cfg.mqtt.username == "benchlink-edge"
    assert cfg.mqtt.password is not None
    assert cfg.mqtt.password.get_secret_value() == "change-me-edge"
    assert str(cfg.buffer.path) == "/var/lib/benchlink/buffer.db"
    assert [s.source for s in cfg.sensors] == ["serial", "mqtt"]
    assert cfg.sensors[0].port == link
    # The edge's MQTT password is the one passwords.example gives benchlink-edge.
    assert "benchlink-edge:change-me-edge" in (REPO / "mosquitto" / "passwords.example").read_text()


def test_dockerfile_builds_the_package_and_serves_the_cloud() -> None:
    lines = [
        line.strip()
        for line in (REPO / "Dockerfile").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "FROM python:3.11-slim"
    for line in lines:
        if line.startswith("COPY "):
            *sources, _dest = line.split()[1:]
            for source in sources:
                assert (REPO / source).exists(), f"COPY of a missing {source}"
    assert "RUN pip install ." in lines
    assert any(line.startswith("USER ") and "root" not in line for line in lines)
    assert lines[-1] == 'CMD ["benchlink-cloud", "serve", "--host", "0.0.0.0", "--port", "8002"]'
    # Every package pyproject installs is copied in before `pip install .`.
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    for pattern in packages["packages"]["find"]["include"]:
        name = pattern.rstrip("*")
        assert f"COPY {name} ./{name}" in lines


def test_dockerignore_keeps_state_and_secrets_out() -> None:
    ignored = set((REPO / ".dockerignore").read_text().split())
    assert {".git", ".venv", "var", "*.db", "mosquitto/passwords", ".env"} <= ignored
    assert "bin" not in ignored and "cloud" not in ignored
