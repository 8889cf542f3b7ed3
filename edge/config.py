"""Edge configuration: a TOML file (edge/edge.example.toml documents every key) with environment
overrides.

Precedence, highest first: environment variables, then the TOML file, then the defaults here.
Environment variables are ``BENCHLINK_EDGE_`` + the TOML path joined by ``__``, e.g.
``BENCHLINK_EDGE_CLOUD__URL=https://cloud.example``, ``BENCHLINK_EDGE_SYNC__BATCH_SIZE=500``,
``BENCHLINK_EDGE_MQTT__PASSWORD=...``. The ``sensors`` list can only be replaced as a whole, as
JSON (``BENCHLINK_EDGE_SENSORS='[{...}]'``).

Secrets (sensor tokens, the MQTT password) are :class:`pydantic.SecretStr`: their repr and
``str`` print ``**********`` so a logged config never leaks a token.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit
from uuid import UUID

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

PROTOCOLS = ("value", "csv", "jsonl", "arduino-thermocouple", "max31855-hex")
DEFAULT_TOPIC = "benchlink/sensors/{sensor_id}/readings"


class Section(BaseModel):
    # hide_input_in_errors: a validation error would otherwise print the input it refused --
    # for a sensor, the whole table with its token.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)


class CloudConfig(Section):
    url: str = "http://localhost:8002"
    #: PEM bundle of the CAs that may sign the cloud's certificate (default: the system's).
    ca_bundle: Path | None = None
    timeout_s: float = Field(10.0, gt=0)

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http:// or https:// URL")
        if parts.username or parts.password or parts.query:
            raise ValueError("must not carry credentials or a query (tokens go in headers)")
        return v.rstrip("/")


class BufferConfig(Section):
    path: Path = Path("/var/lib/benchlink/buffer.db")
    max_bytes: int = Field(2_000_000_000, gt=0)
    #: synced readings are deleted this long after the cloud accepted them
    retention_s: float = Field(7 * 24 * 3600, ge=0)
    #: dead-letter records kept (rejected payloads, retried batches); the oldest are rotated
    max_dead_letters: int = Field(10_000, ge=100)


class SyncConfig(Section):
    batch_size: int = Field(1000, ge=1, le=10_000)
    interval_s: float = Field(1.0, gt=0)
    backoff_initial_s: float = Field(0.5, gt=0)
    backoff_max_s: float = Field(60.0, gt=0)


class MqttConfig(Section):
    url: str = "mqtt://localhost:1883"
    client_id: str = "bench-01"
    username: str | None = None
    password: SecretStr | None = None
    #: CA bundle for mqtts:// (TLS); the system's CAs when unset
    ca_bundle: Path | None = None
    keepalive_s: int = Field(30, ge=5)

    @field_validator("url")
    @classmethod
    def _mqtt_url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError("must be mqtt://host[:port] or mqtts://host[:port]")
        return v

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "localhost"

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or (8883 if self.tls else 1883)


class MetricsConfig(Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(9108, ge=0, le=65535)


class SensorConfig(Section):
    sensor_id: UUID
    token: SecretStr
    run_id: UUID
    capture_session_id: UUID
    source: Literal["serial", "mqtt"]
    # mqtt
    topic: str | None = None
    # serial
    port: str | None = None
    baudrate: int = 9600
    protocol: str = "value"
    channel: str | None = None
    max_line: int = Field(512, ge=16)

    @model_validator(mode="after")
    def _source_fields(self) -> SensorConfig:
        if self.source == "serial":
            if not self.port:
                raise ValueError("a serial sensor needs `port`")
            if self.protocol not in PROTOCOLS:
                raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}")
        return self

    @property
    def mqtt_topic(self) -> str:
        return self.topic or DEFAULT_TOPIC.format(sensor_id=self.sensor_id)


class EdgeConfig(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="BENCHLINK_EDGE_",
        env_nested_delimiter="__",
        extra="forbid",
        hide_input_in_errors=True,
    )

    cloud: CloudConfig = CloudConfig()
    buffer: BufferConfig = BufferConfig()
    sync: SyncConfig = SyncConfig()
    mqtt: MqttConfig = MqttConfig()
    metrics: MetricsConfig = MetricsConfig()
    sensors: list[SensorConfig] = []

    @model_validator(mode="after")
    def _unique_sensors(self) -> EdgeConfig:
        ids = [s.sensor_id for s in self.sensors]
        if len(ids) != len(set(ids)):
            raise ValueError("a sensor_id appears twice in [[sensors]]")
        ports: dict[str, set[str | None]] = {}
        for s in self.sensors:
            if s.port is not None:
                channels = ports.setdefault(s.port, set())
                if s.channel in channels:
                    raise ValueError(f"two sensors read channel {s.channel!r} of {s.port}")
                channels.add(s.channel)
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = settings_cls.model_config.get("toml_file")
        sources: list[PydanticBaseSettingsSource] = [env_settings, init_settings]
        if toml_path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        return tuple(sources)


class ConfigError(ValueError):
    """A config that cannot be used, in one line: the file (and line), the key, what to do."""


def load_config(path: Path | str | None) -> EdgeConfig:
    """Read ``path`` (TOML) and apply the environment; raise ConfigError on anything wrong."""
    if path is None:
        return EdgeConfig()
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such config file; give --config or set $BENCHLINK_EDGE_CONFIG"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"{path}: cannot read the config ({reason})") from None
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(toml_error(path, exc)) from None

    class _FromFile(EdgeConfig):
        model_config = SettingsConfigDict(toml_file=path, hide_input_in_errors=True)

    try:
        return _FromFile()
    except ValidationError as exc:
        raise ConfigError(validation_error(path, text, exc)) from None


_TOML_AT = re.compile(r"^(?P<msg>.*?)\s*\(at line (?P<line>\d+), column (?P<col>\d+)\)$")


def toml_error(path: Path, exc: tomllib.TOMLDecodeError) -> str:
    m = _TOML_AT.match(str(exc))
    if m is None:
        return f"{path}: TOML syntax error: {exc}; fix the file"
    return f"{path}:{m['line']}:{m['col']}: TOML syntax error: {m['msg']}; fix that line"


def validation_error(path: Path, text: str, exc: ValidationError) -> str:
    """Every error of ``exc`` on one line, each as ``file:line: key: reason; what to do`` (the
    refused values are never printed: they may be tokens)."""
    lines = key_lines(text)
    parts = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = tuple(err["loc"])
        line = lines.get(loc) or lines.get(loc[:-1]) if loc else None
        where = f"{path}:{line}" if line else str(path)
        if (var := _env_var(loc)) is not None:
            where = f"${var}"  # the environment overrides the file
        key = dotted(loc)
        parts.append(f"{where}: {key + ': ' if key else ''}{_reason(err['type'], err['msg'], loc)}")
    return "; ".join(parts)


def _env_var(loc: tuple[int | str, ...]) -> str | None:
    """The environment variable that set the value at ``loc``, if one did."""
    if not loc or not isinstance(loc[0], str):
        return None
    names = {k.upper(): k for k in os.environ}
    head = "BENCHLINK_EDGE_" + loc[0].upper()
    if loc[0] == "sensors" or len(loc) == 1:
        return names.get(head)
    return names.get(f"{head}__{str(loc[1]).upper()}") or names.get(head)


def dotted(loc: Sequence[int | str]) -> str:
    """``("sensors", 0, "token")`` -> ``sensors[0].token``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f"{'.' if out else ''}{part}"
    return out


