"""Hierarchical veto (hveto-style): the classic coincidence veto the learned veto must beat.

Each round tries every safe auxiliary channel, SNR^2 threshold and
coincidence window, and picks the most significant (Poisson significance of
coincidences with the remaining strain triggers).  The winner's triggers
+-window/2 become veto segments; strain triggers, auxiliary triggers and
live time inside them are removed; rounds continue until the best
significance drops below ``min_significance``.  The rounds are a veto
definition that can be applied to new data (:func:`apply_rounds`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from glitchflow.evaluate.coincidence import coincidence_stats, coincident
from glitchflow.evaluate.triggers import Triggers


@dataclass
class VetoRound:
    """One hveto round: the winning channel and its figures (fractions of the original
    strain triggers and live time)."""

    round: int
    channel: str
    snr2_threshold: float
    window: float
    significance: float
    coincidences: int
    efficiency: float
    deadtime: float
    use_percentage: float
    segments: list[tuple[float, float]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def merge_segments(segments: np.ndarray) -> np.ndarray:
    """Union of ``(k, 2)`` [start, end) intervals, sorted and merged."""
    if len(segments) == 0:
        return np.zeros((0, 2))
    seg = segments[np.argsort(segments[:, 0])]
    out = [seg[0].copy()]
    for start, end in seg[1:]:
        if start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append(np.array([start, end]))
    return np.array(out)


def intersect(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection of two merged segment lists."""
    out = []
    i = j = 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i, 0], b[j, 0]), min(a[i, 1], b[j, 1])
        if hi > lo:
            out.append((lo, hi))
        if a[i, 1] < b[j, 1]:
            i += 1
        else:
            j += 1
    return np.array(out).reshape(-1, 2)


def subtract(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a`` minus ``b`` (both merged segment lists)."""
    out = []
    for start, end in a:
        cursor = start
        for lo, hi in b:
            if hi <= cursor or lo >= end:
                continue
            if lo > cursor:
                out.append((cursor, lo))
            cursor = max(cursor, hi)
        if cursor < end:
            out.append((cursor, end))
    return np.array(out).reshape(-1, 2)


def inside(times: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """Mask of ``times`` that fall in merged ``segments``."""
    if len(segments) == 0 or len(times) == 0:
        return np.zeros(len(times), dtype=bool)
    idx = np.searchsorted(segments[:, 0], times, side="right") - 1
    ok = idx >= 0
    result = np.zeros(len(times), dtype=bool)
    result[ok] = times[ok] < segments[idx[ok], 1]
    return result


def duration(segments: np.ndarray) -> float:
    return float(np.sum(segments[:, 1] - segments[:, 0])) if len(segments) else 0.0


def veto_segments(times: np.ndarray, window: float, live: np.ndarray) -> np.ndarray:
    """Segments ``t +- window/2`` around trigger times, merged and clipped to live time."""
    raw = (
        np.stack([times - window / 2, times + window / 2], axis=1)
        if len(times)
        else np.zeros((0, 2))
    )
    return intersect(merge_segments(raw), live)


def run_hveto(
    strain: Triggers,
    aux: dict[str, Triggers],
    live: np.ndarray,
    thresholds: list[float],
    windows: list[float],
    min_significance: float,
    max_rounds: int,
    unsafe: set[str] = frozenset(),
) -> list[VetoRound]:
    """Run hveto rounds; ``live`` are the analysed segments (k, 2) in GPS seconds."""
    live = merge_segments(np.asarray(live, dtype=float).reshape(-1, 2))
    total_live = duration(live)
    n_strain = len(strain)
    remaining = strain.time.copy()
    channels = {name: t for name, t in aux.items() if name not in unsafe}
    rounds: list[VetoRound] = []
    for number in range(1, max_rounds + 1):
        livetime = duration(live)
        best = None
        for name, trig in channels.items():
            keep_live = inside(trig.time, live)
            for thr in thresholds:
                times = trig.time[keep_live & (trig.snr2 >= thr)]
                if len(times) == 0:
                    continue
                for window in windows:
                    stats = coincidence_stats(remaining, times, window, livetime)
                    key = (stats["significance"], -window, thr)
                    if best is None or key > best[0]:
                        best = (key, name, thr, window, stats, times)
        if best is None or best[0][0] < min_significance:
            break
        _, name, thr, window, stats, times = best
        segments = veto_segments(times, window, live)
        vetoed = inside(remaining, segments)
        rounds.append(
            VetoRound(
                number,
                name,
                thr,
                window,
                stats["significance"],
                stats["coincidences"],
                float(vetoed.sum() / n_strain) if n_strain else 0.0,
                duration(segments) / total_live if total_live else 0.0,
                stats["use_percentage"],
                [tuple(map(float, s)) for s in segments],
            )
        )
        remaining = remaining[~vetoed]
        live = subtract(live, segments)
    return rounds


def apply_rounds(
    rounds: list[dict] | list[VetoRound], aux: dict[str, Triggers], live: np.ndarray
) -> np.ndarray:
    """Veto segments of a trained veto definition on new auxiliary triggers (merged)."""
    live = merge_segments(np.asarray(live, dtype=float).reshape(-1, 2))
    parts = []
    for r in rounds:
        r = r if isinstance(r, dict) else r.to_dict()
        trig = aux.get(r["channel"])
        if trig is None:
            continue
        times = trig.time[trig.snr2 >= r["snr2_threshold"]]
        parts.append(veto_segments(times, r["window"], live))
    return merge_segments(np.concatenate(parts)) if parts else np.zeros((0, 2))


def efficiency_deadtime(
    strain_times: np.ndarray, segments: np.ndarray, live: np.ndarray
) -> tuple[float, float]:
    """Fraction of strain triggers vetoed and fraction of live time vetoed."""
    live = merge_segments(np.asarray(live, dtype=float).reshape(-1, 2))
    eff = float(inside(strain_times, segments).mean()) if len(strain_times) else 0.0
    return eff, duration(intersect(segments, live)) / max(duration(live), 1e-12)


__all__ = [
    "VetoRound",
    "apply_rounds",
    "coincident",
    "efficiency_deadtime",
    "merge_segments",
    "run_hveto",
    "veto_segments",
]
