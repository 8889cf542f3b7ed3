"""The Python client of the benchlink cloud.

>>> from benchlink import Client
>>> client = Client("http://127.0.0.1:8002", user=owner, project="demo_project", role="owner")
>>> exp = client.experiments.create("Furnace heat-up", tags=["furnace"])
>>> run = exp.runs.create("baseline")
>>> run.log_metrics({"loss": 0.42}, step=1)
>>> df = run.telemetry(sensor="furnace_tc_k")
"""

from benchlink._client import Client
from benchlink._exceptions import (
    APIError,
    BadRequest,
    BenchlinkError,
    ConfigError,
    Conflict,
    FieldProblem,
    Forbidden,
    LiveReset,
    NotFound,
    ServerError,
    TokenLost,
    TransportError,
    Unauthorized,
    ValidationError,
)
from benchlink._export import ExportProgress
from benchlink._http import Retry
from benchlink._models import (
    BatchStatus,
    CaptureSession,
    Deleted,
    Experiment,
    NewSensor,
    Profile,
    Project,
    Run,
    RunStatusResult,
    Sensor,
)
from benchlink._pages import Pages

__all__ = [
    "APIError",
    "BadRequest",
    "BatchStatus",
    "BenchlinkError",
    "CaptureSession",
    "Client",
    "ConfigError",
    "Conflict",
    "Deleted",
    "Experiment",
    "ExportProgress",
    "FieldProblem",
    "Forbidden",
    "LiveReset",
    "NewSensor",
    "NotFound",
    "Pages",
    "Profile",
    "Project",
    "Retry",
    "Run",
    "RunStatusResult",
    "Sensor",
    "ServerError",
    "TokenLost",
    "TransportError",
    "Unauthorized",
    "ValidationError",
]
