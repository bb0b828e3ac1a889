"""``glitchflow infer``: a trained model over any GPS span of frames (Ray Data).

Blocks of consecutive frames stream through actors that each hold one
Conditioner (built from the checkpoint's signal config: the training one) and
one :class:`~glitchflow.models.inference.Predictor`.  Every window gets the
generated strain spectrogram, the residual and the veto / denoise decision;
the actors write the spectrograms (``spectrograms/*.parquet``) and the frame
reports as they are made, into the run's staging directory, which is published
into OUT when they are done (:mod:`glitchflow.pipelines.staging`: the actors of a
killed run cannot add to the next run's products); the driver only reads back the
scalar columns, so memory stays bounded.

Products in OUT (see :func:`write_products` in
:mod:`glitchflow.pipelines.infer_products`): ``windows.csv``/``.parquet``,
``vetoes.csv`` and ``vetoes.h5`` (a gwpy DataQualityFlag), ``live.csv``,
gated strain frames under ``gated/``, the hveto baseline on the same span,
TensorBoard images, an MLflow run and ``summary.json``.  Every frame is
written or listed as failed; every window is written or listed as skipped.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

from glitchflow.config import Config
from glitchflow.io.frames import find_frames, make_blocks
from glitchflow.io.manifest import frame_accounting
from glitchflow.pipelines.infer_products import SPECTROGRAMS, InferResult, write_products
from glitchflow.pipelines.infer_windows import WindowPredictor
from glitchflow.pipelines.runtime import (
    check_shared_storage,
    check_stage_resources,
    log_shards_written,
    map_block_runs,
)
from glitchflow.pipelines.staging import claim_out, staged
from glitchflow.tracking.model_store import resolve_model

log = logging.getLogger(__name__)

REPORTS = "reports"
#: what a run writes under OUT (a re-run must not mix with them)
INFER_PRODUCTS = [
    SPECTROGRAMS,
    REPORTS,
    "gated",
    "baseline",
    "tensorboard",
    "summary.json",
    "windows.csv",
    "windows.parquet",
    "vetoes.csv",
    "vetoes.h5",
    "live.csv",
]


def check_grid(value: float, step: float, key: str) -> None:
    if abs(value / step - round(value / step)) > 1e-6:
        raise ValueError(f"{key} ({value} s) must be a multiple of the model's bin ({step} s)")


def run_inference(
    cfg: Config,
    frames_dir: str | Path,
    model_uri: str,
    out: str | Path,
    tracking_uri: str | None = None,
    hveto: str | Path | None = None,
    overwrite: bool = False,
) -> InferResult:
    """Infer over every frame in ``frames_dir``; write the products; return the summary.

    A previous run's products in ``out`` are refused (its spectrogram shards would mix
    with this run's) unless ``overwrite`` replaces them."""
    t0 = time.perf_counter()
    inf = cfg.infer
    model = resolve_model(model_uri, tracking_uri)  # fails fast, before OUT is touched
    ckpt = model.ckpt
    step = ckpt.time_step
    check_grid(inf.window, step, "infer.window")
    check_grid(inf.stride, step, "infer.stride")
    if inf.stride > inf.window:
        raise ValueError(f"infer.stride ({inf.stride} s) exceeds infer.window ({inf.window} s)")
    crop = ckpt.sample.crop
    if round(inf.window / step) < crop:
        raise ValueError(
            f"infer.window ({inf.window} s) is shorter than the model's crop "
            f"({crop} bins = {crop * step} s)"
        )
    found = find_frames(frames_dir)
    blocks = make_blocks(found.frames, inf.frames_per_block)
    res = inf.resources
    check_stage_resources(res, "infer")
    out = claim_out(out, INFER_PRODUCTS, "infer", overwrite)
    check_shared_storage(frames_dir, out)
    log.info(
        "infer: %s (%s) on %d frames in %d blocks, %d channels",
        model.uri,
        ckpt.model.name,
        len(found.frames),
        len(blocks),
        len(ckpt.channels),
    )
    # the actors write into a staging directory published when they are done: the
    # actors of a killed run cannot add to the next run's products
    with staged(out, "infer", [SPECTROGRAMS, REPORTS]) as staging:
        (staging / REPORTS).mkdir()
        if blocks:
            kwargs = {
                "ckpt": ckpt,
                "infer": inf.model_dump(mode="json"),
                "frames": [(f.path, f.start, f.duration) for f in found.frames],
                "report_dir": str(staging / REPORTS),
                "shard_dir": str(staging / SPECTROGRAMS),
                "use_gpu": res.gpus_per_worker > 0,
                "threads": max(1, math.floor(res.cpus_per_worker)),
            }
            log_shards_written("infer", map_block_runs(blocks, WindowPredictor, kwargs, res))
    accounting = frame_accounting(found, out / REPORTS)
    return write_products(cfg, out, model, found, accounting, hveto, time.perf_counter() - t0)
