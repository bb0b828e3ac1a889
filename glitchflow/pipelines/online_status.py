"""Health of ``glitchflow online``: counts, latency, backlog, model version.

One :class:`OnlineMetrics` object is updated by the service loop and read by

* the status route, ``GET http://HOST:PORT/status`` (JSON; HOST:PORT in
  ``OUT/status.json`` and the log), served from a thread on loopback by default;
* ``OUT/status.json``, rewritten atomically at every metrics tick and on exit;
* TensorBoard scalars under ``OUT/tensorboard`` and MLflow metrics of one run,
  every ``online.metrics_every`` seconds.

Accounting: every input frame that appears is counted once, as analysed,
failed (unreadable) or skipped (late beyond the horizon, duplicate,
overlapping, before the service's start), with the reason, so that
``frames_in == analysed + failed + skipped + pending``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from glitchflow.tracking.mlflow_tracking import default_artifact_location, start_run

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OnlineResult:
    """The final status of a ``glitchflow online`` run (as ``OUT/status.json`` and the
    status route give it while it runs).  ``frames_in`` = ``frames_analysed`` +
    ``frames_failed`` + ``frames_skipped`` + ``frames_pending``; ``failed`` and
    ``skipped``: the latest frames with their reasons; latencies in s (frame file
    appeared -> output frame written); ``analysed_s``, ``vetoed_s``, ``not_analysed_s``:
    data seconds; ``published_until`` and ``newest_data``: GPS s."""

    uptime_s: float
    frames_in: int
    frames_analysed: int
    frames_failed: int
    frames_skipped: int
    frames_pending: int
    skipped_by_reason: dict[str, int]
    failed: list[dict]
    skipped: list[dict]
    frames_published: int
    in_flight: int
    backlog_s: float
    published_until: float | None
    newest_data: float | None
    analysed_s: float
    vetoed_s: float
    not_analysed_s: float
    latency_p50_s: float | None
    latency_p99_s: float | None
    latency_max_s: float | None
    compute_p50_s: float | None
    model_version: str
    model_changes: list[dict]
    status_url: str
    model_uri: str
    resumed: bool
    out: str

    def to_dict(self) -> dict:
        return asdict(self)


class OnlineMetrics:
    """Counters and recent latencies (thread-safe snapshot for the status route)."""

    def __init__(self, latency_window: int = 5000) -> None:
        self.started = time.time()
        self.lock = threading.Lock()
        self.frames_in = 0
        self.analysed = 0
        self.failed: list[dict] = []
        self.skipped: Counter = Counter()
        self.skipped_frames: list[dict] = []
        self.published = 0
        self.not_analysed_s = 0.0
        self.analysed_s = 0.0
        self.vetoed_s = 0.0
        self.pending = 0
        self.in_flight = 0
        self.latencies: deque[float] = deque(maxlen=latency_window)
        self.compute: deque[float] = deque(maxlen=latency_window)
        self.model_version = ""
        self.published_until: float | None = None
        self.newest_data: float | None = None
        self.model_changes: list[dict] = []

    def skip(self, path: str, reason: str) -> None:
        with self.lock:
            key = reason.split(":")[0]
            self.skipped[key] += 1
            self.skipped_frames.append({"file": Path(path).name, "reason": reason})
            self.skipped_frames = self.skipped_frames[-200:]

    def fail(self, path: str, reason: str) -> None:
        with self.lock:
            self.failed.append({"file": Path(path).name, "reason": reason})

    def snapshot(self) -> dict:
        with self.lock:
            lat = np.array(self.latencies) if self.latencies else np.zeros(0)
            backlog = (
                self.newest_data - self.published_until
                if self.newest_data is not None and self.published_until is not None
                else 0.0
            )
            return {
                "uptime_s": round(time.time() - self.started, 3),
                "frames_in": self.frames_in,
                "frames_analysed": self.analysed,
                "frames_failed": len(self.failed),
                "frames_skipped": int(sum(self.skipped.values())),
                "frames_pending": self.pending,
                "skipped_by_reason": dict(self.skipped),
                "failed": self.failed[-50:],
                "skipped": self.skipped_frames[-50:],
                "frames_published": self.published,
                "in_flight": self.in_flight,
                "backlog_s": round(max(backlog, 0.0), 3),
                "published_until": self.published_until,
                "newest_data": self.newest_data,
                "analysed_s": round(self.analysed_s, 3),
                "vetoed_s": round(self.vetoed_s, 3),
                "not_analysed_s": round(self.not_analysed_s, 3),
                "latency_p50_s": _pct(lat, 50),
                "latency_p99_s": _pct(lat, 99),
                "latency_max_s": float(lat.max()) if len(lat) else None,
                "compute_p50_s": _pct(np.array(self.compute), 50) if self.compute else None,
                "model_version": self.model_version,
                "model_changes": self.model_changes[-20:],
            }


def _pct(values: np.ndarray, q: float) -> float | None:
    return round(float(np.percentile(values, q)), 4) if len(values) else None


class StatusServer:
    """``GET /status`` -> the metrics snapshot as JSON (a daemon thread)."""

    def __init__(self, metrics: OnlineMetrics, host: str, port: int) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path.rstrip("/") not in ("/status", ""):
                    self.send_error(404, "routes: /status")
                    return
                body = json.dumps(metrics.snapshot(), default=float).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, fmt, *args):  # requests are not worth a log line each
                return

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.url = f"http://{host}:{self.httpd.server_address[1]}/status"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class MetricsLogger:
    """Periodic TensorBoard scalars, MLflow metrics and ``OUT/status.json``."""

    NUMERIC = (
        "frames_in",
        "frames_analysed",
        "frames_failed",
        "frames_skipped",
        "frames_pending",
        "backlog_s",
        "latency_p50_s",
        "latency_p99_s",
        "analysed_s",
        "vetoed_s",
        "not_analysed_s",
    )

    def __init__(self, out: Path, tracking_uri: str, experiment: str, params: dict) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.out = Path(out)
        self.writer = SummaryWriter(str(self.out / "tensorboard"))
        self.tracking_uri = tracking_uri
        self.run_id = start_run(
            tracking_uri,
            experiment,
            f"online-{self.out.name}",
            params,
            {"stage": "online"},
            artifact_location=default_artifact_location(out),
        )
        self.step = 0

    def log(self, snapshot: dict, extra: dict) -> None:
        import mlflow

        snapshot = snapshot | extra
        tmp = self.out / ".status.json.tmp"
        tmp.write_text(json.dumps(snapshot, indent=2, default=float))
        os.replace(tmp, self.out / "status.json")
        client = mlflow.MlflowClient(self.tracking_uri)
        now = int(time.time() * 1000)
        metrics = []
        for key in self.NUMERIC:
            value = snapshot.get(key)
            if value is None:
                continue
            self.writer.add_scalar(f"online/{key}", float(value), self.step)
            metrics.append(mlflow.entities.Metric(key, float(value), now, self.step))
        self.writer.flush()
        try:
            client.log_batch(self.run_id, metrics=metrics)
        except Exception as exc:  # tracking is best effort: the stream goes on
            log.warning("online: MLflow metrics not logged (%s)", exc)
        self.step += 1

    def close(self, snapshot: dict, extra: dict) -> None:
        self.log(snapshot, extra)
        self.writer.close()
