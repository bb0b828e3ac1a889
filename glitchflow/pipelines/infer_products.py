"""Products of ``glitchflow infer`` from the per-window shards.

* ``windows.csv`` / ``windows.parquet``: one row per window (GPS start/end,
  veto, cleaned, max SNR^2 of real / generated / residual, residual area in
  pixels and Hz*s, cluster GPS times; the Parquet also has the clusters as JSON).
* ``live.csv``: the analysed segments; ``vetoes.csv`` (``start,end`` GPS s) and
  ``vetoes.h5``: the merged veto segments, also as a gwpy DataQualityFlag.
* ``gated/``: the strain of every frame gated (inverse Tukey) where the veto
  fires, plus a veto state channel, as GWF.
* ``baseline/``: the hveto rounds of ``glitchflow scan`` applied to the same span.
* ``tensorboard/``: real / generated / residual images of the strongest windows
  and the table as text; an MLflow run with the summary metrics.
* ``summary.json``: counts (frames in = written + failed, windows expected =
  written + skipped), figures, paths.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from glitchflow.config import Config
from glitchflow.evaluate.hveto import apply_rounds, duration, intersect, merge_segments
from glitchflow.evaluate.selection import score_channels
from glitchflow.io.atomic import atomic_path, write_json_atomic
from glitchflow.io.frame_writer import write_frame
from glitchflow.io.frames import FrameFile, frame_name, read_frame
from glitchflow.io.manifest import FrameAccounting
from glitchflow.io.spectrograms import read_columns, tensor_column
from glitchflow.models.checkpoint import Checkpoint
from glitchflow.models.geometry import model_rows
from glitchflow.models.operating_point import OperatingPoint
from glitchflow.pipelines.infer_windows import SCALAR_COLUMNS
from glitchflow.pipelines.scan import collect_triggers
from glitchflow.signal.gating import gate_window, state_bits
from glitchflow.signal.qtransform import QTransform
from glitchflow.tracking.images import panel_figure
from glitchflow.tracking.mlflow_tracking import (
    default_artifact_location,
    default_tracking_uri,
    start_run,
)

log = logging.getLogger(__name__)

#: per-window spectrogram shards under OUT (scalar columns: infer_windows.SCALAR_COLUMNS)
SPECTROGRAMS = "spectrograms"

GATED = "gated"
BASELINE = "baseline"


def read_windows(out: Path) -> pd.DataFrame:

    shards = out / SPECTROGRAMS
    if not shards.is_dir() or not any(shards.glob("*.parquet")):
        return pd.DataFrame(columns=SCALAR_COLUMNS)
    return read_columns(shards, SCALAR_COLUMNS).to_pandas()


def live_segments(windows: pd.DataFrame) -> np.ndarray:
    """Union of the windows' spans (GPS s), shape (k, 2)."""
    if windows.empty:
        return np.zeros((0, 2))
    return merge_segments(windows[["gps_start", "gps_end"]].to_numpy(dtype=float))


def veto_segments_from_clusters(
    clusters: list[list[dict]], padding: float, live: np.ndarray
) -> np.ndarray:
    """Cluster time extents +- ``padding`` s, merged and clipped to the live segments."""
    raw = [(c["gps_start"] - padding, c["gps_end"] + padding) for cs in clusters for c in cs]
    if not raw:
        return np.zeros((0, 2))
    return intersect(merge_segments(np.array(raw, dtype=float)), live)


def write_segments(path: Path, segments: np.ndarray) -> None:
    """``start,end`` GPS seconds at full precision: the file gives back the segments that
    gated the frames (bin edges are multiples of 2**-k s, finer than 0.1 ms)."""
    pd.DataFrame(np.asarray(segments).reshape(-1, 2), columns=["start", "end"]).to_csv(
        path, index=False
    )


def write_flag(path: Path, name: str, active: np.ndarray, known: np.ndarray) -> None:
    """The segments as a gwpy DataQualityFlag (HDF5)."""
    from gwpy.segments import DataQualityFlag

    flag = DataQualityFlag(name, active=[tuple(s) for s in active], known=[tuple(s) for s in known])
    flag.write(str(path), format="hdf5", overwrite=True)


def _gate_frame(
    frame: tuple, strain: str, segments, live, taper: float, state: tuple, out_dir: str
):

    f = FrameFile(frame[1], frame[2], frame[0])
    data, rate, t0 = read_frame(f, [strain])[strain]
    gated = data * gate_window(len(data), rate, t0, segments, taper)
    state_name, state_rate = state
    n_state = round(f.duration * state_rate)
    flags = state_bits(n_state, state_rate, f.start, live, segments)
    obs = Path(f.path).name.split("-")[0]
    path = Path(out_dir) / frame_name(obs, "GLITCHFLOW_GATED", f.start, f.duration)
    write_frame(path, f.start, {strain: (gated, rate), state_name: (flags, state_rate)})
    return str(path)


