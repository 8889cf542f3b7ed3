"""Where the client's URL and identity come from: the arguments, else the environment, else a
TOML config file (``BENCHLINK_CONFIG``, default ``~/.config/benchlink/client.toml``)::

    url = "http://127.0.0.1:8002"
    user = "7d9f…"              # X-User-Id
    project = "demo_project"   # X-Project-Id: the project's id, or its name
    role = "owner"             # X-Project-Role: owner, editor or viewer
    gateway_secret = "…"       # X-Gateway-Secret, when the cloud requires it
    offline_dir = "~/benchlink-outbox"
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from benchlink._exceptions import ConfigError

ENV = {
    "url": "BENCHLINK_URL",
    "user": "BENCHLINK_USER",
    "project": "BENCHLINK_PROJECT",
    "role": "BENCHLINK_ROLE",
    "gateway_secret": "BENCHLINK_GATEWAY_SECRET",
    "offline_dir": "BENCHLINK_OFFLINE_DIR",
}
ROLES = ("owner", "editor", "viewer")


def default_config_path() -> Path:
    explicit = os.environ.get("BENCHLINK_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "benchlink" / "client.toml"


@dataclass(frozen=True)
class Config:
    url: str
    user: str | None = None
    project: str | None = None
    role: str = "owner"
    gateway_secret: str | None = None
    offline_dir: str | None = None

    @classmethod
    def resolve(cls, config_file: str | Path | None = None, **given: str | None) -> Config:
        """Each setting from ``given``, else its environment variable, else the file."""
        path = Path(config_file).expanduser() if config_file else default_config_path()
        from_file = _read_file(path, required=config_file is not None)
        values: dict[str, str] = {}
        for f in fields(cls):
            value = given.get(f.name) or os.environ.get(ENV[f.name]) or from_file.get(f.name)
            if value is not None:
                values[f.name] = str(value)
        if "url" not in values:
            raise ConfigError(
                "no server URL: pass Client(url=...), set BENCHLINK_URL, or put url = ... "
                f"in {path}"
            )
        role = values.get("role", "owner").strip().lower()
        if role not in ROLES:
            raise ConfigError(f"role {role!r} is not one of {', '.join(ROLES)}")
        values["role"] = role
        values["url"] = values["url"].rstrip("/")
        return cls(**values)


def _read_file(path: Path, *, required: bool) -> dict[str, object]:
    if not path.is_file():
        if required:
            raise ConfigError(f"config file {path} does not exist")
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from None
    unknown = set(data) - set(ENV)
    if unknown:
        raise ConfigError(
            f"config file {path}: unknown setting {', '.join(sorted(unknown))}; "
            f"known: {', '.join(ENV)}"
        )
    return data
