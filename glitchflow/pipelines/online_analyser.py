"""The warm half of ``glitchflow online``: one frame's windows in, decisions out.

:class:`FrameAnalyser` holds one Conditioner and one
:class:`~glitchflow.models.inference.Predictor` (the model, its scaling and its
operating point) for as long as the service runs; the service wraps it in a
Ray actor.  For an owning frame it cuts the frame's windows exactly as
``glitchflow infer`` does for a one-frame block (:class:`FrameWindowCutter`,
padding read from the neighbouring frames) and decides them with
:meth:`Predictor.decide_windows`, the decision path of batch inference, so
both give the same answer for the same frames.

A new model (an alias moved in the registry) is swapped in with :meth:`load`
between two frames: calls to one actor run in the order they were sent.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from glitchflow.config import OnlineConfig
from glitchflow.config.base import validate_model
from glitchflow.io.frame_memory import FrameMemory
from glitchflow.io.frames import FrameFile
from glitchflow.io.windows import (
    FrameWindowCutter,
    drop_bad_windows,
    read_grid_unit,
    window_starts,
)
from glitchflow.models.checkpoint import Checkpoint
from glitchflow.models.inference import Predictor
from glitchflow.signal.conditioner import Conditioner

log = logging.getLogger(__name__)


@dataclass
class FrameResult:
    """Decisions of the windows an input frame owns (those starting inside it).

    ``windows``: ``{"gps_start", "gps_end", "veto", "clusters": [{"gps_start",
    "gps_end", "snr2", ...}]}`` per decided window; ``skipped``: ``{"gps_start",
    "reason"}`` per window not decided; ``errors``: problems reading frames.
    """

    frame: str
    gps_start: float
    gps_end: float
    model_version: str
    windows: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    bad_channels: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        """The frame itself could not be read (its own windows are lost); problems in
        neighbouring frames only skip the windows whose padding they hold."""
        return bool(self.errors)


class FrameAnalyser:
    """Conditioner + Predictor kept warm; :meth:`analyse` one owning frame at a time.

    Args:
        ckpt: self-describing checkpoint.
        version: label of the model (registry version, or the checkpoint's epoch).
        online: the ``online`` config section (dict or :class:`OnlineConfig`).
        threads: torch threads.
        use_gpu: run on CUDA when available.
    """

    def __init__(
        self, ckpt: Checkpoint, version: str, online, threads: int = 1, use_gpu: bool = False
    ) -> None:
        torch.set_num_threads(max(1, threads))
        self.online = validate_model(OnlineConfig, online, "online")
        self.device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
        # a frame is the padding of its neighbours' windows: decode it once, not 3 times
        self.frames = FrameMemory()
        self.load(ckpt, version)

    def load(self, ckpt: Checkpoint, version: str) -> str:
        """Swap in another model (its own Conditioner settings included); returns its label."""
        on = self.online
        signal = ckpt.signal
        self.cond = Conditioner(signal).to(self.device)
        self.predictor = Predictor(
            ckpt, self.device, on.crop_hop, on.snr2_threshold, on.min_area, tiling=on.tiling
        )
        step = self.cond.time_step
        for key in ("window", "stride"):
            value = getattr(on, key)
            if abs(value / step - round(value / step)) > 1e-6:
                raise ValueError(f"online.{key} ({value} s) must be a multiple of {step} s")
        if round(on.window / step) < self.predictor.crop:
            raise ValueError(
                f"online.window ({on.window} s) is shorter than the model's crop "
                f"({self.predictor.crop} bins = {self.predictor.crop * step} s)"
            )
        self.version = str(version)
        log.info("analyser: model version %s loaded", self.version)
        return self.version

    def geometry(self) -> dict:
        """What the service needs to schedule frames: the edge (s), the read grid unit (s)
        and the channels."""
        return {
            "edge": self.cond.edge_seconds,
            "unit": read_grid_unit(self.cond.time_step),
            "time_step": self.cond.time_step,
            "channels": list(self.predictor.channels),
        }

    @torch.no_grad()
    def analyse(self, frame: tuple, neighbours: list[tuple]) -> FrameResult:
        """Decide the windows that ``frame`` ``(path, gps_start, duration)`` owns, with
        padding from ``neighbours`` (the same tuples; the frame itself may be among them)."""
        t0 = time.perf_counter()
        own = FrameFile(frame[1], frame[2], frame[0])
        files = {f[0]: FrameFile(f[1], f[2], f[0]) for f in [*neighbours, frame]}
        on = self.online
        cutter = FrameWindowCutter(
            self.cond,
            list(files.values()),
            self.predictor.channels,
            on.window,
            on.stride,
            self.device,
            self.frames,
        )
        result = FrameResult(own.path, own.start, own.end, self.version)
        if not len(window_starts(own.start, own.end, on.stride)):
            result.seconds = time.perf_counter() - t0
            return result
        windows, reports = cutter.process([own])
        good = drop_bad_windows(windows, reports)
        (report,) = reports
        result.skipped = list(report.skipped)
        result.errors = list(report.errors)
        result.bad_channels = dict(report.bad_channels)
        if good:
            spec = torch.from_numpy(np.stack([w["spectrogram"] for w in good]))
            starts = [w["gps_start"] for w in good]
            out = self.predictor.decide_windows(
                spec, starts, self.cond.time_step, self.cond.frequencies
            )
            for d in out.decisions:
                result.windows.append(
                    {
                        "gps_start": d.gps_start,
                        "gps_end": d.gps_end,
                        "veto": d.veto,
                        "max_generated_snr2": d.max_generated_snr2,
                        "clusters": [vars(c) for c in d.clusters],
                    }
                )
        result.seconds = time.perf_counter() - t0
        return result