def _reason(kind: str, msg: str, loc: tuple[int | str, ...]) -> str:
    if kind == "extra_forbidden":
        known = ", ".join(_fields_at(loc[:-1]))
        return f"unknown key; check its spelling (known here: {known})"
    if kind == "missing":
        return "required key missing; add it"
    return f"{msg.removeprefix('Value error, ')}; correct it"


def _fields_at(loc: tuple[int | str, ...]) -> list[str]:
    model: Any = EdgeConfig
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if hasattr(model, "model_fields") else None
        if field is None:
            return []
        ann = field.annotation
        model = ann.__args__[0] if getattr(ann, "__origin__", None) is list else ann
    return list(getattr(model, "model_fields", {}))


def key_lines(text: str) -> dict[tuple[int | str, ...], int]:
    """Line numbers of the tables and keys of a TOML text, by pydantic location:
    ``("cloud",)``, ``("cloud", "url")``, ``("sensors", 1)``, ``("sensors", 1, "token")``.
    Good enough to point at a line; the file parsed already, so its syntax is valid."""
    found: dict[tuple[int | str, ...], int] = {}
    table: tuple[int | str, ...] = ()
    arrays: dict[str, int] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip() if raw.lstrip().startswith("[") else raw.strip()
        if line.startswith("[["):
            name = line.strip("[] ")
            arrays[name] = arrays.get(name, -1) + 1
            table = (name, arrays[name])
        elif line.startswith("["):
            table = tuple(part.strip().strip('"') for part in line.strip("[] ").split("."))
        elif "=" in line and not line.startswith("#"):
            found.setdefault((*table, line.split("=", 1)[0].strip().strip('"')), n)
            continue
        else:
            continue
        found.setdefault(table, n)
    return found


def exposed_secrets(path: Path, cfg: EdgeConfig) -> str | None:
    """A warning when ``path`` holds tokens or a password and other users may read it: anyone
    (o+r), or a group that is not this process's own (the documented set-up is 0640,
    root:benchlink, read by the daemon through its group)."""
    if not cfg.sensors and cfg.mqtt.password is None:
        return None
    try:
        st = path.stat()
    except OSError:
        return None
    others = bool(st.st_mode & stat.S_IROTH)
    group = bool(st.st_mode & stat.S_IRGRP) and st.st_gid != os.getegid()
    if not (others or group):
        return None
    who = "every user" if others else f"group {st.st_gid}"
    mode = stat.S_IMODE(st.st_mode)
    return (
        f"config {path} holds sensor tokens and is readable by {who} (mode {mode:04o});"
        f" run `chmod 600 {path}` (or 640 with a group only the daemon's user is in)"
    )
