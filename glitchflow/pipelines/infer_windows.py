"""The actor of ``glitchflow infer``: blocks of frames -> windows -> decisions (Ray Data).

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
from glitchflow.io.windows import FrameWindowCutter, drop_bad_windows
from glitchflow.models.checkpoint import Checkpoint
from glitchflow.models.inference import Predictor
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
        self.node = ray.get_runtime_context().get_node_id()

    def __call__(self, batch: dict) -> dict:
        rows: list[dict] = []
        for paths in batch["paths"]:
            block = [self.by_path[p] for p in json.loads(paths)]
            windows, reports = self.cutter.process(block)
            good = drop_bad_windows(windows, reports)
            rows.extend(self._decide(good))
            for report in reports:
                report.worker = self.node
                name = Path(report.frame).name + ".json"
                (self.report_dir / name).write_text(json.dumps(report.to_dict()))
        return rows_to_columns(rows, self.predictor.crop, self.infer.window, self.cond.time_step)

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
    """Numpy column batch; zero rows keep the schema (so Ray Data can skip empty blocks)."""
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
