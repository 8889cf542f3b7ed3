"""The client: one object per identity on one cloud."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from benchlink._config import Config
from benchlink._http import Http, Retry
from benchlink._models import Deleted, Ref
from benchlink._resources import Experiments, Projects, Runs, Sensors

if TYPE_CHECKING:
    from benchlink._live import Reading
    from benchlink._metrics import MetricsLogger


class Client:
    """``Client(url, user=..., project=..., role=...)``; anything not given comes from the
    ``BENCHLINK_*`` environment variables or the config file (see :mod:`benchlink._config`).

    ``project`` is the project's id or its name. ``gateway_secret`` is sent as
    ``X-Gateway-Secret`` when the cloud requires it. ``offline_dir`` keeps logged metrics in
    a local SQLite queue until the server has them (without it, only while the server is
    unreachable, in ``~/.local/state/benchlink``). Use it as a context manager, or call
    :meth:`close`, to flush metrics on the way out (they are flushed at exit as well).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        user: str | None = None,
        project: str | None = None,
        role: str | None = None,
        gateway_secret: str | None = None,
        offline_dir: str | Path | None = None,
        config_file: str | Path | None = None,
        timeout: float = 30.0,
        retry: Retry | None = None,
        transport: httpx.BaseTransport | None = None,
        metrics_interval: float = 1.0,
    ) -> None:
        self.config = Config.resolve(
            config_file,
            url=url,
            user=None if user is None else str(user),
            project=None if project is None else str(project),
            role=role,
            gateway_secret=gateway_secret,
            offline_dir=None if offline_dir is None else str(offline_dir),
        )
        self.http = Http(self.config, timeout=timeout, retry=retry, transport=transport)
        self.projects = Projects(self)
        self.experiments = Experiments(self)
        self.runs = Runs(self)
        self.sensors = Sensors(self)
        self._metrics_interval = metrics_interval
        self._logger: MetricsLogger | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        cfg = self.config
        return f"Client({cfg.url!r}, user={cfg.user!r}, project={cfg.project!r})"

    @property
    def metrics_logger(self) -> MetricsLogger:
        """The background sender of ``run.log_metrics()``, started on first use."""
        with self._lock:
            if self._logger is None:
                from benchlink._metrics import MetricsLogger

                self._logger = MetricsLogger(
                    self.http, self.config.offline_dir, interval=self._metrics_interval
                )
            return self._logger

    def deleted(self) -> list[Deleted]:
        """The project's deleted runs and experiments that can still be restored (owner
        role), newest first, each with its ``purge_after``; ``d.restore()`` brings one back.
        Runs deleted with their experiment are not listed: they come back with it."""
        body = self.http.request("GET", "/api/v1/deleted")
        return [Deleted.from_json(self, d) for d in body["items"]]

    def send_offline(self) -> int:
        """Send the metrics queued offline (by this or an earlier process); the number of
        points the server took. Normally the background sender does this by itself."""
        return self.metrics_logger.drain()

    def live(
        self,
        *,
        sensor: Ref | None = None,
        run: Ref | None = None,
        session: Ref | None = None,
        last_event_id: str | None = None,
        timeout: float | None = None,
    ) -> Iterator[Reading]:
        """Readings from the live stream as they arrive; a dropped connection is resumed after
        the last reading received (before the first, after the moment the stream started),
        without gaps or repeats. ``timeout``: stop iterating after that many seconds without
        a reading (default: never)."""
        from benchlink._live import follow

        return follow(
            self,
            sensor=sensor,
            run=run,
            session=session,
            last_event_id=last_event_id,
            idle_timeout=timeout,
        )

    def close(self) -> None:
        """Flush logged metrics, then close the connections."""
        if self._logger is not None:
            self._logger.close()
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
