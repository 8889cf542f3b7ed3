"""Edge configuration: a TOML file (SPEC §4 keys are the contract) with environment overrides.

Precedence, highest first: environment variables, then the TOML file, then the defaults here.
Environment variables are ``BENCHLINK_EDGE_`` + the TOML path joined by ``__``, e.g.
``BENCHLINK_EDGE_CLOUD__URL=https://cloud.example``, ``BENCHLINK_EDGE_SYNC__BATCH_SIZE=500``,
``BENCHLINK_EDGE_MQTT__PASSWORD=...``. The ``sensors`` list can only be replaced as a whole, as
JSON (``BENCHLINK_EDGE_SENSORS='[{...}]'``).

Secrets (sensor tokens, the MQTT password) are :class:`pydantic.SecretStr`: their repr and
``str`` print ``**********`` so a logged config never leaks a token.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
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


def load_config(path: Path | str | None) -> EdgeConfig:
    """Read ``path`` (TOML) and apply the environment; raise ValidationError on bad keys."""
    if path is None:
        return EdgeConfig()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")

    class _FromFile(EdgeConfig):
        model_config = SettingsConfigDict(toml_file=path, hide_input_in_errors=True)

    return _FromFile()
