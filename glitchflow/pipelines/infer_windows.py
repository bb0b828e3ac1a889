"""The actor of ``glitchflow infer``: blocks of frames -> windows -> decisions (Ray Data).

An actor is given runs of consecutive blocks and works through each in time order, so
that a frame on a block boundary, padding for one block and data of the next, is
decoded once (:class:`~glitchflow.io.frame_memory.FrameMemory`, in the cutter).

Each block's windows are written by the actor that made them, to
``spectrograms/windows-<block GPS>-KKKKK.parquet`` in the run's staging directory
(:func:`~glitchflow.io.spectrograms.write_shards`: atomic files named by the block, so a
retried block replaces its own); the dataset carries only a row of counts per block.
Writing in the actor, instead of Ray Data's ``write_parquet`` after it, saves the
spectrograms' trip through the object store and the writer tasks' processes (on 2 CPUs:
1024 s of data in 21 s instead of 31).

Kept apart from the driver's module (products, MLflow, TensorBoard) so that an
actor process imports only what it runs: the Conditioner, the window cutter
and the :class:`~glitchflow.models.inference.Predictor` (about 1 s less
start-up per actor on 2 CPUs).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from glitchflow.config import InferConfig
from glitchflow.config.base import validate_model
from glitchflow.io.frames import FrameFile
from glitchflow.io.spectrograms import block_stem, write_shards
from glitchflow.io.windows import FrameWindowCutter, drop_bad_windows
from glitchflow.models.checkpoint import Checkpoint
from glitchflow.models.inference import Predictor
from glitchflow.pipelines.runtime import run_blocks
from glitchflow.pipelines.staging import check_staging
from glitchflow.signal.conditioner import Conditioner

#: scalar columns of the per-window spectrogram shards (read back by the products)
SCALAR_COLUMNS = [
    "gps_start",
    "gps_end",
    "frame",
    "veto",
    "cleaned",
    "max_generated_snr2",
    "max_real_snr2",
    "max_residual_snr2",
    "residual_area_pixels",
    "residual_area_hz_s",
    "n_clusters",
    "cluster_times",
    "clusters",
]


class WindowPredictor:
    """Ray Data callable class: frames -> windows -> generated spectrograms and decisions."""

    def __init__(
        self,
        ckpt: Checkpoint,
        infer: dict,
        frames: list[tuple[str, float, float]],
        report_dir: str,
        shard_dir: str,
        use_gpu: bool,
        threads: int,
    ) -> None:
        import ray
        import torch

        torch.set_num_threads(max(1, threads))
        device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
        self.infer = validate_model(InferConfig, infer, "infer")
        self.cond = Conditioner(ckpt.signal).to(device)
        inf = self.infer
        self.predictor = Predictor(
            ckpt, device, inf.crop_hop, inf.snr2_threshold, inf.min_area, tiling=inf.tiling
        )
        files = [FrameFile(start, duration, path) for path, start, duration in frames]
        self.by_path = {f.path: f for f in files}
        self.cutter = FrameWindowCutter(
            self.cond, files, self.predictor.channels, self.infer.window, self.infer.stride, device
        )
        self.report_dir = Path(report_dir)
        self.shard_dir = Path(shard_dir)
        self.node = ray.get_runtime_context().get_node_id()

    def __call__(self, batch: dict) -> dict:
        """Runs of consecutive blocks (JSON lists of lists of frame paths) -> one row per
        block: its first frame's GPS start, windows written and shard files."""
        counts: dict[str, list] = {"gps_start": [], "windows": [], "files": []}
        for paths in run_blocks(batch):  # in time order: boundary frames decoded once
            check_staging(self.report_dir)  # a killed run's actor stops here
            block = [self.by_path[p] for p in paths]
            counts["gps_start"].append(block[0].start)
            windows, files = self._block(block)
            counts["windows"].append(windows)
            counts["files"].append(files)
        return {key: np.array(values) for key, values in counts.items()}

    def _block(self, block: list[FrameFile]) -> tuple[int, int]:
        """Windows of one block -> its shard files and frame reports; (windows, files)."""
        windows, reports = self.cutter.process(block)
        rows = self._decide(drop_bad_windows(windows, reports))
        columns = rows_to_columns(rows, self.predictor.crop, self.infer.window, self.cond.time_step)
        stem = block_stem(block[0].start)
        files = write_shards(self.shard_dir, stem, columns, self.infer.rows_per_file)
        for report in reports:  # after the windows: a listed frame's windows are on disk
            report.worker = self.node
            name = Path(report.frame).name + ".json"
            (self.report_dir / name).write_text(json.dumps(report.to_dict()))
        return len(rows), len(files)

    def _decide(self, windows: list[dict]) -> list[dict]:
        import torch

        if not windows:
            return []
        spec = torch.from_numpy(np.stack([w["spectrogram"] for w in windows]))
        starts = [w["gps_start"] for w in windows]
        out = self.predictor.decide_windows(
            spec, starts, self.cond.time_step, self.cond.frequencies
        )
        rows = []
        for k, (w, d) in enumerate(zip(windows, out.decisions)):
            clusters = [vars(c) for c in d.clusters]
            rows.append(
                {
                    **{key: getattr(d, key) for key in SCALAR_COLUMNS if hasattr(d, key)},
                    "gps_start": w["gps_start"],
                    "gps_end": w["gps_end"],
                    "frame": w["frame"],
                    "n_clusters": len(clusters),
                    "cluster_times": ";".join(f"{c['gps_time']:.4f}" for c in clusters),
                    "clusters": json.dumps(clusters),
                    "real": out.real[k].numpy(),
                    "generated": out.generated[k].numpy(),
                    "cleaned_spectrogram": out.cleaned[k].numpy(),
                }
            )
        return rows


def rows_to_columns(rows: list[dict], rows_f: int, window: float, step: float) -> dict:
    """Numpy column batch of the shards' columns (zero rows keep the shapes)."""
    shape = (rows_f, round(window / step))
    columns: dict = {}
    for key in SCALAR_COLUMNS:
        values = [r[key] for r in rows]
        if key in ("frame", "cluster_times", "clusters"):
            columns[key] = np.array(values, dtype=object)
        elif key in ("veto", "cleaned"):
            columns[key] = np.array(values, dtype=bool)
        elif key in ("residual_area_pixels", "n_clusters"):
            columns[key] = np.array(values, dtype=np.int64)
        else:
            columns[key] = np.array(values, dtype=np.float64)
    for key in ("real", "generated", "cleaned_spectrogram"):
        columns[key] = (
            np.stack([r[key] for r in rows]).astype(np.float32)
            if rows
            else np.zeros((0, *shape), dtype=np.float32)
        )
    return columns
