"""Veto and denoise figures against the twin's truth catalogue.

Truth glitches count when their ``gps_peak`` lies in the analysed (live)
segments.  Groups, at a strain SNR threshold ``rho`` (optimal SNR):

* *witnessed*: ``strain_snr >= rho`` and at least one witness channel;
* *unwitnessed*: ``strain_snr >= rho`` and no witness (nothing can veto them
  but chance: their efficiency should be close to the deadtime);
* *overall*: every glitch with ``strain_snr >= rho``.

A glitch is vetoed when its ``gps_peak`` is inside a veto segment; its
*coverage* is the share of its extent ``gps_peak +- duration / 2`` that the
veto removes (a veto that only brackets the peak of a 2-s scattered-light arch
leaves most of the arch in the data).
Deadtime is vetoed time over live time; use percentage is the fraction of
veto segments that contain at least one glitch reaching strain.  Every figure
also holds ``per_family``: efficiency per truth family over the glitches above
``rho`` (witnessed families and ``unwitnessed``).

Efficiency at a given deadtime comes from a ROC curve made monotone (a veto can
always spend more deadtime for no gain), anchored at (0, 0) and interpolated
linearly in deadtime (both achievable in expectation: a random share of the
segments of a point keeps that share of its deadtime and of its efficiency);
past the curve's largest deadtime it keeps that point's efficiency.

The **perfect-model reference** is the veto a model that reproduced every witnessed
glitch's strain spectrogram exactly would make: the clusters of the *real* strain
spectrogram (same thresholds, same minimum area, same padding) that overlap a witnessed
glitch reaching strain.  Its ROC says what a learned veto whose segments are its
clusters' extents reaches on this span with a perfect model (not a strict bound: a model
whose clusters are tighter than the real glitch's can do better at small deadtimes); the
learned veto's distance from it is the model's to close, its distance from another
method is the segment definition's (hveto brackets a trigger's peak, a cluster covers
the glitch).

The **ideal bound** is the fraction of witnessed glitches whose loudest witness
would make a trigger in its own channel: optimal witness SNR ``rho_w`` with a
matched tile of median-normalised energy ``(1 + rho_w^2 / 2) / ln 2`` at or
above the scan's trigger threshold.  No veto built on those triggers can do
better.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from glitchflow.evaluate.hveto import apply_rounds, duration, inside, intersect, merge_segments
from glitchflow.evaluate.triggers import Triggers

GROUPS = ("witnessed", "unwitnessed", "overall")


def glitch_groups(truth: pd.DataFrame, live: np.ndarray, strain_snr: float) -> dict:
    """Truth rows in the live time, split into the groups above (DataFrames)."""
    in_live = inside(truth["gps_peak"].to_numpy(dtype=float), live)
    table = truth[in_live]
    loud = table[table["strain_snr"] >= strain_snr]
    witnessed = loud["witnesses"].astype(str).str.len() > 0
    return {
        "witnessed": loud[witnessed],
        "unwitnessed": loud[~witnessed],
        "overall": loud,
        "in_strain": table[table["strain_snr"] > 0],
    }


def per_family(table: pd.DataFrame, vetoed: np.ndarray) -> dict:
    """``{family: {"glitches", "vetoed", "efficiency"}}`` of truth rows and their vetoed mask."""
    out = {}
    families = table["family"].to_numpy()
    for family in sorted(set(families)):
        mask = families == family
        n = int(mask.sum())
        hit = int(vetoed[mask].sum())
        out[str(family)] = {"glitches": n, "vetoed": hit, "efficiency": hit / n}
    return out


def coverage(table: pd.DataFrame, segments: np.ndarray) -> np.ndarray:
    """Share of each glitch's extent ``gps_peak +- duration / 2`` inside ``segments``."""
    peak = table["gps_peak"].to_numpy(dtype=float)
    half = np.maximum(table["duration"].to_numpy(dtype=float), 1e-3) / 2
    return np.array(
        [
            duration(intersect(segments, np.array([[p - h, p + h]]))) / (2 * h)
            for p, h in zip(peak, half)
        ]
    )


def veto_figures(groups: dict, segments: np.ndarray, live: np.ndarray) -> dict:
    """Efficiency per group and per family, deadtime, efficiency/deadtime, use percentage."""
    segments = intersect(merge_segments(np.asarray(segments).reshape(-1, 2)), live)
    livetime = duration(live)
    deadtime = duration(segments) / livetime if livetime else 0.0
    out: dict = {"deadtime": deadtime, "segments": len(segments)}
    for name in GROUPS:
        times = groups[name]["gps_peak"].to_numpy(dtype=float)
        vetoed = inside(times, segments)
        out[f"{name}_glitches"] = len(times)
        out[f"{name}_vetoed"] = int(vetoed.sum())
        out[f"{name}_efficiency"] = float(vetoed.mean()) if len(times) else float("nan")
        cover = coverage(groups[name], segments)
        out[f"{name}_coverage"] = float(cover.mean()) if len(times) else float("nan")
        if name == "overall":
            out["per_family"] = per_family(groups[name], vetoed)
    eff = out["witnessed_efficiency"]
    out["efficiency_over_deadtime"] = (
        eff / deadtime if deadtime > 0 and np.isfinite(eff) else float("inf")
    )
    strain_times = np.sort(groups["in_strain"]["gps_peak"].to_numpy(dtype=float))
    if len(segments):
        lo = np.searchsorted(strain_times, segments[:, 0], side="left")
        hi = np.searchsorted(strain_times, segments[:, 1], side="left")
        out["use_percentage"] = float(100.0 * np.mean(hi > lo))
    else:
        out["use_percentage"] = float("nan")
    return out


