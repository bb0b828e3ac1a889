"""Ray Data preparation of training samples from the preprocessing shards.

Reads ``DATA/shards`` and ``DATA/manifest.json``, splits by GPS blocks, crops,
subsamples background crops in the training split, and computes the
normalisation constants on the training split only.  Returns materialised
datasets for ``train`` / ``val`` / ``test`` (small: crops of selected channels).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from glitchflow.config import Config
from glitchflow.io.dataset import (
    assign_blocks,
    balance_repeats,
    crop_rows,
    keep_background,
    leading_channel,
    normalisation,
)
from glitchflow.io.manifest import Manifest, load_manifest

log = logging.getLogger(__name__)


@dataclass
class TrainingData:
    datasets: dict  # split -> ray.data.Dataset with columns gps_start, x, y, is_glitch
    normalisation: dict
    channels: list[str]
    counts: dict
    manifest: Manifest


def split_counts(crops, data_dir, tr) -> dict:
    """Glitch and background crops per split; refuses a split without crops and a
    training split without a glitch crop (naming the setting to change)."""
    meta = crops.select_columns(["gps_start", "split", "is_glitch"]).to_pandas()
    counts = {
        split: {
            "glitch": int(((meta.split == split) & meta.is_glitch).sum()),
            "background": int(((meta.split == split) & ~meta.is_glitch).sum()),
        }
        for split in ("train", "val", "test")
    }
    empty = [split for split, c in counts.items() if c["glitch"] + c["background"] == 0]
    if empty:
        raise ValueError(
            f"{data_dir}: no crop falls in the {' and '.join(empty)} split(s) (GPS blocks of "
            f"train.split_block={tr.split_block} s); preprocess a longer span or use shorter "
            "blocks: a model without validation and test data is not trained or registered"
        )
    if counts["train"]["glitch"] == 0:
        raise ValueError(
            f"no training crop reaches train.glitch_threshold={tr.glitch_threshold} SNR^2"
        )
    return counts


def training_normalisation(train, transform: str) -> dict:
    """The normalisation constants from the training split's glitch crops (per-crop
    maxima of each auxiliary channel and of strain)."""
    maxima = train.map_batches(
        lambda b: {
            "x_max": b["x"].reshape(len(b["x"]), b["x"].shape[1], -1).max(-1),
            "y_max": b["y"].reshape(len(b["y"]), -1).max(-1),
            "is_glitch": b["is_glitch"],
        },
        batch_format="numpy",
    ).to_pandas()
    glitchy = maxima[maxima.is_glitch]
    return normalisation(np.stack(glitchy.x_max.to_list()), glitchy.y_max.to_numpy(), transform)


def witness_repeats(crops, n_aux: int, max_repeat: int) -> np.ndarray:
    """``train.balance_witnesses``: per auxiliary channel, how many times a training glitch
    crop it leads is used (:func:`~glitchflow.io.dataset.balance_repeats`)."""
    if max_repeat <= 1:
        return np.ones(n_aux, dtype=int)

    def leaders(batch: dict) -> dict:
        keep = (batch["split"] == "train") & batch["is_glitch"]
        if not keep.any():
            return {"leader": np.zeros(0, dtype=np.int64)}
        return {"leader": leading_channel(batch["x"][keep]).astype(np.int64)}

    led = crops.map_batches(leaders, batch_format="numpy").to_pandas()["leader"].to_numpy()
    repeats = balance_repeats(led, n_aux, max_repeat)
    log.info(
        "training glitch crops led by each witness %s, used %s times each",
        np.bincount(led.astype(int), minlength=n_aux).tolist(),
        repeats.tolist(),
    )
    return repeats


def prepare_training_data(cfg: Config, data_dir: str | Path) -> TrainingData:
    import ray

    tr = cfg.train
    manifest = load_manifest(data_dir)
    channels = manifest.channels
    if len(channels) < 2:
        raise ValueError(f"{data_dir}: the dataset has no auxiliary channel to learn from")
    shards = str(manifest.shard_dir(data_dir))
    ds = ray.data.read_parquet(shards)
    # blocks in file order at every step: the same data and seed give the same batches
    ds.context.execution_options.preserve_order = True
    starts = ds.select_columns(["gps_start"]).to_pandas()["gps_start"].to_numpy()
    if len(starts) == 0:
        raise ValueError(f"{data_dir}: the dataset has no windows")
    assignment = assign_blocks(starts, tr.split_block, tr.split_fractions, cfg.seed)
    time_step = manifest.stage_config().signal.qtransform.time_step
    crops = ds.map_batches(
        crop_rows,
        fn_kwargs={
            "time_step": time_step,
            "crop": tr.crop,
            "clamp": tr.clamp,
            "stride": manifest.stride_seconds,
            "window_starts": {round(float(s), 6) for s in starts},
            "block": tr.split_block,
            "assignment": assignment,
            "glitch_threshold": tr.glitch_threshold,
            "augment_shifts": tr.augment_shifts,
        },
        batch_format="numpy",
        batch_size=8,
    ).materialize()
    counts = split_counts(crops, data_dir, tr)
    n_glitch, n_bg = counts["train"]["glitch"], counts["train"]["background"]
    p_bg = min(1.0, tr.background_fraction * n_glitch / max(n_bg, 1))
    seed = cfg.seed
    repeats = witness_repeats(crops, len(channels) - 1, tr.balance_witnesses)
    counts["train_repeats"] = repeats.tolist()

    def select(batch: dict, split: str) -> dict:
        mask = batch["split"] == split
        if split == "train":
            mask &= batch["is_glitch"] | keep_background(batch["gps_start"], p_bg, seed)
        out = {k: v[mask] for k, v in batch.items() if k != "split"}
        if split == "train" and len(out["x"]) and repeats.max() > 1:
            times = np.where(out["is_glitch"], repeats[leading_channel(out["x"])], 1)
            out = {k: np.repeat(v, times, axis=0) for k, v in out.items()}
        return out

    datasets = {
        split: crops.map_batches(
            select, fn_kwargs={"split": split}, batch_format="numpy"
        ).materialize()
        for split in ("train", "val", "test")
    }
    for dataset in datasets.values():
        # iterated every epoch inside the training workers: one progress bar per epoch
        # per worker would flood the driver's log
        dataset.context.enable_progress_bars = False
    norm = training_normalisation(datasets["train"], tr.transform)
    counts["train_used"] = int(datasets["train"].count())
    log.info("training samples: %s; normalisation %s", counts, norm)
    return TrainingData(datasets, norm, channels, counts, manifest)