def write_gated_frames(
    cfg: Config, frames, written: set[str], strain: str, segments, live, out: Path
):
    """Gated strain and the state channel (0 not analysed, 1 analysed clean, 3 vetoed:
    :func:`~glitchflow.signal.gating.state_bits`) for every written frame (Ray tasks)."""
    import ray

    out_dir = out / GATED
    out_dir.mkdir(parents=True, exist_ok=True)
    out_dir = str(out_dir)
    inf = cfg.infer
    state = (f"{strain.split(':')[0]}:{inf.state_channel}", inf.state_channel_rate)
    task = ray.remote(num_cpus=0.5, max_retries=1)(_gate_frame)
    seg_ref, live_ref = ray.put(np.asarray(segments)), ray.put(np.asarray(live))
    refs = [
        task.remote(
            (f.path, f.start, f.duration), strain, seg_ref, live_ref, inf.gate_taper, state, out_dir
        )
        for f in frames
        if f.path in written
    ]
    paths, failures = [], []
    for ref in refs:
        try:
            paths.append(ray.get(ref))
        except Exception as exc:  # a frame that cannot be gated is listed, not fatal
            failures.append(str(exc).splitlines()[0])
    return {"frames": len(paths), "failed": failures, "state_channel": state[0]}


def run_baseline(cfg: Config, frames, hveto_file: Path, live: np.ndarray, out: Path) -> dict:
    """Apply the scan's hveto rounds to the same span; keep the triggers for the ROC."""

    spec = json.loads(Path(hveto_file).read_text())
    rounds = spec["rounds"]
    channels = sorted({r["channel"] for r in rounds})
    base = out / BASELINE
    base.mkdir(parents=True, exist_ok=True)
    aux = {}
    if channels:
        results = collect_triggers(cfg, frames, channels)
        _, ctx = score_channels(cfg, results, channels)
        aux = ctx["aux"]
    segments = apply_rounds(rounds, aux, live)
    write_segments(base / "vetoes.csv", segments)
    triggers = {name: {"time": t.time.tolist(), "snr2": t.snr2.tolist()} for name, t in aux.items()}
    (base / "baseline.json").write_text(
        json.dumps({"rounds": rounds, "live": live.tolist(), "triggers": triggers})
    )
    return {
        "rounds": len(rounds),
        "channels": channels,
        "segments": len(segments),
        "deadtime": duration(segments) / max(duration(live), 1e-12),
    }


def log_images(out: Path, windows: pd.DataFrame, n: int, shape: tuple[int, int]) -> str:
    """TensorBoard: the ``n`` strongest windows (real / generated / residual) and the table."""
    from torch.utils.tensorboard import SummaryWriter

    tb = out / "tensorboard"
    writer = SummaryWriter(str(tb))
    if n and not windows.empty:
        top = windows.nlargest(n, "max_real_snr2").sort_values("gps_start")
        table = read_columns(
            out / SPECTROGRAMS, ["real", "generated", "cleaned_spectrogram"], top.gps_start
        )
        real = tensor_column(table, "real", shape)
        gen = tensor_column(table, "generated", shape)
        cleaned = tensor_column(table, "cleaned_spectrogram", shape)
        starts = table.column("gps_start").to_numpy()
        titles = [f"GPS {t:.1f}" for t in starts]
        columns = [("real", real), ("generated", gen), ("cleaned", cleaned)]
        writer.add_figure("infer/strongest_windows", panel_figure(columns, titles), 0)
    shown = windows.drop(columns=["clusters"], errors="ignore").head(2000)
    text = "```\n" + shown.to_string(index=False) + "\n```" if len(shown) else "no windows"
    writer.add_text("infer/windows", text, 0)
    writer.close()
    return str(tb)


def frequencies(ckpt: Checkpoint) -> np.ndarray:
    """Row frequencies (Hz) of the model's output rows."""

    sig = ckpt.signal
    qt = sig.qtransform
    freqs = QTransform(qt.q, qt.frange, qt.n_freq, qt.time_step, sig.sample_rate).frequencies
    return freqs.cpu().numpy()[model_rows(qt.n_freq, ckpt.sample.crop)]


def write_window_tables(out: Path, strain: str, veto_padding: float):
    """windows.csv/.parquet (one row per window), live.csv (analysed segments),
    vetoes.csv and vetoes.h5 (veto segments from the clusters, padded by ``veto_padding``
    s, inside live time); returns (windows, live, veto segments)."""
    windows = read_windows(out)
    live = live_segments(windows)
    clusters = [json.loads(c) for c in windows["clusters"]]
    segments = veto_segments_from_clusters(clusters, veto_padding, live)
    with atomic_path(out / "windows.csv") as tmp:
        windows.drop(columns=["clusters"]).to_csv(tmp, index=False)
    with atomic_path(out / "windows.parquet") as tmp:
        windows.to_parquet(tmp, index=False)
    write_segments(out / "live.csv", live)
    write_segments(out / "vetoes.csv", segments)
    write_flag(out / "vetoes.h5", f"{strain.split(':')[0]}:GLITCHFLOW-VETO:1", segments, live)
    return windows, live, segments


