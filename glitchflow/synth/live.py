"""The live twin: the detector twin's frames written at the wall-clock pace of a detector.

``glitchflow synth --realtime`` writes frame ``k`` (GPS ``[t_k, t_k + d)``) once
``(k + 1) d / speed`` wall seconds have passed since the start, as a detector's
low-latency frame writer does when the data of a frame are complete.  Each
frame is written under a temporary name and renamed into place
(:func:`~glitchflow.io.frame_writer.write_frame`), so a reader never sees half a
file; the companion truth frame (the injected glitch strain) is written just
before its data frame.  The truth catalogue is written first: the whole span's glitches are
known before the first frame.  Frames falling in configured gaps are not
written (a gap in the stream).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from tqdm.auto import tqdm

from glitchflow.config import Config
from glitchflow.io.frame_writer import write_frame
from glitchflow.io.frames import frame_name
from glitchflow.io.truth import write_truth
from glitchflow.synth.twin import TRUTH_DIR, DetectorTwin, TwinResult

log = logging.getLogger(__name__)


def stream(cfg: Config, out: str | Path, speed: float = 1.0, progress: bool = True) -> TwinResult:
    """Write the twin's frames under ``out/frames/`` at ``speed`` x real time.

    A frame that is ready late (generation slower than the pace) is written at
    once and the lag is logged; the pace never skips frames.
    """
    if speed <= 0:
        raise ValueError(f"speed must be positive, got {speed}")
    out = Path(out)
    frame_dir = out / "frames"
    frame_dir.mkdir(parents=True, exist_ok=True)
    truth_dir = out / TRUTH_DIR
    truth_dir.mkdir(exist_ok=True)
    twin = DetectorTwin(cfg)
    spec = cfg.twin
    truth_path = out / "truth.csv"
    rows = twin.truth_rows()
    write_truth(rows, truth_path)
    dtypes = {name: spec.aux_dtype for name in twin.rates} | {twin.strain: spec.strain_dtype}
    n_frames = spec.duration // spec.frame_duration
    t0 = time.perf_counter()
    written = []
    worst_lag = 0.0
    frames = tqdm(
        twin.frames(), total=n_frames, desc="live twin", unit="frame", disable=not progress
    )
    for k, (start, data, keep) in enumerate(frames):
        due = t0 + (k + 1) * spec.frame_duration / speed
        wait = due - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        else:
            worst_lag = max(worst_lag, -wait)
        if not keep:
            log.info("live twin: GPS %d falls in a configured gap: not written", start)
            continue
        name = frame_name(spec.observatory, spec.frame_tag, start, spec.frame_duration)
        channels = {n: (x.astype(dtypes[n]), twin.rates[n]) for n, x in data.items()}
        truth_name, truth, truth_units = twin.truth_frame(start)
        write_frame(truth_dir / truth_name, start, truth, truth_units)
        write_frame(frame_dir / name, start, channels, twin.units)
        written.append(frame_dir / name)
    wall = time.perf_counter() - t0
    if worst_lag > 0.5 * spec.frame_duration / speed:
        log.warning("live twin: fell behind the pace by up to %.2f s", worst_lag)
    return TwinResult(written, truth_path, len(rows), len(written) * spec.frame_duration, wall)
