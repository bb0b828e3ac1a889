"""Veto and denoise figures against the twin's truth catalogue.

Truth glitches count when their ``gps_peak`` lies in the analysed (live)
segments.  Groups, at a strain SNR threshold ``rho`` (optimal SNR):

* *witnessed*: ``strain_snr >= rho`` and at least one witness channel;
* *unwitnessed*: ``strain_snr >= rho`` and no witness (nothing can veto them
  but chance: their efficiency should be close to the deadtime);
* *overall*: every glitch with ``strain_snr >= rho``.

A glitch is vetoed when its ``gps_peak`` is inside a veto segment.
Deadtime is vetoed time over live time; use percentage is the fraction of
veto segments that contain at least one glitch reaching strain.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from glitchflow.evaluate.hveto import apply_rounds, duration, inside, intersect, merge_segments

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


def veto_figures(groups: dict, segments: np.ndarray, live: np.ndarray) -> dict:
    """Efficiency per group, deadtime, efficiency/deadtime and use percentage."""
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
    from glitchflow.evaluate.triggers import Triggers

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


def efficiency_at_deadtime(roc: list[dict], deadtime: float) -> float:
    """Witnessed efficiency of a ROC curve interpolated at ``deadtime`` (NaN outside it)."""
    pts = sorted((p["deadtime"], p["witnessed_efficiency"]) for p in roc)
    x = np.array([p[0] for p in pts])
    y = np.array([p[1] for p in pts])
    if not len(x) or deadtime < x[0] - 1e-12 or deadtime > x[-1] + 1e-12:
        return float("nan")
    return float(np.interp(deadtime, x, y))


def local_bins(gps_peak: float, half_width: float, gps_start: float, step: float, n: int):
    """Bin slice of a window covering ``gps_peak +- half_width`` (s)."""
    a = max(0, int(np.floor((gps_peak - half_width - gps_start) / step + 1e-9)))
    b = min(n, int(np.ceil((gps_peak + half_width - gps_start) / step - 1e-9)))
    return slice(a, b)
