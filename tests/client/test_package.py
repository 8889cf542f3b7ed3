"""The client as a package: light to import, configured once (arguments, environment, a
config file), and its identity as the cloud reads it (a project by name, the gateway
secret)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchlink import Client, ConfigError, Unauthorized
from tests.client.conftest import QUICK, new_project
from tests.support.cloud import REPO, CloudServer


def test_importing_the_client_brings_nothing_of_the_server() -> None:
    code = (
        "import sys, benchlink, benchlink._live, benchlink._metrics, benchlink._runs,"
        " benchlink._export, benchlink._listed\n"
        "heavy = ('fastapi', 'sqlalchemy', 'pydantic', 'uvicorn', 'cloud', 'edge', 'common',"
        " 'pandas', 'pyarrow', 'polars', 'websockets')\n"
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
    project = tomllib.loads((REPO / "client" / "pyproject.toml").read_text())["project"]
    assert [d.split(">")[0] for d in project["dependencies"]] == ["httpx"]


def test_settings_come_from_arguments_then_environment_then_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "client.toml"
    config.write_text(
        'url = "http://file:1/"\nuser = "u-file"\nproject = "p-file"\nrole = "viewer"\n'
    )
    monkeypatch.setenv("BENCHLINK_CONFIG", str(config))
    for name in ("URL", "USER", "PROJECT", "ROLE", "GATEWAY_SECRET", "OFFLINE_DIR"):
        monkeypatch.delenv(f"BENCHLINK_{name}", raising=False)
    monkeypatch.setenv("BENCHLINK_PROJECT", "p-env")
    with Client(user="u-arg") as client:
        cfg = client.config
    assert (cfg.url, cfg.user, cfg.project, cfg.role) == (
        "http://file:1",
        "u-arg",
        "p-env",
        "viewer",
    )

    config.write_text('url = "http://x"\nsecret = "typo"\n')
    with pytest.raises(ConfigError, match="unknown setting secret"):
        Client()
    config.unlink()
    with pytest.raises(ConfigError, match="BENCHLINK_URL"):
        Client()
    with pytest.raises(ConfigError, match="role"):
        Client("http://x", role="admin")


def test_a_project_given_by_name(cloud: CloudServer) -> None:
    owner = new_project(cloud.url)
    name = owner.projects.list().first()
    assert name is not None
    with (
        owner,
        Client(cloud.url, user=owner.config.user, project=name.name, retry=QUICK) as by_name,
    ):
        exp = by_name.experiments.create("named")
        assert exp.project_id == name.id
    stranger = Client(cloud.url, user=str(uuid.uuid4()), project=name.name)
    with stranger, pytest.raises(ConfigError, match="no project named"):
        stranger.experiments.list().first()


@pytest.fixture
def gated_cloud(tmp_path: Path) -> Iterator[CloudServer]:
    server = CloudServer(
        f"sqlite:///{tmp_path / 'cloud.db'}",
        env={"BENCHLINK_GATEWAY_SECRET": "s3cret"},
        log_path=tmp_path / "cloud.log",
    )
    with server:
        yield server


def test_the_gateway_secret_is_sent_once_set(gated_cloud: CloudServer) -> None:
    user = str(uuid.uuid4())
    with Client(gated_cloud.url, user=user, gateway_secret="s3cret") as client:
        project = client.projects.create("gated")
    without = Client(gated_cloud.url, user=user, project=project.id)
    with without, pytest.raises(Unauthorized) as refused:
        without.experiments.list().first()
    assert refused.value.status == 401 and "gateway" in refused.value.detail
    with Client(gated_cloud.url, user=user, project=project.id, gateway_secret="s3cret") as client:
        assert client.experiments.create("behind the gateway").name == "behind the gateway"
