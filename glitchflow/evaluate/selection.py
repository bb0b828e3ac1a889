"""Channel selection: per-block trigger extraction and per-channel scores.

:func:`scan_block` conditions strain and a group of auxiliary channels over a
block of frames (with neighbour padding) and returns triggers, live time and
per-window mask overlaps; it is what each distributed task runs.
:func:`score_channels` combines the blocks into the seed's measures (done
right: averaged over windows with strain peaks only), hveto's Poisson
significance and a time-slide false-alarm probability, and applies the
selection rule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from glitchflow.config import Config
from glitchflow.evaluate.coincidence import coincidence_stats, slide_fap
from glitchflow.evaluate.triggers import FIELDS, Triggers, dilate, peak_mask, tile_triggers
from glitchflow.io.frames import FrameFile
from glitchflow.io.span import read_padded
from glitchflow.signal.conditioner import Conditioner


def _pack(t: Triggers) -> dict:
    return {k: getattr(t, k).tolist() for k in FIELDS}


def unpack(d: dict) -> Triggers:
    return Triggers(*(np.asarray(d[k], dtype=float) for k in FIELDS))


def scan_block(
    cfg: Config,
    block: Sequence[FrameFile],
    frames: Sequence[FrameFile],
    channels: Sequence[str],
    with_strain: bool,
) -> dict:
    """Triggers, live time and window overlaps of ``channels`` against strain in ``block``.

    Live time is the part of the block's own span ``[block start, block end)`` that
    could be conditioned, so blocks never count the same time twice.
    """
    scan = cfg.scan
    cond = Conditioner(cfg.scan_signal())
    strain = cfg.signal.strain_channel
    own = (min(f.start for f in block), max(f.end for f in block))
    edge = cond.edge_seconds
    got = read_padded(block, frames, [strain, *channels], own[0] - edge, own[1] + edge, [strain])
    out = {
        "live": [],
        "strain": [],
        "aux": {c: [] for c in channels},
        "windows": {c: [] for c in channels},
        "bad": {c: list(v) for c, v in got.bad.items()},
        "errors": got.errors,
        "frames": [f.path for f in block],
        "with_strain": with_strain,
    }
    dt = cond.time_step
    bins_per_window = max(1, round(scan.window / dt))
    for seg in got.span.segments:
        names = [strain] + [c for c in channels if c in got.channels]
        if seg.duration < 2 * edge + scan.window:
            continue
        arrays = [torch.from_numpy(seg.data[n])[None] for n in names]
        rates = [seg.rates[n] for n in names]
        with torch.no_grad():
            stacked = cond.stack(arrays, rates)
            white = cond.whiten(stacked, rates)
            spec = cond.transform(white, rates)[
                ..., : cond.n_bins(stacked.shape[-1] / cond.sample_rate)
            ]
            tiles = cond.tile_peaks(white, scan.snr2_threshold, rates)[0]
        spec = spec[0].numpy()
        t0 = seg.start + edge
        n_bins = spec.shape[-1]
        times = t0 + (np.arange(n_bins) + 0.5) * dt
        keep = (times >= own[0]) & (times < own[1])
        if not keep.any():
            continue
        spec = spec[..., keep]
        t_first = t0 + np.flatnonzero(keep)[0] * dt
        out["live"].append([t_first, t_first + spec.shape[-1] * dt])
        trig = [
            _in_span(
                tile_triggers(t, seg.start, scan.cluster_window),
                t_first,
                t_first + spec.shape[-1] * dt,
            )
            for t in tiles
        ]
        if with_strain:
            out["strain"].append(_pack(trig[0]))
        per_window = window_masks(spec, scan, bins_per_window)
        for i, name in enumerate(names[1:], start=1):
            out["aux"][name].append(_pack(trig[i]))
            if per_window is not None:
                out["windows"][name].append(mask_overlaps(per_window[0], per_window[i]).tolist())
    return out


def window_masks(spec: np.ndarray, scan, bins_per_window: int) -> np.ndarray | None:
    """Dilated peak masks of ``spec`` (channel, freq, bins) cut into whole windows of
    ``bins_per_window`` bins -> (channel, window, freq * bins) bool; None when the span
    holds no whole window."""
    masks = dilate(peak_mask(spec, scan.snr2_threshold), *scan.mask_dilation)
    n_win = spec.shape[-1] // bins_per_window
    if n_win == 0:
        return None
    shaped = masks[..., : n_win * bins_per_window].reshape(
        len(spec), masks.shape[1], n_win, bins_per_window
    )
    return shaped.transpose(0, 2, 1, 3).reshape(len(spec), n_win, -1)


def mask_overlaps(strain: np.ndarray, aux: np.ndarray) -> np.ndarray:
    """Per window (rows of the (window, pixels) masks): strain pixels, aux pixels, their
    intersection and union -> (window, 4) int."""
    return np.stack(
        [strain.sum(1), aux.sum(1), (strain & aux).sum(1), (strain | aux).sum(1)], axis=1
    )


def trials_corrected(significance: float, trials: int) -> float:
    """``-log10`` of the chance that the best of ``trials`` independent tries reaches a
    Poisson probability ``10**-significance``: ``1 - (1 - p)^trials``."""
    if not math.isfinite(significance):
        return significance
    p = 10.0 ** (-significance)
    corrected = -math.expm1(trials * math.log1p(-min(p, 1 - 1e-16))) if p < 1 else 1.0
    return float(-math.log10(max(corrected, 1e-300)))


def best_coincidence(
    strain: Triggers,
    aux: Triggers,
    thresholds: Sequence[float],
    windows: Sequence[float],
    livetime: float,
) -> dict:
    """The most significant (aux SNR^2 threshold, coincidence window) of one channel, as
    hveto searches them, with the significance corrected for the number of trials.

    Returns :func:`coincidence_stats` at the best point plus ``significance``
    (trials-corrected), ``raw_significance``, ``best_snr2_threshold``,
    ``best_window`` (s) and ``trials``.
    """
    trials = len(thresholds) * len(windows)
    best: dict | None = None
    for thr in thresholds:
        loud = aux.above(thr)
        for window in windows:
            stats = coincidence_stats(
                strain.time, loud.time, window, livetime, strain.duration, loud.duration
            )
            if best is None or stats["significance"] > best["significance"]:
                best = stats | {"best_snr2_threshold": float(thr), "best_window": float(window)}
    best["raw_significance"] = best["significance"]
    best["significance"] = trials_corrected(best["significance"], trials)
    best["trials"] = trials
    return best


def _in_span(triggers: Triggers, start: float, end: float) -> Triggers:
    return triggers.take((triggers.time >= start) & (triggers.time < end))


def score_channels(
    cfg: Config, results: list[dict], channels: Sequence[str]
) -> tuple[list[dict], dict]:
    """Per-channel scores and selection from :func:`scan_block` results.

    Returns ``(rows, context)``: one row per channel (ratio, IoU, coincidences,
    significance, FAP, use percentage, selected, reason) and the pooled strain
    triggers, auxiliary triggers and live segments for hveto.
    """
    scan = cfg.scan
    strain_tasks = [r for r in results if r["with_strain"]]
    live = np.array(sorted(seg for r in strain_tasks for seg in r["live"])).reshape(-1, 2)
    strain = Triggers.concat([unpack(t) for r in strain_tasks for t in r["strain"]])
    livetime = float(np.sum(live[:, 1] - live[:, 0])) if len(live) else 0.0
    aux: dict[str, Triggers] = {}
    bad: dict[str, list] = {}
    for r in results:
        for name, (path, reason) in r["bad"].items():
            bad.setdefault(name, []).append(f"{path}: {reason}")
    rows = []
    for name in channels:
        parts = [unpack(t) for r in results for t in r["aux"].get(name, [])]
        trig = Triggers.concat(parts)
        aux[name] = trig
        windows = np.array(
            [w for r in results for chunk in r["windows"].get(name, []) for w in chunk]
        ).reshape(-1, 4)
        with_strain = windows[windows[:, 0] > 0]
        ratio = float(np.mean(with_strain[:, 2] / with_strain[:, 0])) if len(with_strain) else 0.0
        iou = float(np.mean(with_strain[:, 2] / with_strain[:, 3])) if len(with_strain) else 0.0
        best = best_coincidence(
            strain, trig, scan.hveto.snr2_thresholds, scan.hveto.windows, livetime
        )
        loud = trig.above(best["best_snr2_threshold"])
        fap, _ = (
            slide_fap(
                strain.time,
                loud.time,
                best["best_window"],
                live,
                scan.time_slides,
                scan.slide_step,
                best["coincidences"],
                strain.duration,
                loud.duration,
            )
            if len(live) and len(trig)
            else (1.0, None)
        )
        stats = best
        row = {
            "channel": name,
            "n_windows_with_strain_peaks": len(with_strain),
            "ratio": ratio,
            "iou": iou,
            **stats,
            "time_slide_fap": fap,
            "bad_data": "; ".join(bad.get(name, [])),
        }
        row["selected"], row["reason"] = _select(scan, row, len(windows) > 0)
        rows.append(row)
    rows.sort(key=lambda r: -r["significance"] if math.isfinite(r["significance"]) else -1e300)
    return rows, {"strain": strain, "aux": aux, "live": live, "livetime": livetime}


def _select(scan, row: dict, analysed: bool) -> tuple[bool, str]:
    if not analysed:
        return False, "not analysed: " + (row["bad_data"] or "no usable data")
    if row["channel"] in scan.unsafe_channels:
        return False, "unsafe (strain-derived)"
    if scan.selection == "seed":
        ok = row["ratio"] > scan.seed_ratio and row["iou"] > scan.seed_iou
        return ok, f"seed rule: ratio > {scan.seed_ratio} and IoU > {scan.seed_iou}"
    ok = row["significance"] >= scan.min_significance and row["time_slide_fap"] <= scan.max_fap
    return ok, f"significance >= {scan.min_significance} and time-slide FAP <= {scan.max_fap}"


def seed_rule(rows: list[dict], ratio: float, iou: float, unsafe: Sequence[str]) -> list[str]:
    """Channels the seed's thresholds would select (for comparison)."""
    return [
        r["channel"]
        for r in rows
        if r["ratio"] > ratio and r["iou"] > iou and r["channel"] not in unsafe
    ]