def _start_infer_run(cfg: Config, out: Path, model, found, uri: str, figures: dict) -> str:
    """The run's MLflow run with its settings and figures; its id."""
    import mlflow

    run_id = start_run(
        uri,
        cfg.train.mlflow.experiment,
        f"infer-{Path(out).name}",
        {"model_uri": model.uri, "infer": cfg.infer.model_dump(mode="json")},
        {
            "stage": "infer",
            "model_version": model.version,
            "frames": str(found.frames[0].path) if found.frames else "",
        },
        artifact_location=default_artifact_location(out),
    )
    client = mlflow.MlflowClient(uri)
    for key, value in figures.items():
        client.log_metric(run_id, key, float(value))
    return run_id


@dataclass(frozen=True)
class InferResult:
    """What ``glitchflow infer`` produced (also OUT/summary.json and the MLflow run's
    ``summary.json``).  Frames and windows are accounted for: ``frames_in`` =
    ``frames_written`` + failed, ``windows_expected`` = ``windows_written`` + skipped
    (each failure and skip with its file and reason).  ``figures``: windows, vetoes,
    livetime (s), deadtime (fraction) and data seconds per wall second; ``gated``: the
    gated frames written; ``baseline``: the hveto baseline's figures (None without
    ``--hveto``); ``window_shape``: (rows, bins) of the spectrograms; ``time_step``: s;
    ``frequencies``: Hz of the rows; ``thresholds``: the operating point used."""

    model: dict
    channels: list[str]
    frames_in: int
    frames_written: int
    frames_failed: list[dict]
    windows_expected: int
    windows_written: int
    windows_skipped: list[dict]
    bad_channels: dict
    figures: dict[str, float]
    gated: dict
    baseline: dict | None
    infer_config: dict
    window_shape: list[int]
    time_step: float
    frequencies: list[float]
    thresholds: dict
    tensorboard: str
    tracking_uri: str
    run_id: str
    wall_seconds: float
    inference_wall_seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def write_products(
    cfg: Config, out: Path, model, found, accounting: FrameAccounting, hveto, wall: float
) -> InferResult:
    """Every product of the run (see the module docstring); returns the result."""
    import time

    import mlflow

    t0 = time.perf_counter()
    ckpt = model.ckpt
    inf = cfg.infer
    strain = ckpt.strain_channel
    windows, live, segments = write_window_tables(out, strain, inf.veto_padding)
    written = set(accounting.frames_written_files)
    gated = (
        write_gated_frames(cfg, found.frames, written, strain, segments, live, out)
        if inf.write_gated_frames
        else {"frames": 0, "failed": [], "state_channel": None}
    )
    baseline = run_baseline(cfg, found.frames, hveto, live, out) if hveto else None
    step = ckpt.time_step
    shape = (ckpt.sample.crop, round(inf.window / step))
    tensorboard = log_images(out, windows, inf.images, shape)
    livetime = duration(live)
    figures = {
        "windows": len(windows),
        "veto_windows": int(windows["veto"].sum()) if len(windows) else 0,
        "cleaned_windows": int(windows["cleaned"].sum()) if len(windows) else 0,
        "veto_segments": len(segments),
        "livetime_s": livetime,
        "deadtime": duration(segments) / livetime if livetime else 0.0,
        "data_seconds_per_wall_second": livetime / max(wall, 1e-9),
    }
    uri = model.tracking_uri or cfg.train.mlflow.tracking_uri or default_tracking_uri(out)
    run_id = _start_infer_run(cfg, out, model, found, uri, figures)
    result = InferResult(
        model=model.describe(),
        channels=list(ckpt.channels),
        frames_in=accounting.frames_in,
        frames_written=accounting.frames_written,
        frames_failed=accounting.frames_failed,
        windows_expected=accounting.windows_expected,
        windows_written=len(windows),
        windows_skipped=accounting.windows_skipped,
        bad_channels=accounting.bad_channels,
        figures=figures,
        gated=gated,
        baseline=baseline,
        infer_config=inf.model_dump(mode="json"),
        window_shape=list(shape),
        time_step=step,
        frequencies=frequencies(ckpt).tolist(),
        thresholds=OperatingPoint.from_thresholds(
            ckpt.thresholds, inf.snr2_threshold, inf.min_area
        ).describe(),
        tensorboard=tensorboard,
        tracking_uri=uri,
        run_id=run_id,
        wall_seconds=round(wall + time.perf_counter() - t0, 2),
        inference_wall_seconds=round(wall, 2),
    )
    mlflow.MlflowClient(uri).log_dict(run_id, result.to_dict(), "summary.json")
    write_json_atomic(out / "summary.json", result.to_dict(), default=float)
    return result
