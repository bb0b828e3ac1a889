"""Distributed preprocessing: frames -> conditioned windows -> Parquet shards + manifest.

Blocks of consecutive frames, runs of up to eight consecutive blocks per task (one Ray
Data row, at least one run per actor); a pool of actors, each holding one
:class:`~glitchflow.signal.conditioner.Conditioner` (on a GPU when its worker has one),
works through a run's blocks in time order, reads each padded with its neighbours
(their boundary frame decoded once for both), conditions it, cuts windows and writes
them itself as ``OUT/shards/windows-<block GPS>-KKKKK.parquet`` (Ray Data's tensor
columns, so ``ray.data.read_parquet`` reads them as before).  The windows never wait in
the object store for a writer, so an actor holds one block's windows however long its
run.  Every frame's fate goes to ``OUT/reports/`` and is summed up in
``OUT/manifest.json``: frames in = frames written + frames failed.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from glitchflow.config import Config, validate_config
from glitchflow.io.atomic import write_json_atomic
from glitchflow.io.channels import resolve_channels
from glitchflow.io.frames import FrameFile, find_frames, make_blocks
from glitchflow.io.manifest import MANIFEST, REPORTS, SHARDS, Manifest, build_manifest
from glitchflow.io.spectrograms import block_stem, write_table_shards
from glitchflow.io.windows import FrameWindowCutter
from glitchflow.pipelines.runtime import (
    check_shared_storage,
    check_stage_resources,
    log_shards_written,
    map_block_runs,
    run_blocks,
)
from glitchflow.pipelines.staging import check_staging, claim_out, staged
from glitchflow.signal.conditioner import Conditioner

log = logging.getLogger(__name__)


class BlockConditioner:
    """Ray Data callable class: one Conditioner per actor, a run of blocks per call."""

    def __init__(
        self,
        config: dict,
        frames: list[tuple[str, float, float]],
        channels: list[str],
        report_dir: str,
        shard_dir: str,
        rows_per_file: int,
        use_gpu: bool,
        threads: int,
    ) -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        cfg = validate_config(config)
        device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
        cond = Conditioner(cfg.signal).to(device)
        files = [FrameFile(start, duration, path) for path, start, duration in frames]
        self.cutter = FrameWindowCutter(
            cond, files, channels, cfg.preprocess.window, cfg.preprocess.stride, device
        )
        self.by_path = {f.path: f for f in files}
        self.report_dir = Path(report_dir)
        self.shard_dir = Path(shard_dir)
        self.rows_per_file = rows_per_file
        import ray

        self.node = ray.get_runtime_context().get_node_id()

    def __call__(self, batch: dict) -> dict:
        """Runs of consecutive blocks (JSON lists of lists of frame paths) -> one row per
        block: its first frame's GPS start, windows written and shard files."""
        counts: dict[str, list] = {"gps_start": [], "windows": [], "files": []}
        for paths in run_blocks(batch):  # in time order: boundary frames decoded once
            check_staging(self.report_dir)  # a killed run's actor stops here
            block = [self.by_path[p] for p in paths]
            rows, reports = self.cutter.process(block)
            table = rows_to_table(rows)
            files = write_table_shards(
                self.shard_dir, block_stem(block[0].start), table, self.rows_per_file
            )
            for report in reports:  # after the windows: a listed frame's windows are on disk
                report.worker = self.node
                name = Path(report.frame).name + ".json"
                (self.report_dir / name).write_text(json.dumps(report.to_dict()))
            counts["gps_start"].append(block[0].start)
            counts["windows"].append(len(rows))
            counts["files"].append(len(files))
        return {key: np.array(values) for key, values in counts.items()}


def rows_to_table(rows: list[dict]):
    """Arrow table of window rows as Ray Data writes one: the spectrograms and their
    per-channel largest SNR^2 as Ray's tensor columns, so ``ray.data.read_parquet`` gives
    ``(rows, channels, frequencies, bins)`` / ``(rows, channels)`` float32 arrays;
    ``None`` for no rows."""
    if not rows:
        return None
    import pyarrow as pa
    from ray.data.extensions import ArrowTensorArray

    def tensor(key: str):
        stacked = np.stack([r[key] for r in rows]).astype(np.float32, copy=False)
        return ArrowTensorArray.from_numpy(stacked)

    def column(key: str, kind, value=lambda v: v):
        return pa.array([value(r[key]) for r in rows], kind)

    return pa.table(
        {
            "gps_start": column("gps_start", pa.float64()),
            "gps_end": column("gps_end", pa.float64()),
            "channels": column("channels", pa.string(), ";".join),
            "spectrogram": tensor("spectrogram"),
            "max_snr2": tensor("max_snr2"),
            "gap": column("gap", pa.bool_()),
            "bad": column("bad", pa.bool_()),
            "bad_channels": column("bad_channels", pa.string()),
            "frame": column("frame", pa.string()),
        }
    )


def run_preprocess(
    cfg: Config,
    frames_dir: str | Path,
    out: str | Path,
    channels_file: str | None = None,
    overwrite: bool = False,
) -> Manifest:
    """Run the preprocessing stage on the current Ray cluster; returns the manifest.

    A previous run's shards, reports and manifest in ``out`` are refused (they would
    mix with this run's) unless ``overwrite`` replaces them."""
    t0 = time.perf_counter()
    found = find_frames(frames_dir)
    frames = found.frames
    channels = resolve_channels(cfg, frames, channels_file)
    blocks = make_blocks(frames, cfg.preprocess.frames_per_block)
    log.info(
        "preprocess: %d frames in %d blocks, %d channels", len(frames), len(blocks), len(channels)
    )
    res = cfg.preprocess.resources
    check_stage_resources(res, "preprocess")
    # checks above fail before OUT is touched
    out = claim_out(out, [SHARDS, REPORTS, MANIFEST], "preprocess", overwrite)
    check_shared_storage(frames_dir, out)
    # written aside and published when complete: a run killed mid-write leaves nothing
    # that a reader or the next run would take for a dataset
    with staged(out, "preprocess", [SHARDS, REPORTS, MANIFEST]) as staging:
        report_dir = staging / REPORTS
        report_dir.mkdir()
        (staging / SHARDS).mkdir()
        if blocks:
            kwargs = {
                "config": cfg.model_dump(mode="json"),
                "frames": [(f.path, f.start, f.duration) for f in frames],
                "channels": channels,
                "report_dir": str(report_dir.resolve()),
                "shard_dir": str((staging / SHARDS).resolve()),
                "rows_per_file": cfg.preprocess.rows_per_file,
                "use_gpu": res.gpus_per_worker > 0,
                "threads": max(1, int(res.cpus_per_worker)),
            }
            written = map_block_runs(blocks, BlockConditioner, kwargs, res)
            log_shards_written("preprocess", written)
        wall = time.perf_counter() - t0
        manifest = build_manifest(cfg, found, channels, report_dir, staging / SHARDS, wall)
        write_json_atomic(staging / MANIFEST, manifest.to_dict())
    return manifest
