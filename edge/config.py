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
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit
from uuid import UUID

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import core_schema
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


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
    #: bytes kept free on the buffer's filesystem: below this, new readings are refused as
    #: when max_bytes is reached, so that sync and cleanup still have room to drain the buffer
    min_free_bytes: int = Field(100_000_000, ge=1_000_000)
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
    #: unset: derived from the buffer's own id, so that no two edges share one by accident
    client_id: str | None = Field(None, min_length=1, max_length=128, pattern=r"^[^#+/\s]+$")
    #: how long the broker keeps the daemon's session (and queues its messages) while the
    #: daemon is disconnected; 4294967295 = for ever (MQTT v5 Session Expiry Interval)
    session_expiry_s: int = Field(7 * 24 * 3600, ge=1, le=4_294_967_295)
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


def default_client_id(edge_id: str) -> str:
    """The MQTT client id of an edge whose config sets none: from its buffer's id, 22
    characters (MQTT 3.1.1 servers need only accept 23)."""
    return "benchlink-" + edge_id.replace("-", "")[:12]


class MetricsConfig(Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(9108, ge=0, le=65535)


class EdgeSection(Section):
    """``[edge]``: this bench PC as the cloud knows it (``POST /api/v1/edges``). Without an
    id and a token the daemon sends no heartbeat (and says so once at startup)."""

    id: UUID | None = None
    token: SecretStr | None = None
    #: a heartbeat this often; the cloud calls the edge stale after three missed
    heartbeat_s: float = Field(30.0, gt=0, le=3600)
    #: a sync round that starts or ends a run of failures sends one at once, but never
    #: sooner than this after the last
    min_interval_s: float = Field(5.0, ge=0)

    @model_validator(mode="after")
    def _id_with_token(self) -> EdgeSection:
        if (self.id is None) != (self.token is None):
            raise ValueError("give both id and token (from POST /api/v1/edges), or neither")
        return self


class ClockConfig(Section):
    #: an estimated offset to the cloud's clock past this is logged as a warning
    max_offset_ms: float = Field(500.0, gt=0)
    #: correct the timestamps of the readings the edge stamps itself (serial lines without a
    #: device time) by the offset estimate, each corrected one saying by how much
    #: (``meta.clock_offset_ms``)
    correct: bool = False


class SensorConfig(Section):
    """The keys every ``[[sensors]]`` table has; each source's model (registered with
    :func:`edge.sources.base.register`) adds its own and narrows ``source`` to its name."""

    sensor_id: UUID
    token: SecretStr
    run_id: UUID
    capture_session_id: UUID
    source: str


class RegisteredSources:
    """``sensors`` items: a union of the registered sources' models, discriminated by
    ``source``. Built when the schema is, so every source is registered by then (the
    ``EdgeConfig`` schema is deferred, and :func:`load_config` builds a fresh one)."""

    def __get_pydantic_core_schema__(
        self, source_type: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        from edge.sources import kinds

        choices: dict[Hashable, core_schema.CoreSchema] = {
            name: handler.generate_schema(kind.config) for name, kind in kinds().items()
        }
        return core_schema.tagged_union_schema(choices, discriminator="source")


class EdgeConfig(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="BENCHLINK_EDGE_",
        env_nested_delimiter="__",
        extra="forbid",
        hide_input_in_errors=True,
        defer_build=True,
    )

    cloud: CloudConfig = CloudConfig()
    buffer: BufferConfig = BufferConfig()
    sync: SyncConfig = SyncConfig()
    mqtt: MqttConfig = MqttConfig()
    metrics: MetricsConfig = MetricsConfig()
    edge: EdgeSection = EdgeSection()
    clock: ClockConfig = ClockConfig()
    sensors: list[Annotated[SensorConfig, RegisteredSources()]] = []

    @model_validator(mode="after")
    def _sensors_fit_together(self) -> EdgeConfig:
        from edge.sources import kinds

        ids = [s.sensor_id for s in self.sensors]
        if len(ids) != len(set(ids)):
            raise ValueError("a sensor_id appears twice in [[sensors]]")
        for name, kind in kinds().items():
            kind.check([s for s in self.sensors if s.source == name])
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
    text = ""
    if path is not None:
        path = Path(path)
        text = _read(path)

    # A class of its own per load: its schema, built at its first validation, has every
    # source registered by then (see RegisteredSources).
    class _Loaded(EdgeConfig):
        model_config = SettingsConfigDict(toml_file=path, hide_input_in_errors=True)

    try:
        return _Loaded()
    except ValidationError as exc:
        raise ConfigError(validation_error(path or Path("(environment)"), text, exc)) from None


def _read(path: Path) -> str:
    """The text of the TOML file ``path``, or a ConfigError."""
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
    return text


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
        raw = tuple(err["loc"])
        loc = _file_loc(raw, err["type"])
        line = lines.get(loc) or lines.get(loc[:-1]) if loc else None
        where = f"{path}:{line}" if line else str(path)
        if (var := _env_var(loc)) is not None:
            where = f"${var}"  # the environment overrides the file
        key = dotted(loc)
        reason = _reason(err["type"], err["msg"], raw, err.get("ctx") or {})
        parts.append(f"{where}: {key + ': ' if key else ''}{reason}")
    return "; ".join(parts)


_SOURCE_TAG = ("union_tag_invalid", "union_tag_not_found")


def _file_loc(raw: tuple[int | str, ...], kind: str) -> tuple[int | str, ...]:
    """The location as the file has it. Inside a sensor, pydantic puts the sensor's
    ``source`` in it (``("sensors", 0, "serial", "port")``); a missing or unknown ``source``
    is the error of that key."""
    if len(raw) >= 2 and raw[0] == "sensors" and isinstance(raw[1], int):
        if kind in _SOURCE_TAG:
            return (*raw[:2], "source")
        if len(raw) >= 3:
            return (*raw[:2], *raw[3:])
    return raw


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


def _reason(kind: str, msg: str, raw: tuple[int | str, ...], ctx: dict[str, Any]) -> str:
    if kind == "extra_forbidden":
        known = ", ".join(_fields_at(raw[:-1]))
        if len(raw) >= 4 and raw[0] == "sensors":  # ("sensors", 0, "serial", key)
            return f'unknown key; check its spelling (known for source "{raw[2]}": {known})'
        return f"unknown key; check its spelling (known here: {known})"
    if kind == "missing":
        return "required key missing; add it"
    if kind in _SOURCE_TAG:
        return _source_reason(str(ctx.get("tag", "")) if kind == "union_tag_invalid" else None)
    return f"{msg.removeprefix('Value error, ')}; correct it"


def _source_reason(tag: str | None) -> str:
    from edge.sources import failed, kinds

    names = ", ".join(f'"{name}"' for name in kinds())
    if tag is None:
        return f"required key missing; add it (one of {names})"
    if (why := failed().get(tag)) is not None:
        return f"source {tag!r} is installed but failed to load ({why}); reinstall it"
    return f"unknown source {tag!r}; use one of {names}, or install the package that adds it"


def _fields_at(raw: tuple[int | str, ...]) -> list[str]:
    """The keys of the table at ``raw`` (a pydantic location)."""
    from edge.sources import kinds

    model: Any = EdgeConfig
    if len(raw) >= 3 and raw[0] == "sensors" and isinstance(raw[2], str):
        kind = kinds().get(raw[2])
        model, raw = (kind.config if kind else None), raw[3:]
    for part in raw:
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
    if not cfg.sensors and cfg.mqtt.password is None and cfg.edge.token is None:
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
