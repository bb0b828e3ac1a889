"""The detector twin: a seeded, Virgo-like data stream written as GWF frames plus truth.

Strain is Gaussian noise coloured by a lalsimulation design PSD (Advanced
Virgo by default) at 16384 Hz, in strain units.  Auxiliary channels carry
their own coloured noise (and mains lines) at their own rates.  Six glitch
families are injected (see :mod:`glitchflow.synth.population`).  Frames are
generated one at a time, so memory is bounded by one frame whatever the span.

Determinism: the noise of channel ``i`` in frame ``k`` comes from
``SeedSequence([seed, 100 + i, k])`` and the glitch populations from
``SeedSequence([seed, family])``; the same config and seed give the same bytes.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from glitchflow.config import Config
from glitchflow.io.frame_writer import write_frame
from glitchflow.io.frames import frame_name
from glitchflow.io.truth import write_truth
from glitchflow.synth.noise import ColouredNoiseStream, aux_psd, colouring_filter, strain_psd
from glitchflow.synth.population import Glitch, PopulationBuilder
from glitchflow.synth.waveforms import render

log = logging.getLogger(__name__)

STRAIN_RATE = 16384.0
FILTER_SECONDS = 8.0
#: families whose strain glitch has a witness (what a subtraction can remove)
WITNESSED_FAMILIES = ("blip", "scattered_light", "environmental")
#: companion truth frames: the strain the twin injected from glitches, sample by sample
TRUTH_TAG = "GLITCHFLOW_TRUTH"
TRUTH_DIR = "truth_frames"


def truth_channels(detector: str) -> dict[str, str]:
    """Channel names of the truth frames: every glitch's strain, and the witnessed ones'."""
    return {
        "all": f"{detector}:GLITCHFLOW_TRUTH_GLITCH",
        "witnessed": f"{detector}:GLITCHFLOW_TRUTH_WITNESSED",
    }


@dataclass
class TwinResult:
    """What :func:`generate` wrote: frame paths, the truth file and timing (s)."""

    frames: list[Path]
    truth_path: Path
    n_glitches: int
    seconds_generated: float
    wall_seconds: float

    def summary(self) -> str:
        speed = self.seconds_generated / max(self.wall_seconds, 1e-9)
        return (
            f"{len(self.frames)} frames, {self.seconds_generated:.0f} s of data, "
            f"{self.n_glitches} glitches in {self.truth_path} "
            f"({self.wall_seconds:.1f} s wall, {speed:.0f}x real time)"
        )


class DetectorTwin:
    """Builds channel noise models and glitch populations for one config and seed."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        twin = cfg.twin
        for spec in twin.channels:
            if abs(spec.sample_rate * twin.frame_duration % 1) > 1e-9:
                raise ValueError(
                    f"twin.channels[{spec.name}]: sample_rate {spec.sample_rate} Hz x "
                    f"frame_duration {twin.frame_duration} s is not a whole number of samples"
                )
        self.strain = cfg.signal.strain_channel
        self.rates = {self.strain: STRAIN_RATE} | {c.name: c.sample_rate for c in twin.channels}
        self.psds = {self.strain: strain_psd(twin.strain_psd, twin.psd_low_frequency)}
        self.psds |= {c.name: aux_psd(c.noise) for c in twin.channels}
        self.units = {self.strain: "strain"} | {c.name: c.unit for c in twin.channels}
        self.lines = {c.name: c.noise.lines for c in twin.channels}
        self.glitches: list[Glitch] = PopulationBuilder(
            twin, cfg.seed, self.strain, self.psds, self.rates
        ).build()

    @property
    def channel_names(self) -> list[str]:
        return list(self.rates)

    def _in_gap(self, start: float, end: float) -> bool:
        return any(start < hi and end > lo for lo, hi in self.cfg.twin.gaps)

    def frames(self):
        """Yield ``(gps_start, {channel: samples}, written)`` for every frame of the span."""
        twin = self.cfg.twin
        streams = {}
        for i, name in enumerate(self.rates):
            taps = colouring_filter(self.psds[name], self.rates[name], FILTER_SECONDS)
            rng = np.random.default_rng(np.random.SeedSequence([self.cfg.seed, 100 + i]))
            streams[name] = ColouredNoiseStream(taps, rng)
        line_rng = np.random.default_rng(np.random.SeedSequence([self.cfg.seed, 99]))
        line_phases = {
            name: line_rng.uniform(0, 2 * np.pi, len(lines)) for name, lines in self.lines.items()
        }
        n_frames = twin.duration // twin.frame_duration
        for k in range(n_frames):
            start = twin.gps_start + k * twin.frame_duration
            data = {}
            for i, name in enumerate(self.rates):
                rate = self.rates[name]
                n = round(rate * twin.frame_duration)
                rng = np.random.default_rng(np.random.SeedSequence([self.cfg.seed, 100 + i, k]))
                x = streams[name].next(n, rng)
                t = (start - twin.gps_start) + np.arange(n) / rate
                for (freq, amp), phase in zip(self.lines.get(name, []), line_phases.get(name, [])):
                    x += amp * np.sqrt(2) * np.sin(2 * np.pi * freq * t + phase)
                data[name] = x
            self._inject(start, start + twin.frame_duration, data)
            yield start, data, not self._in_gap(start, start + twin.frame_duration)

    def _inject(self, start: float, end: float, data: dict[str, np.ndarray], glitches=None) -> None:
        epoch = self.cfg.twin.gps_start
        for glitch in self.glitches if glitches is None else glitches:
            for comp in glitch.components:
                lo, hi = comp.support()
                if hi < start or lo > end or comp.channel not in data:
                    continue
                rate = self.rates[comp.channel]
                k0, values = render(comp, epoch, rate)
                offset = round((start - epoch) * rate)
                a = max(k0 - offset, 0)
                b = min(k0 - offset + len(values), len(data[comp.channel]))
                if b > a:
                    data[comp.channel][a:b] += values[a - (k0 - offset) : b - (k0 - offset)]

    def glitch_strain(self, start: float, end: float) -> dict[str, np.ndarray]:
        """The strain injected from glitches over ``[start, end)`` (strain units, 16384 Hz).

        ``{"all": every family's strain glitches, "witnessed": those of the witnessed
        families}``; raw strain minus ``all`` is the glitch-free strain exactly.
        """
        n = round(STRAIN_RATE * (end - start))
        out = {"all": np.zeros(n), "witnessed": np.zeros(n)}
        only = {
            "all": [g for g in self.glitches],
            "witnessed": [g for g in self.glitches if g.family in WITNESSED_FAMILIES],
        }
        for key, glitches in only.items():
            strain_only = [
                Glitch(
                    g.id,
                    g.family,
                    g.gps_peak,
                    g.duration,
                    g.frequency,
                    g.q,
                    components=[c for c in g.components if c.channel == self.strain],
                )
                for g in glitches
            ]
            self._inject(start, end, {self.strain: out[key]}, strain_only)
        return out

    def truth_frame(self, start: float) -> tuple[str, dict, dict]:
        """``(file name, {channel: (samples, rate)}, units)`` of the truth frame at ``start``."""
        twin = self.cfg.twin
        names = truth_channels(self.cfg.signal.detector)
        strain = self.glitch_strain(start, start + twin.frame_duration)
        channels = {names[k]: (strain[k], STRAIN_RATE) for k in names}
        name = frame_name(twin.observatory, TRUTH_TAG, start, twin.frame_duration)
        return name, channels, dict.fromkeys(channels, "strain")

    def truth_rows(self) -> list[dict]:
        """Truth rows for glitches whose peak lies in a written frame."""
        twin = self.cfg.twin
        rows = []
        for g in self.glitches:
            k = int((g.gps_peak - twin.gps_start) // twin.frame_duration)
            f0 = twin.gps_start + k * twin.frame_duration
            if not self._in_gap(f0, f0 + twin.frame_duration):
                rows.append(g.truth_row())
        return rows


def _write_one(path: Path, start: int, channels: dict, units: dict) -> Path:
    write_frame(path, start, channels, units)
    return path


def generate(cfg: Config, out: str | Path, progress: bool = True, writers: int = 1) -> TwinResult:
    """Write the twin's frames under ``out/frames/``, its truth as ``out/truth.csv`` and the
    injected glitch strain as companion frames under ``out/truth_frames/``.

    Generation is sequential (the noise streams carry state across frames);
    ``writers > 1`` hands the GWF encoding, the slow part, to that many worker
    processes, keeping at most ``2 * writers`` frames in flight.
    """
    out = Path(out)
    frame_dir = out / "frames"
    frame_dir.mkdir(parents=True, exist_ok=True)
    truth_dir = out / TRUTH_DIR
    truth_dir.mkdir(exist_ok=True)
    t_start = time.perf_counter()
    twin = DetectorTwin(cfg)
    spec = cfg.twin
    dtypes = {name: spec.aux_dtype for name in twin.rates} | {twin.strain: spec.strain_dtype}
    n_frames = spec.duration // spec.frame_duration
    pool = None
    if writers > 1:
        pool = ProcessPoolExecutor(writers, mp_context=multiprocessing.get_context("fork"))
    pending: deque[Future] = deque()
    written: list[Path] = []
    try:
        for start, data, keep in tqdm(
            twin.frames(), total=n_frames, desc="twin frames", unit="frame", disable=not progress
        ):
            if not keep:
                log.info("frame at GPS %d falls in a configured gap: not written", start)
                continue
            name = frame_name(spec.observatory, spec.frame_tag, start, spec.frame_duration)
            channels = {n: (x.astype(dtypes[n]), twin.rates[n]) for n, x in data.items()}
            truth = twin.truth_frame(start)
            if pool is None:
                written.append(_write_one(frame_dir / name, start, channels, twin.units))
                _write_one(truth_dir / truth[0], start, truth[1], truth[2])
                continue
            pending.append(pool.submit(_write_one, frame_dir / name, start, channels, twin.units))
            pending.append(pool.submit(_write_one, truth_dir / truth[0], start, *truth[1:]))
            while len(pending) >= 4 * writers:
                written.append(pending.popleft().result())
                pending.popleft().result()
        while pending:
            written.append(pending.popleft().result())
            pending.popleft().result()
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    truth_path = out / "truth.csv"
    rows = twin.truth_rows()
    write_truth(rows, truth_path)
    wall = time.perf_counter() - t_start
    result = TwinResult(written, truth_path, len(rows), len(written) * spec.frame_duration, wall)
    log.info("twin: %s", result.summary())
    return result
