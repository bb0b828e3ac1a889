"""``glitchflow clean``: subtract witnessed glitches from strain over a span of frames (Ray Data).

Blocks of ``clean.frames_per_block`` consecutive frames stream through actors
that each hold the subtraction model and the one Conditioner built from the
model's own signal settings.  A block is read with its neighbours' data
(:data:`~glitchflow.pipelines.clean_block.PAD` s each side), whitened, its
witness triggers fitted and subtracted (:func:`subtract_block`), and the
subtraction brought back to strain units at the strain's own rate.

Products in OUT:

- ``frames/OBS-GLITCHFLOW_CLEAN-GPS-DUR.gwf``: per input frame, the cleaned
  strain under the strain channel's own name and the subtracted signal as
  ``<IFO>:GLITCHFLOW_SUBTRACTED`` (raw = cleaned + subtracted, sample by sample, to
  the rounding of ``clean.output_dtype``);
- ``glitches.csv``: one row per witness trigger (channel, GPS, frequency,
  witness SNR^2, fit SNR, gain, subtracted or not, frame);
- ``summary.json``: frames in = written + failed, triggers and subtractions per
  witness, the model, wall time and the real-time factor.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from glitchflow.config import Config, SignalConfig
from glitchflow.io.atomic import atomic_path, write_json_atomic
from glitchflow.io.frame_memory import FrameMemory
from glitchflow.io.frame_writer import write_frame
from glitchflow.io.frames import find_frames, frame_name, make_blocks
from glitchflow.models.subtraction import SUBTRACTED, SubtractionModel
from glitchflow.pipelines.clean_block import clean_segment, read_block
from glitchflow.pipelines.runtime import (
    check_shared_storage,
    check_stage_resources,
    map_block_runs,
    run_blocks,
)
from glitchflow.pipelines.staging import check_staging, claim_out, staged
from glitchflow.signal.conditioner import Conditioner
from glitchflow.tracking.model_store import resolve_subtraction

log = logging.getLogger(__name__)

CLEAN_PRODUCTS = ["frames", "glitches.csv", "summary.json"]


class BlockCleaner:
    """Ray Data callable class: one block of frames -> cleaned frames on disk + rows."""

    def __init__(
        self, model_state: str, frames: list, out: str, tag: str, dtype: str, threads: int = 1
    ):
        import torch

        torch.set_num_threads(threads)
        self.model = SubtractionModel.load(model_state)
        self.cond = Conditioner(SignalConfig(**self.model.signal))
        self.frames = frames
        self.out = Path(out)
        self.tag = tag
        self.dtype = dtype
        self.memory = FrameMemory()  # boundary frames of consecutive blocks decoded once

    def __call__(self, batch: dict) -> dict:
        """Runs of consecutive blocks (JSON lists of lists of frame paths), each block in
        time order so that a boundary frame is decoded once -> the run's trigger rows
        and frame reports (JSON)."""
        rows, reports = [], []
        for paths in run_blocks(batch):
            check_staging(self.out / "frames")  # a killed run's actor stops here
            got_rows, got_reports = clean_block(
                self.model,
                self.cond,
                paths,
                self.frames,
                self.out,
                self.tag,
                self.dtype,
                self.memory,
            )
            rows += got_rows
            reports += got_reports
        return {"rows": [json.dumps(rows)], "reports": [json.dumps(reports)]}


def clean_block(
    model,
    cond,
    paths: list[str],
    frames: list,
    out: Path,
    tag: str,
    dtype: str = "float32",
    memory: FrameMemory | None = None,
):
    """Clean one block, writing frames of ``dtype`` samples; returns (trigger rows, one
    report per frame of the block).  ``memory``: see :func:`read_block`."""

    s = model.settings
    strain = model.strain_channel
    detector = strain.split(":")[0]
    read = read_block(paths, frames, strain, model.channels, memory)
    mine = sorted((f for f in frames if f[0] in set(paths)), key=lambda f: f[1])
    reports = {p: {"frame": p, "written": False, "reason": read.errors.get(p, "")} for p in paths}
    for name, (frame, why) in read.bad.items():
        reports.get(frame, {}).setdefault("bad_witnesses", {})[name] = why
    rows = []
    min_len = 2 * cond.signal.conditioning.filter_duration + s["segment"]
    for seg in read.segments:
        inside = [f for f in mine if f[1] >= seg.start - 1e-6 and f[1] + f[2] <= seg.end + 1e-6]
        if not inside:
            continue
        if seg.duration < max(min_len, cond.signal.conditioning.fftlength):
            for f in inside:
                reports[f[0]]["reason"] = f"contiguous data too short to whiten ({seg.duration} s)"
            continue
        sub, fits = clean_segment(model, cond, seg, (read.start, read.end))
        rate = seg.rates[strain]
        for path, start, duration in inside:
            a = round((start - seg.start) * rate)
            b = a + round(duration * rate)
            name = frame_name(detector[0], tag, start, duration)
            removed = sub[a:b].astype(dtype)
            raw = np.asarray(seg.data[strain][a:b], dtype=np.float64)
            cleaned = (raw - removed).astype(dtype)
            write_frame(
                out / "frames" / name,
                start,
                {strain: (cleaned, rate), f"{detector}:{SUBTRACTED}": (removed, rate)},
                {strain: "strain", f"{detector}:{SUBTRACTED}": "strain"},
            )
            reports[path] |= {"written": True, "reason": "", "output": name}
            for f in fits:
                if start <= f["gps"] < start + duration:
                    rows.append(f | {"frame": Path(path).name})
    for rep in reports.values():
        if not rep["written"] and not rep["reason"]:
            rep["reason"] = "no readable strain covering the frame"
    return rows, list(reports.values())


@dataclass(frozen=True)
class CleanResult:
    """What ``glitchflow clean`` wrote (also OUT/summary.json): frames in = written +
    failed (each failure with its file and reason); per witness channel its triggers and
    the glitches subtracted from them; ``data_seconds`` / ``wall_seconds`` (s) and their
    ratio ``real_time_factor``."""

    frames_in: int
    frames_written: int
    frames_failed: list[dict]
    witnesses: dict[str, dict]
    glitches_subtracted: int
    model: dict
    data_seconds: float
    wall_seconds: float
    real_time_factor: float | None
    out: str

    def to_dict(self) -> dict:
        return asdict(self)


def clean_blocks(cfg: Config, frames: list, state: Path, out: Path) -> tuple[list, list]:
    """Clean ``frames`` block by block on Ray Data (:class:`BlockCleaner` actors holding
    the subtraction model saved at ``state``), writing cleaned frames under ``out``;
    returns the per-glitch rows and the per-frame reports."""
    res = cfg.clean.resources
    blocks = make_blocks(frames, cfg.clean.frames_per_block)
    rows, reports = [], []
    if not blocks:
        return rows, reports
    kwargs = {
        "model_state": str(state),
        "frames": [(f.path, f.start, f.duration) for f in frames],
        "out": str(out),
        "tag": cfg.clean.frame_tag,
        "dtype": cfg.clean.output_dtype,
        "threads": max(1, math.floor(res.cpus_per_worker)),
    }
    for item in map_block_runs(blocks, BlockCleaner, kwargs, res):
        rows += json.loads(item["rows"])
        reports += json.loads(item["reports"])
    return rows, reports


def run_clean(
    cfg: Config,
    frames_dir: str | Path,
    model_uri: str,
    out: str | Path,
    tracking_uri: str | None = None,
    overwrite: bool = False,
) -> CleanResult:
    """Clean every frame in ``frames_dir``; write the products; return the summary."""
    import pandas as pd

    t0 = time.perf_counter()
    model, described = resolve_subtraction(model_uri, tracking_uri)  # fails fast
    found = find_frames(frames_dir)
    res = cfg.clean.resources
    check_stage_resources(res, "clean")
    out = claim_out(out, CLEAN_PRODUCTS, "clean", overwrite)
    check_shared_storage(frames_dir, out)
    # frames are written into a staging directory published when the actors are done:
    # the actors of a killed run cannot add to the next run's frames
    with staged(out, "clean", ["frames"]) as staging:
        (staging / "frames").mkdir()
        state = staging / ".model.pt"
        model.save(state)
        rows, reports = clean_blocks(cfg, found.frames, state, staging)
    table = pd.DataFrame(rows)
    with atomic_path(out / "glitches.csv") as tmp:
        table.to_csv(tmp, index=False)
    wall = time.perf_counter() - t0
    written = [r for r in reports if r["written"]]
    failed = [{"file": r["frame"], "reason": r["reason"]} for r in reports if not r["written"]]
    failed += [{"file": e.path, "reason": e.reason} for e in found.failures]
    seconds = sum(f.duration for f in found.frames if f.path in {r["frame"] for r in written})
    per_witness = {}
    for w in model.channels:
        mine = table[table.channel == w] if len(table) else table
        per_witness[w] = {
            "triggers": len(mine),
            "subtracted": int(mine.subtracted.sum()) if len(mine) else 0,
        }
    result = CleanResult(
        frames_in=len(found.frames) + len(found.failures),
        frames_written=len(written),
        frames_failed=failed,
        witnesses=per_witness,
        glitches_subtracted=int(table.subtracted.sum()) if len(table) else 0,
        model=described,
        data_seconds=seconds,
        wall_seconds=round(wall, 2),
        real_time_factor=round(seconds / wall, 2) if wall > 0 else None,
        out=str(out),
    )
    write_json_atomic(out / "summary.json", result.to_dict(), default=str)
    log.info(
        "clean: %d/%d frames, %d glitches subtracted, %.0fx real time",
        len(written),
        result.frames_in,
        result.glitches_subtracted,
        result.real_time_factor or 0,
    )
    return result