def baseline_roc(
    baseline: dict, groups: dict, live: np.ndarray, thresholds: list[float]
) -> list[dict]:
    """hveto rounds re-applied with every round's SNR^2 threshold set to each of
    ``thresholds`` (the triggers only exist above the scan's own threshold)."""

    aux = {
        name: Triggers(np.asarray(t["time"]), np.zeros(len(t["time"])), np.asarray(t["snr2"]))
        for name, t in baseline["triggers"].items()
    }
    points = []
    for thr in thresholds:
        rounds = [dict(r, snr2_threshold=thr) for r in baseline["rounds"]]
        fig = veto_figures(groups, apply_rounds(rounds, aux, live), live)
        points.append({"snr2_threshold": thr, **fig})
    return points


def efficiency_at_deadtime(roc: list[dict], deadtime: float, family: str | None = None) -> float:
    """Witnessed efficiency (or ``family``'s) of a ROC curve at ``deadtime`` (fraction):
    the curve made monotone, anchored at (0, 0), flat past its largest deadtime; NaN
    when the curve has no glitch to measure."""
    if family is None:
        pts = [(p["deadtime"], p["witnessed_efficiency"]) for p in roc]
    else:
        pts = [
            (p["deadtime"], p["per_family"][family]["efficiency"])
            for p in roc
            if family in p.get("per_family", {})
        ]
    pts = sorted((x, y) for x, y in pts if np.isfinite(y))
    if not pts:
        return float("nan")
    x = np.array([0.0] + [p[0] for p in pts])
    y = np.maximum.accumulate(np.array([0.0] + [p[1] for p in pts]))
    return float(np.interp(deadtime, x, y))


def witnessed_extents(truth: pd.DataFrame) -> np.ndarray:
    """``(n, 2)`` GPS extents ``gps_peak +- duration / 2`` of the witnessed glitches that
    reach strain (``strain_snr > 0``), whatever their SNR: the perfect model's targets."""
    table = truth[(truth["strain_snr"] > 0) & (truth["witnesses"].astype(str).str.len() > 0)]
    peak = table["gps_peak"].to_numpy(dtype=float)
    half = table["duration"].to_numpy(dtype=float) / 2
    return np.stack([peak - half, peak + half], axis=1).reshape(-1, 2)


def touching(extents: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Mask of ``extents`` ``(n, 2)`` that overlap any of ``targets`` ``(m, 2)`` (GPS s)."""
    extents = np.asarray(extents, dtype=float).reshape(-1, 2)
    if not len(targets) or not len(extents):
        return np.zeros(len(extents), dtype=bool)
    return (
        (targets[None, :, 0] < extents[:, None, 1]) & (targets[None, :, 1] > extents[:, None, 0])
    ).any(axis=1)


def witness_snr_threshold(snr2_threshold: float) -> float:
    """Optimal witness SNR whose matched tile reaches ``snr2_threshold`` (median-normalised
    energy ``(1 + rho^2 / 2) / ln 2``); 0 when any glitch would."""
    return float(np.sqrt(max(2.0 * (snr2_threshold * np.log(2.0) - 1.0), 0.0)))


def ideal_bound(witnessed: pd.DataFrame, snr2_threshold: float) -> dict:
    """Fraction of witnessed glitches (overall and per family) whose loudest witness is
    above the trigger threshold ``snr2_threshold`` (SNR^2) in its own channel."""
    rho = witness_snr_threshold(snr2_threshold)
    loudest = np.array(
        [
            max((float(v) for v in str(s).split(";") if v), default=0.0)
            for s in witnessed["witness_snrs"].fillna("")
        ]
    )
    above = loudest >= rho
    return {
        "witness_snr_threshold": rho,
        "trigger_snr2_threshold": float(snr2_threshold),
        "witnessed_efficiency": float(above.mean()) if len(above) else float("nan"),
        "per_family": per_family(witnessed, above) if len(above) else {},
    }


def local_bins(gps_peak: float, half_width: float, gps_start: float, step: float, n: int):
    """Bin slice of a window covering ``gps_peak +- half_width`` (s)."""
    a = max(0, int(np.floor((gps_peak - half_width - gps_start) / step + 1e-9)))
    b = min(n, int(np.ceil((gps_peak + half_width - gps_start) / step - 1e-9)))
    return slice(a, b)


def at_deadtimes(roc: list[dict], deadtimes) -> dict:
    """``{str(deadtime): witnessed efficiency}`` read off a ROC (deadtimes as fractions)."""
    return {f"{d:g}": efficiency_at_deadtime(roc, d) for d in deadtimes}


def family_table(report: dict) -> dict:
    """Per truth family: each method's efficiency (glitches, vetoed), the learned veto's
    efficiency at the baseline's deadtime, and the ideal bound (witnessed families)."""
    learned, base = report["learned"], report["baseline"]
    ideal = report["ideal"]["per_family"]
    out = {}
    for family, fig in learned["per_family"].items():
        row = {"learned": fig, "ideal_efficiency": ideal.get(family, {}).get("efficiency")}
        if base:
            row["baseline"] = base["per_family"].get(family)
            row["learned_efficiency_at_baseline_deadtime"] = efficiency_at_deadtime(
                report["learned_roc"], base["deadtime"], family
            )
            row["perfect_model_efficiency_at_baseline_deadtime"] = efficiency_at_deadtime(
                report["perfect_model"]["roc"], base["deadtime"], family
            )
        out[family] = row
    return out
