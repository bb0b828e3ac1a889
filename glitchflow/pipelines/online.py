"""``glitchflow online``: follow a live frame directory and publish veto state within seconds.

The driver loop (this module) watches ``--frames`` for new ``OBS-TAG-GPS-DUR.gwf``
files, keeps the GPS timeline of what has arrived, and hands every frame that
owns decision windows to a pool of Ray actors
(:class:`~glitchflow.pipelines.online_analyser.FrameAnalyser`, the warm
Conditioner and model) as soon as the data its windows need -- the window
plus the Conditioner's edge on each side -- is there.  Frames never wait for
each other's model calls: up to ``online.max_in_flight`` frames queue per
actor.  Output frames are published strictly in GPS order
(:mod:`.online_outputs`), one per input-frame slot.

Timeline rules (all "seconds" of GPS data unless said otherwise):

* a **gap** (no frame for a span) is declared *missing* once data
  ``online.late_horizon`` s past its start has arrived; its time is published
  as not analysed and the windows whose padding it holds are skipped;
* a **late** frame that fills a gap before then is analysed as usual; one that
  arrives after is skipped (reason ``late``);
* a **corrupt** frame is reported (failed) and treated as missing;
* on **restart** the service resumes after its last published output frame
  (earlier input frames are only read as padding), so nothing is published
  twice or left out;
* a **model** behind a registry alias is re-resolved every ``online.model_poll``
  s; a new version is loaded into every actor between two frames, and each
  output frame records the version that decided it.

Decisions equal ``glitchflow infer`` with ``infer.window``/``stride`` =
``online.window``/``stride`` and ``infer.frames_per_block=1``: both cut and
condition the windows of one frame with :class:`FrameWindowCutter` and decide
them with :meth:`Predictor.decide_windows`.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from pathlib import Path

import numpy as np

from glitchflow.config import Config
from glitchflow.io.frames import FrameFile
from glitchflow.io.windows import ReadGrid, window_starts
from glitchflow.pipelines.online_analyser import FrameAnalyser, FrameResult
from glitchflow.pipelines.online_outputs import OnlinePublisher, Slot, slot_segments
from glitchflow.pipelines.online_status import (
    MetricsLogger,
    OnlineMetrics,
    OnlineResult,
    StatusServer,
)
from glitchflow.pipelines.online_timeline import EPS, FrameTimeline
from glitchflow.pipelines.runtime import check_resources
from glitchflow.tracking.mlflow_tracking import default_tracking_uri
from glitchflow.tracking.model_store import MODEL_URI, resolve_model

log = logging.getLogger(__name__)


class OnlineService:
    """The long-running loop; :meth:`run` returns the final status snapshot.

    Args:
        cfg: configuration (``online`` section; the model's own signal settings).
        frames_dir: directory the detector (or ``glitchflow synth --realtime``) writes.
        model_uri: ``models:/NAME@ALIAS`` (followed), ``models:/NAME/VERSION`` or a path.
        out: output directory (resumed when it holds published frames).
        tracking_uri: MLflow URI of the registry and of the metrics run.
        idle_exit: stop once no frame has appeared for this many wall seconds (counted
            from the first frame), after analysing what is left as the end of the stream;
            None: run until signalled.
        start: first GPS second to publish on a fresh start (default: the first frame).
    """

    def __init__(
        self,
        cfg: Config,
        frames_dir: str | Path,
        model_uri: str,
        out: str | Path,
        tracking_uri: str | None = None,
        idle_exit: float | None = None,
        start: float | None = None,
    ) -> None:
        import ray

        self.cfg, self.on = cfg, cfg.online
        self.frames_dir = Path(frames_dir)
        if not self.frames_dir.is_dir():
            raise FileNotFoundError(f"{frames_dir}: frame directory does not exist")
        self.out = Path(out).resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        self.model_uri, self.idle_exit = model_uri, idle_exit
        self.model = resolve_model(model_uri, tracking_uri)
        self.tracking_uri = (
            tracking_uri or self.model.tracking_uri or cfg.train.mlflow.tracking_uri
        ) or default_tracking_uri(self.out)
        on = self.on
        check_resources(on.workers * on.cpus_per_worker, on.workers * on.gpus_per_worker, "online")
        actor = ray.remote(FrameAnalyser).options(
            num_cpus=on.cpus_per_worker, num_gpus=on.gpus_per_worker
        )
        self.actors = [
            actor.remote(
                self.model.ckpt,
                model_label(self.model),
                on.model_dump(mode="json"),
                max(1, math.floor(on.cpus_per_worker)),
                on.gpus_per_worker > 0,
            )
            for _ in range(on.workers)
        ]
        geo = ray.get(self.actors[0].geometry.remote())
        self.grid = ReadGrid(geo["edge"], geo["time_step"], geo["unit"])  # as infer reads
        self.edge, self.unit = self.grid.edge, self.grid.unit
        strain = geo["channels"][0]
        self.publisher = OnlinePublisher(
            self.out, strain.split(":")[0], strain[0], on.state_channel, on.state_rate, on.frame_tag
        )
        self.metrics = OnlineMetrics()
        self.metrics.model_version = model_label(self.model)
        self.results: dict[float, object] = {}  # owner frame start -> FrameResult
        self.dispatched: set[float] = set()
        self.in_flight: dict = {}  # ObjectRef -> (actor index, owner start)
        self.load = [0] * len(self.actors)
        self.published_until = self.publisher.resume()
        self.resumed = self.published_until is not None
        origin = self.published_until if self.resumed else start
        self.timeline = FrameTimeline(self.metrics, on.late_horizon, origin)
        self.stop = False
        self.last_frame_wall = time.time()

    # ------------------------------------------------------------------ analysis
    def _needs(self, frame: FrameFile) -> tuple[float, float] | None:
        """GPS span of data the windows owned by ``frame`` need (None: it owns none)."""
        starts = window_starts(frame.start, frame.end, self.on.stride)
        if not len(starts):
            return None
        lo = self.grid.read_start(starts[0])
        return lo, float(starts[-1] + self.on.window + self.edge)

    @property
    def front(self) -> float | None:
        """End of the published output (GPS s): where the next output frame starts."""
        return self.published_until if self.published_until is not None else self.timeline.origin

    def _dispatch(self) -> None:
        for start, arrival in sorted(self.timeline.frames.items()):
            if start in self.dispatched or arrival.kind != "frame":
                continue
            if arrival.frame.end + self.on.window + self.on.veto_padding <= self.front + EPS:
                continue  # its windows only cover time already published
            needs = self._needs(arrival.frame)
            if needs is None:
                self.dispatched.add(start)
                continue
            if not self.timeline.covered(*needs):
                continue
            k = int(np.argmin(self.load))
            if self.load[k] >= self.on.max_in_flight:
                return
            lo, hi = needs
            neighbours = [
                (a.frame.path, a.frame.start, a.frame.duration)
                for a in self.timeline.frames.values()
                if a.kind == "frame" and a.frame.end > lo and a.frame.start < hi
            ]
            f = arrival.frame
            ref = self.actors[k].analyse.remote((f.path, f.start, f.duration), neighbours)
            self.in_flight[ref] = (k, start)
            self.load[k] += 1
            self.dispatched.add(start)

    def _collect(self, timeout: float) -> None:
        import ray

        if not self.in_flight:
            time.sleep(timeout)
            return
        ready, _ = ray.wait(list(self.in_flight), num_returns=len(self.in_flight), timeout=timeout)
        for ref in ready:
            k, start = self.in_flight.pop(ref)
            self.load[k] -= 1
            try:
                result = ray.get(ref)
            except Exception as exc:  # the frame is lost, the stream goes on
                f = self.timeline.frames[start].frame
                result = FrameResult(f.path, f.start, f.end, self.metrics.model_version)
                result.errors = [f"analysis failed: {str(exc).splitlines()[0]}"]
            self.results[start] = result
            with self.metrics.lock:
                self.metrics.compute.append(result.seconds)

    # ------------------------------------------------------------------ publication
    def _publish(self) -> None:
        pad, window = self.on.veto_padding, self.on.window
        while True:
            slot = self.timeline.slot_at(self.front) if self.front is not None else None
            if slot is None:
                return
            grid = window_starts(slot.start - window - pad + EPS, slot.end + pad, self.on.stride)
            windows, versions = [], []
            for s in grid:
                owner = self.timeline.owner(float(s))
                if owner is None:
                    if not self.timeline.covered(float(s), float(s) + EPS):
                        return  # the owner of this window has not arrived yet
                    continue
                result = self.results.get(owner.frame.start)
                if owner.kind == "frame" and result is None:
                    return  # still being analysed (or waiting for its data)
                if result is None:
                    continue
                versions.append(result.model_version)
                windows += [w for w in result.windows if abs(w["gps_start"] - s) < EPS]
            own = self.results.get(slot.start)
            if slot.kind == "frame" and own is not None and own.failed:
                slot.kind = "failed"
                self.metrics.fail(slot.frame, "; ".join(own.errors))
            slot.analysed, slot.vetoes = slot_segments(slot.start, slot.end, windows, pad)
            slot.model_version = versions[-1] if versions else self.metrics.model_version
            record = self.publisher.publish(slot)
            self._account(slot, record)
            self.published_until = slot.end

    def _account(self, slot: Slot, record: dict) -> None:
        m = self.metrics
        analysed = float(np.sum(np.diff(slot.analysed))) if len(slot.analysed) else 0.0
        with m.lock:
            m.published += 1
            m.published_until = slot.end
            if slot.kind == "frame":
                m.analysed += 1
                if record["latency_s"] is not None:
                    m.latencies.append(record["latency_s"])
            m.analysed_s += analysed
            m.vetoed_s += float(np.sum(np.diff(slot.vetoes))) if len(slot.vetoes) else 0.0
            m.not_analysed_s += slot.end - slot.start - analysed
            m.pending = self.timeline.pending(slot.end)

    # ------------------------------------------------------------------ model
    def _poll_model(self) -> None:
        import mlflow
        import ray

        match = MODEL_URI.match(self.model_uri)
        if match is None or not match["alias"]:
            return
        client = mlflow.MlflowClient(self.tracking_uri, registry_uri=self.tracking_uri)
        try:
            current = client.get_model_version_by_alias(match["name"], match["alias"]).version
        except Exception as exc:  # a registry hiccup keeps the running model
            log.warning(
                "online: cannot check %s (%s); keeping version %s",
                self.model_uri,
                exc,
                self.model.version,
            )
            return
        if str(current) == str(self.model.version):
            return
        model = resolve_model(self.model_uri, self.tracking_uri)
        ref = ray.put(model.ckpt)
        ray.get([a.load.remote(ref, model.version) for a in self.actors])
        log.info(
            "online: model %s version %s -> %s", self.model_uri, self.model.version, model.version
        )
        with self.metrics.lock:
            self.metrics.model_changes.append(
                {
                    "from": self.model.version,
                    "to": model.version,
                    "at_gps": self.timeline.newest,
                    "wall": time.time(),
                }
            )
            self.metrics.model_version = model.version
        self.model = model

    # ------------------------------------------------------------------ loop
    def _prune(self) -> None:
        """Forget frames and results far behind the publication front (bounded memory)."""
        if self.published_until is None:
            return
        keep = 2 * self.on.window + 2 * self.edge + 2 * self.unit + self.on.veto_padding
        for start in self.timeline.forget_before(self.published_until - keep):
            self.results.pop(start, None)
            self.dispatched.discard(start)

    def run(self) -> OnlineResult:
        on = self.on
        server = StatusServer(self.metrics, on.status_host, on.status_port)
        logger = MetricsLogger(
            self.out,
            self.tracking_uri,
            self.cfg.train.mlflow.experiment,
            {
                "model_uri": self.model_uri,
                "frames": str(self.frames_dir),
                "online": on.model_dump(mode="json"),
            },
        )
        extra = {"status_url": server.url, "model_uri": self.model_uri, "resumed": self.resumed}
        log.info(
            "online: watching %s, status at %s, output %s", self.frames_dir, server.url, self.out
        )
        handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for s in handlers:
            signal.signal(s, self._signalled)
        next_metrics = next_flag = next_model = time.time()
        try:
            while True:
                if self.timeline.scan(self.frames_dir, self.published_until):
                    self.last_frame_wall = time.time()
                if self.front is not None:
                    self.timeline.declare_missing(self.front)
                self._dispatch()
                self._collect(on.poll_interval)
                self._publish()
                self._prune()
                now = time.time()
                if on.model_poll and now >= next_model:
                    self._poll_model()
                    next_model = now + on.model_poll
                if now >= next_flag:
                    self.publisher.roll_flag()
                    next_flag = now + on.flag_every
                if now >= next_metrics:
                    logger.log(self.metrics.snapshot(), extra)
                    next_metrics = now + on.metrics_every
                if self.stop and not self.in_flight:
                    break
                idle = self.idle_exit is not None and now - self.last_frame_wall > self.idle_exit
                if idle and not self.in_flight and self.timeline.origin is not None:
                    if self.timeline.end_of_stream:
                        break
                    log.info(
                        "online: no new frame for %.1f s: finishing the stream", self.idle_exit
                    )
                    self.timeline.end_of_stream = True
        finally:
            for s, h in handlers.items():
                signal.signal(s, h)
            self.publisher.roll_flag()
            snapshot = self.metrics.snapshot()
            logger.close(snapshot, extra)
            server.close()
        return OnlineResult(**snapshot, **extra, out=str(self.out))

    def _signalled(self, signum, _frame) -> None:
        log.info("online: signal %d: finishing the frames in flight", signum)
        self.stop = True


def model_label(model) -> str:
    """The registry version of a model, or ``file:NAME`` for a checkpoint file (whose
    output frames then carry version -1)."""
    return model.version if model.run_id else f"file:{Path(model.uri).name}"


def run_online(
    cfg: Config, frames_dir, model_uri: str, out, tracking_uri=None, idle_exit=None, start=None
) -> OnlineResult:
    """Run the service (see :class:`OnlineService`); returns its final status."""
    return OnlineService(cfg, frames_dir, model_uri, out, tracking_uri, idle_exit, start).run()
