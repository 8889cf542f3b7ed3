"""Settings of the cloud service, from the environment (prefix ``BENCHLINK_``) or the CLI."""

from __future__ import annotations

import uuid
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.wire import MAX_TELEMETRY_BODY_BYTES

DEFAULT_SQLITE = Path("var") / "benchlink.db"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BENCHLINK_", extra="ignore")

    #: ``development`` allows conveniences that are unsafe behind a real gateway.
    environment: Literal["development", "test", "production"] = "development"
    database_url: str = f"sqlite:///{DEFAULT_SQLITE}"
    #: When set, identity headers are trusted only with ``X-Gateway-Secret`` equal to it.
    #: Must be set whenever the API is reachable by anything but the gateway.
    gateway_secret: str | None = None
    #: How long an Idempotency-Key and its response are kept.
    idempotency_ttl_s: int = 24 * 3600
    #: How long an in-flight key is held before a crashed request's claim may be taken over.
    idempotency_lease_s: int = 60
    #: Readings whose timestamp lies further than this in the future are rejected.
    future_tolerance_s: int = 300
    #: Readings up to this long before their capture session started are accepted (a bench
    #: PC's clock may lag the cloud's); earlier ones are refused.
    clock_skew_tolerance_s: int = Field(default=300, ge=0)
    #: Largest request body for endpoints other than telemetry ingest.
    max_body_bytes: int = 1024 * 1024
    #: Largest telemetry ingest body, checked before it is parsed (413 above). The default
    #: holds 10,000 readings (the most a batch may carry) with some 800 bytes of ``meta`` each.
    telemetry_max_body_bytes: int = Field(default=MAX_TELEMETRY_BODY_BYTES, ge=1024)
    #: Largest request head (request line and headers), in bytes; more is 431.
    max_header_bytes: int = Field(default=32 * 1024, ge=1024)
    #: Most request headers; more is 431.
    max_headers: int = Field(default=100, ge=10)
    #: Seconds a connection has to send a request's whole head (from its first byte, or from
    #: the connection for the first request); then it is closed (408 if it had begun).
    header_timeout_s: float = Field(default=10.0, gt=0)
    #: Seconds a request body may stall (no byte received) before the connection is closed.
    body_timeout_s: float = Field(default=30.0, gt=0)
    #: Seconds an idle kept-alive connection stays open between requests.
    keep_alive_timeout_s: int = Field(default=5, ge=1)
    #: Seconds a CSV export's client may stop reading before its database transaction is
    #: ended (PostgreSQL) and the export cut off.
    export_stall_timeout_s: float = Field(default=60.0, gt=0)
    #: Seconds a deleted run or experiment can be restored before it is purged with its data.
    delete_grace_s: int = Field(default=7 * 24 * 3600, ge=0)
    #: How often the fleet's health rules on silence are evaluated (seconds).
    health_every_s: float = Field(default=10.0, gt=0)
    #: Webhooks: how often the deliverer looks for deliveries due (it is also woken by an
    #: alarm transition), how long a receiver has to answer, the wait after the first failed
    #: attempt (doubling, jittered, at most ``webhook_retry_max_s``), and how long after the
    #: event a delivery is given up on (then ``failed``, and journaled).
    webhook_every_s: float = Field(default=1.0, gt=0)
    webhook_timeout_s: float = Field(default=10.0, gt=0)
    webhook_retry_base_s: float = Field(default=5.0, gt=0)
    webhook_retry_max_s: float = Field(default=3600.0, gt=0)
    webhook_give_up_s: float = Field(default=24 * 3600.0, gt=0)
    #: Reprocessing (cloud.services.reprocess_runner): readings converted per chunk, each
    #: chunk one short write transaction (on SQLite ingest waits for it: keep it small).
    reprocess_chunk: int = Field(default=5000, ge=1, le=100_000)
    #: A pause between two chunks (seconds), to leave a loaded database more room for
    #: ingest; 0: none.
    reprocess_pause_s: float = Field(default=0.0, ge=0, le=60)
    #: How often each process looks for jobs to run or resume (one accepted in the same
    #: process starts at once).
    reprocess_every_s: float = Field(default=2.0, gt=0)
    #: Secret that signs the short-lived stream tickets for browsers.
    stream_ticket_secret: str | None = None
    #: Live stream: undelivered events a client may have before it is dropped as too slow.
    live_queue_size: int = Field(default=10_000, ge=10)
    #: Live stream: most readings replayed to a client resuming by Last-Event-ID (older: reset).
    live_ring_size: int = Field(default=20_000, ge=100)
    #: Development identity for the portal in a plain browser (no gateway). Off by default.
    dev_identity: bool = False
    #: With the development identity: the user the portal acts as until the browser picks
    #: another (``make demo``: the demo project's owner), its project (name or id; default:
    #: the user's only project) and role.
    dev_identity_user: uuid.UUID | None = None
    dev_identity_project: str | None = None
    dev_identity_role: Literal["owner", "editor", "viewer"] = "owner"
    create_schema: bool = Field(
        default=False, description="create tables without Alembic (tests only)"
    )

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Settings:
        if self.environment == "production":
            if not self.gateway_secret:
                raise ValueError("BENCHLINK_GATEWAY_SECRET must be set in production")
            if self.dev_identity:
                raise ValueError("BENCHLINK_DEV_IDENTITY must be off in production")
            if not self.stream_ticket_secret:
                # Every API process must verify the tickets any other one issued.
                raise ValueError("BENCHLINK_STREAM_TICKET_SECRET must be set in production")
        return self

    @cached_property
    def sqlalchemy_url(self) -> str:
        return normalize_database_url(self.database_url)


def normalize_database_url(url: str) -> str:
    """Accept the DSNs people type (``postgres://``, ``postgresql://``) and pick psycopg 3."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url
