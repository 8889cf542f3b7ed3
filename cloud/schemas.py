"""Request and response bodies of the REST API (the telemetry wire models live in common/)."""

from __future__ import annotations

import unicodedata
import uuid
from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, computed_field, field_validator

from common import units
from common.wire import JsonObject, ReadingTimestamp, UtcDatetime

T = TypeVar("T")

RunStatus = Literal["draft", "running", "succeeded", "failed", "cancelled"]
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
SessionStatus = Literal["draft", "running", "succeeded", "failed", "cancelled"]
StopStatus = Literal["succeeded", "failed", "cancelled"]

#: Characters that show nothing: fillers that render blank but are letters by category.
_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")


def _invisible(char: str) -> bool:
    # Whitespace and separators (Z*), controls, format characters such as zero-width
    # spaces and joiners or the BOM (Cc, Cf), and code points that are not characters.
    return char in _BLANK_LETTERS or unicodedata.category(char)[0] in "ZC"


def normalize_name(value: str) -> str:
    """The stored form of a name: NFC, without invisible characters at either end, so that
    names that look the same are the same (and unique names compare as people read them)."""
    text = unicodedata.normalize("NFC", value)
    start, end = 0, len(text)
    while start < end and _invisible(text[start]):
        start += 1
    while end > start and _invisible(text[end - 1]):
        end -= 1
    return text[start:end]


def _visible_name(value: str) -> str:
    name = normalize_name(value)
    if not name:
        raise ValueError("must contain a visible character (not only spaces or invisible ones)")
    return name


#: A sensor's or experiment's name, normalised (see :func:`normalize_name`).
NameText = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_visible_name)]
Name = Field(min_length=1, max_length=200)


#: Field values that hold no text (checked by exact type: a subclass may hold anything).
_NO_TEXT = frozenset({int, float, bool, type(None), datetime, uuid.UUID})


def _has_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        # A lone surrogate (JSON "\ud800") is no character: UTF-8 and the database refuse it.
        return not value.isascii() and any("\ud800" <= c <= "\udfff" for c in value)
    if isinstance(value, list | tuple):
        return any(_has_surrogate(v) for v in value)
    if isinstance(value, dict):
        return any(_has_surrogate(k) or _has_surrogate(v) for k, v in value.items())
    return False


class In(BaseModel):
    """Input bodies refuse unknown fields, non-finite numbers and text that is not Unicode
    characters (lone surrogates)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _unicode_text(cls, value: Any) -> Any:
        # Called for every field of every item (4,000 times for a body of 1,000 metric
        # points): the values that cannot hold text, and ASCII text, are let through first.
        kind = value.__class__
        if kind in _NO_TEXT or (kind is str and value.isascii()):
            return value
        if _has_surrogate(value):
            raise ValueError("contains a lone surrogate (\\ud800-\\udfff), which is not text")
        return value


class Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


# --- projects -----------------------------------------------------------------------------


class ProjectIn(In):
    name: str = Name
    description: str | None = Field(default=None, max_length=10_000)


class ProjectOut(Out):
    id: uuid.UUID
    name: str
    description: str | None
    owner_user_id: uuid.UUID
    created_at: datetime

    @computed_field  # type: ignore[prop-decorator]
    @property
    def project_id(self) -> uuid.UUID:
        return self.id


# --- sensors ------------------------------------------------------------------------------


class ProfileIn(In):
    version: str = Field(min_length=1, max_length=64)
    kind: str = Field(min_length=1, max_length=32)
    payload: JsonObject


class ProfileChange(ProfileIn):
    """A new profile version; its units are the sensor's current ones unless given here."""

    input_unit: str | None = Field(default=None, min_length=1, max_length=32)
    display_unit: str | None = Field(default=None, min_length=1, max_length=32)
    #: Readings stamped from then on convert with this version (default: now). Not before
    #: the current version's, not in the future.
    effective_from: ReadingTimestamp | None = None


class ProfileOut(Out):
    version: str
    kind: str
    payload: dict[str, Any]
    #: The units this version converts from and to (canonical spelling).
    input_unit: str
    display_unit: str
    created_at: datetime
    #: Readings stamped from then on convert with this version, until the next one's.
    effective_from: datetime
    #: The user who set it (None: a service or a version from before users were recorded).
    created_by: uuid.UUID | None = None


#: a sensor's expected reading interval: from a millisecond to a week
ExpectedInterval = Annotated[float | None, Field(ge=0.001, le=7 * 86400)]


