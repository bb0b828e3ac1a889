"""From preprocessing windows to training samples: GPS-block split, crops, normalisation.

* Split: the span is cut into GPS blocks of ``split_block`` seconds, blocks are
  shuffled with the seed and dealt to train / validation / test by the
  configured fractions (at least one block each when there are three).  A
  window is in the split of its block; a window that straddles blocks of two
  different splits is dropped, so no glitch is in two splits and background
  comes from the split's own time.
* Crops: each window (channel, freq, time) gives square crops along time; a
  crop is kept once even when windows overlap (the crop's own GPS start is its
  key).  Values are clamped to ``[0, clamp]``.  A crop is a "glitch" when its
  strain maximum reaches ``glitch_threshold`` SNR^2.  In the training split,
  glitch crops are also cut at ``crop / augment_shifts`` bin offsets between the
  aligned ones (the same glitch at other places in the crop: a U-Net is not
  translation invariant at its borders, and a rare family gets several samples
  per glitch); validation and test keep the aligned crops only.
* Normalisation: each channel is divided by the mean, over training glitch
  crops, of the crop maximum; the constants travel in the checkpoint so that
  outputs can be restored to SNR^2.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from glitchflow.models.geometry import model_rows

#: torch dtypes of the training-sample columns (GPS times stay float64)
COLUMN_DTYPES = {
    "x": torch.float32,
    "y": torch.float32,
    "gps_start": torch.float64,
    "is_glitch": torch.bool,
}

SPLITS = ("train", "val", "test")


def assign_blocks(
    gps_starts: np.ndarray, block: float, fractions: tuple[float, float, float], seed: int
) -> dict[int, str]:
    """Seeded assignment of GPS block indices to splits."""
    blocks = np.unique(np.floor(np.asarray(gps_starts) / block).astype(np.int64))
    rng = np.random.default_rng(seed)
    order = blocks[rng.permutation(len(blocks))]
    n = len(order)
    counts = [math.floor(f * n) for f in fractions]
    if n >= 3:
        for k in range(3):
            if fractions[k] > 0 and counts[k] == 0:
                counts[k] = 1
    counts[0] = n - counts[1] - counts[2]
    labels = ["train"] * counts[0] + ["val"] * counts[1] + ["test"] * counts[2]
    return {int(b): lab for b, lab in zip(order, labels)}


def window_split(gps_start: float, gps_end: float, block: float, assignment: dict[int, str]):
    """Split of a window, or None when it straddles blocks of different splits."""
    first = assignment.get(math.floor(gps_start / block))
    last = assignment.get(math.floor((gps_end - 1e-6) / block))
    return first if first == last else None


def crop_window(
    spec: np.ndarray,
    gps_start: float,
    time_step: float,
    crop: int,
    clamp: float,
    keep_from: float,
    keep_until: float,
    hop: int | None = None,
) -> list[dict]:
    """Square crops of one window (channel, freq, time) whose start is in
    ``[keep_from, keep_until)`` GPS s, every ``hop`` bins (default: ``crop``, side by
    side).  Channel 0 is strain (the target); ``aligned`` marks crops at multiples of
    ``crop``."""
    out = []
    n_freq = spec.shape[1]
    rows = model_rows(n_freq, crop)
    hop = hop or crop
    for b in range(0, spec.shape[-1] - crop + 1, hop):
        t = gps_start + b * time_step
        if not keep_from - 1e-6 <= t < keep_until - 1e-6:
            continue
        tile = np.clip(spec[:, rows, b : b + crop], 0.0, clamp)
        out.append(
            {
                "gps_start": t,
                "x": tile[1:].astype(np.float32),
                "y": tile[:1].astype(np.float32),
                "aligned": b % crop == 0,
            }
        )
    return out


def crop_rows(
    rows: dict,
    time_step: float,
    crop: int,
    clamp: float,
    stride: float,
    window_starts: set[float],
    block: float,
    assignment: dict[int, str],
    glitch_threshold: float,
    augment_shifts: int = 1,
) -> dict:
    """Crops of a batch of window rows (numpy columns), each crop kept once.

    A window keeps the crops that start before the next window on the stride grid
    does; the last window of a run keeps all of its crops.  Training windows add
    the shifted glitch crops (``augment_shifts`` per crop length, module docstring).
    """
    out: dict[str, list] = {"gps_start": [], "x": [], "y": [], "split": [], "is_glitch": []}
    for k in range(len(rows["gps_start"])):
        if bool(rows["bad"][k]):
            continue
        start, end = float(rows["gps_start"][k]), float(rows["gps_end"][k])
        split = window_split(start, end, block, assignment)
        if split is None:
            continue
        has_next = round(start + stride, 6) in window_starts
        keep_until = start + stride if has_next else end
        spec = np.asarray(rows["spectrogram"][k])
        hop = max(1, crop // augment_shifts) if split == "train" else crop
        for item in crop_window(spec, start, time_step, crop, clamp, start, keep_until, hop):
            glitch = bool(item["y"].max() >= glitch_threshold)
            if not (item["aligned"] or glitch):
                continue
            out["gps_start"].append(item["gps_start"])
            out["x"].append(item["x"])
            out["y"].append(item["y"])
            out["split"].append(split)
            out["is_glitch"].append(glitch)
    if not out["x"]:
        return {}
    return {
        "gps_start": np.array(out["gps_start"]),
        "x": np.stack(out["x"]),
        "y": np.stack(out["y"]),
        "split": np.array(out["split"], dtype=object),
        "is_glitch": np.array(out["is_glitch"]),
    }


def keep_background(gps_start: np.ndarray, probability: float, seed: int) -> np.ndarray:
    """Deterministic per-crop subsampling of background crops (hash of GPS time and seed)."""
    keys = np.round(np.asarray(gps_start) * 1000).astype(np.int64)
    u = np.array([np.random.default_rng([seed, int(k) & 0x7FFFFFFF]).uniform() for k in keys])
    return u < probability


def normalisation(
    x_max: np.ndarray, y_max: np.ndarray, transform: str = "linear"
) -> dict[str, list[float]]:
    """Per-channel divisors: mean crop maximum over training glitch crops, after the
    ``transform`` ("log1p" or "linear") that the model's scaling applies first.

    ``x_max`` (n, n_aux), ``y_max`` (n,); zero means (dead channels) become 1.
    """
    if transform == "log1p":
        x_max, y_max = np.log1p(x_max), np.log1p(y_max)
    aux = np.mean(x_max, axis=0) if len(x_max) else np.ones(x_max.shape[1])
    strain = float(np.mean(y_max)) if len(y_max) else 1.0
    aux = np.where(aux > 0, aux, 1.0)
    return {
        "aux": [float(a) for a in aux],
        "strain": strain if strain > 0 else 1.0,
        "transform": transform,
    }


def leading_channel(x: np.ndarray) -> np.ndarray:
    """Index of the auxiliary channel with the loudest pixel of each crop: ``x``
    ``(n, n_aux, rows, bins)`` SNR^2 -> ``(n,)`` ints (the witness a glitch crop is led by)."""
    x = np.asarray(x)
    return x.reshape(len(x), x.shape[1], -1).max(axis=2).argmax(axis=1)


def balance_repeats(leaders: np.ndarray, n_aux: int, max_repeat: int) -> np.ndarray:
    """How many times to use a training glitch crop led by each auxiliary channel so that
    every channel leads about as many crops as the most frequent leader, at most
    ``max_repeat`` times: ``leaders`` (n,) channel indices -> ``(n_aux,)`` ints >= 1.

    A witness family with few glitches (a magnetometer's 5 against the DARM witness's
    20) is otherwise outvoted: the network learns to ignore that channel."""
    counts = np.bincount(np.asarray(leaders, dtype=int), minlength=n_aux)
    if max_repeat <= 1 or counts.max() == 0:
        return np.ones(n_aux, dtype=int)
    ratio = counts.max() / np.maximum(counts, 1)
    return np.clip(np.round(ratio), 1, max_repeat).astype(int)