class SensorIn(In):
    project_id: uuid.UUID | None = None
    name: NameText
    type: str = Field(min_length=1, max_length=100)
    input_unit: str = Field(min_length=1, max_length=32)
    display_unit: str = Field(min_length=1, max_length=32)
    conversion_profile: ProfileIn
    #: how often it should read (seconds): no reading for 10 of them is the health rule
    #: ``sensor_silent`` (docs/fleet.md); None: no such rule
    expected_interval_s: ExpectedInterval = None


class SensorPatch(In):
    name: NameText | None = None
    type: str | None = Field(default=None, min_length=1, max_length=100)
    input_unit: str | None = Field(default=None, min_length=1, max_length=32)
    display_unit: str | None = Field(default=None, min_length=1, max_length=32)
    #: The name of the profile version a unit change makes (default: the current one's name
    #: with its trailing number raised, v1 -> v2).
    profile_version: str | None = Field(default=None, min_length=1, max_length=64)
    #: null clears it
    expected_interval_s: ExpectedInterval = None
    #: From when that version converts (default: now), as in ``PUT .../conversion-profile``.
    effective_from: ReadingTimestamp | None = None


class SensorOut(Out):
    id: uuid.UUID
    project_id: uuid.UUID
    name: str
    type: str
    input_unit: str
    display_unit: str
    token_preview: str | None
    token_status: str
    token_issued_at: datetime | None
    expected_interval_s: float | None = None
    conversion_profile: ProfileOut
    created_at: datetime
    updated_at: datetime

    @computed_field  # type: ignore[prop-decorator]
    @property
    def sensor_id(self) -> uuid.UUID:
        return self.id


class ProfileChangeOut(SensorOut):
    """The sensor with its new current version."""

    #: Stored readings stamped at or after the new version's ``effective_from``: they keep
    #: the values an earlier version gave them when they arrived (nothing stored is ever
    #: re-derived by setting a version; that is reprocessing, a separate step).
    readings_to_reprocess: int


class SensorWithToken(BaseModel):
    sensor: SensorOut
    #: The full token, in this answer only. A replay of the request (same Idempotency-Key)
    #: answers ``null`` with ``token_redacted``: the server keeps only the token's hash.
    token: str | None
    token_redacted: str | None = None


# --- experiments --------------------------------------------------------------------------


class ExperimentIn(In):
    project_id: uuid.UUID | None = None
    name: NameText
    description: str | None = Field(default=None, max_length=10_000)
    tags: list[str] = Field(default_factory=list, max_length=50)


class ExperimentPatch(In):
    name: NameText | None = None
    description: str | None = Field(default=None, max_length=10_000)
    tags: list[str] | None = Field(default=None, max_length=50)


class ExperimentOut(Out):
    id: uuid.UUID
    project_id: uuid.UUID
    name: str
    description: str | None
    tags: list[str]
    status: str
    archived_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @computed_field  # type: ignore[prop-decorator]
    @property
    def experiment_id(self) -> uuid.UUID:
        return self.id


# --- runs ---------------------------------------------------------------------------------


class RunIn(In):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    params: JsonObject = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list, max_length=50)
    status: Literal["draft", "running"] = "running"


class RunPatch(In):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    params: JsonObject | None = None
    tags: list[str] | None = Field(default=None, max_length=50)
    status: RunStatus | None = None


class RunOut(Out):
    id: uuid.UUID
    experiment_id: uuid.UUID
    project_id: uuid.UUID
    name: str | None
    params: dict[str, Any]
    tags: list[str]
    status: str
    started_at: datetime | None
    ended_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @computed_field  # type: ignore[prop-decorator]
    @property
    def run_id(self) -> uuid.UUID:
        return self.id


class BatchStatusIn(In):
    run_ids: list[uuid.UUID] = Field(min_length=1, max_length=1000)
    status: RunStatus


class BatchStatusResult(BaseModel):
    run_id: uuid.UUID
    ok: bool
    status: str | None = None
    error: dict[str, Any] | None = None


class BatchStatusOut(BaseModel):
    results: list[BatchStatusResult]
    succeeded: int
    failed: int


# --- capture sessions ---------------------------------------------------------------------


class CaptureSessionIn(In):
    ordinal_number: int = Field(ge=1, le=1_000_000)
    status: Literal["draft", "running"] = "running"
    notes: str | None = Field(default=None, max_length=10_000)
    #: A running session only: when capture began, for data recorded before the session was
    #: registered (it takes readings from then on). Default: now.
    started_at: UtcDatetime | None = None


class CaptureSessionStop(In):
    status: StopStatus = "succeeded"
    stopped_at: UtcDatetime | None = None


class CaptureSessionOut(Out):
    id: uuid.UUID
    run_id: uuid.UUID
    project_id: uuid.UUID
    ordinal_number: int
    status: str
    notes: str | None
    started_at: datetime | None
    stopped_at: datetime | None
    created_at: datetime

    @computed_field  # type: ignore[prop-decorator]
    @property
    def capture_session_id(self) -> uuid.UUID:
        return self.id


class ProjectCaptureSessionOut(CaptureSessionOut):
    """An item of ``GET /capture-sessions``: the session with its run and experiment, so a
    project-wide list (the portal's Tests page) needs no request per row."""

    run: RunOut
    experiment: ExperimentOut


# --- metrics ------------------------------------------------------------------------------


class MetricPoint(In):
    name: str = Field(min_length=1, max_length=200)
    step: int = Field(ge=0, le=2**62)
    value: float
    timestamp: UtcDatetime | None = None
    #: Optional; parsed and stored in its canonical spelling (``degC`` -> ``°C``).
    unit: str | None = Field(default=None, min_length=1, max_length=32)

    @field_validator("unit")
    @classmethod
    def _a_unit(cls, value: str | None) -> str | None:
        return None if value is None else units.canonical(value)


class MetricsIn(In):
    metrics: list[MetricPoint] = Field(min_length=1, max_length=10_000)


class MetricsAccepted(BaseModel):
    accepted: int
    names: list[str]


class MetricPointOut(BaseModel):
    name: str
    step: int
    value: float
    timestamp: datetime
    unit: str | None = None


class MetricSeries(BaseModel):
    run_id: uuid.UUID
    name: str | None
    points: list[MetricPointOut]
    next_cursor: str | None = None
    downsampled: bool = False


class MetricSummary(BaseModel):
    name: str
    count: int
    last: float
    last_step: int
    min: float
    max: float
    #: The unit of the last point.
    unit: str | None = None


# --- telemetry ----------------------------------------------------------------------------


class ReadingOut(BaseModel):
    id: int
    sensor_id: uuid.UUID
    run_id: uuid.UUID
    capture_session_id: uuid.UUID
    timestamp: datetime
    raw_value: float
    value: float
    profile_version: str
    late: bool
    meta: dict[str, Any] | None = None


class TelemetryPage(BaseModel):
    items: list[ReadingOut]
    next_cursor: str | None = None


class ChartPoint(BaseModel):
    timestamp: datetime
    value: float
    min: float
    max: float
    count: int


class TelemetrySeries(BaseModel):
    sensor_id: uuid.UUID
    display_unit: str
    points: list[ChartPoint]
    total: int
    downsampled: bool
    #: The version whose values the chart shows where a reading has one: the one asked for
    #: (``?profile_version=``), else the sensor's current version. A reading without a
    #: value under it (never reprocessed under it) counts with its first value.
    profile_version: str
    #: Asked with ``?live=true``: the event id to open the live stream with
    #: (``last_event_id``) so that it picks up where this history ends, without a gap
    #: (a batch committed meanwhile may be in both; a chart keeps one of each timestamp).
    live_from: str | None = None


# --- annotations --------------------------------------------------------------------------

#: An annotation's text: at least one visible character, NFC, no invisible ends.
NoteText = Annotated[str, Field(min_length=1, max_length=5000), AfterValidator(_visible_name)]


class AnnotationIn(In):
    """A note over [start, end] of a run, or at ``start`` alone; about one sensor or the run."""

    start: UtcDatetime
    end: UtcDatetime | None = None
    text: NoteText
    sensor_id: uuid.UUID | None = None
    tags: list[str] = Field(default_factory=list, max_length=50)


class AnnotationPatch(In):
    """Fields to change; ``end`` and ``sensor_id`` may be set to null."""

    start: UtcDatetime | None = None
    end: UtcDatetime | None = None
    text: NoteText | None = None
    sensor_id: uuid.UUID | None = None
    tags: list[str] | None = Field(default=None, max_length=50)


class AnnotationOut(Out):
    id: uuid.UUID
    project_id: uuid.UUID
    run_id: uuid.UUID
    sensor_id: uuid.UUID | None
    start: datetime
    end: datetime | None
    text: str
    tags: list[str]
    created_by: uuid.UUID | None
    created_at: datetime
    updated_at: datetime


# --- events -------------------------------------------------------------------------------


class EventOut(Out):
    id: int
    project_id: uuid.UUID
    experiment_id: uuid.UUID | None
    run_id: uuid.UUID | None
    capture_session_id: uuid.UUID | None
    sensor_id: uuid.UUID | None
    kind: str
    payload: dict[str, Any]
    actor: str | None
    created_at: datetime
