"""Coincidence statistics between strain and auxiliary triggers (hveto's definitions).

* coincidences ``n``: strain triggers with an auxiliary trigger within +-window/2;
* chance expectation ``mu = N_strain * N_aux * window / livetime``;
* significance ``-log10 P(>= n | mu)`` (Poisson survival function);
* use percentage: auxiliary triggers that coincide with a strain trigger;
* empirical false-alarm probability from time slides: the auxiliary triggers
  are shifted cyclically over the live segments by offsets much larger than
  any physical coupling delay, and ``(k + 1) / (N + 1)`` where ``k`` slides
  reach ``n``.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import poisson


def coincident(times_a: np.ndarray, times_b: np.ndarray, window: float) -> np.ndarray:
    """Mask over ``times_a`` (sorted or not): has an event of ``times_b`` within +-window/2."""
    if len(times_a) == 0 or len(times_b) == 0:
        return np.zeros(len(times_a), dtype=bool)
    b = np.sort(times_b)
    idx = np.searchsorted(b, times_a)
    left = np.abs(times_a - b[np.clip(idx - 1, 0, len(b) - 1)])
    right = np.abs(times_a - b[np.clip(idx, 0, len(b) - 1)])
    return np.minimum(left, right) <= window / 2


def poisson_significance(n: int, mu: float) -> float:
    """``-log10 P(N >= n)`` for ``N ~ Poisson(mu)``; 0 when ``n == 0``."""
    if n <= 0:
        return 0.0
    if mu <= 0:
        return float("inf")
    log_sf = poisson.logsf(n - 1, mu)
    return float(-log_sf / np.log(10.0))


def slide(times: np.ndarray, offset: float, segments: np.ndarray) -> np.ndarray:
    """Shift ``times`` by ``offset`` s cyclically on the live time ``segments`` (k, 2)."""
    if len(times) == 0:
        return times
    lengths = segments[:, 1] - segments[:, 0]
    cum = np.concatenate([[0.0], np.cumsum(lengths)])
    seg = np.clip(np.searchsorted(segments[:, 0], times, side="right") - 1, 0, len(segments) - 1)
    live = cum[seg] + (times - segments[seg, 0])
    live = (live + offset) % cum[-1]
    seg2 = np.clip(np.searchsorted(cum, live, side="right") - 1, 0, len(segments) - 1)
    return np.sort(segments[seg2, 0] + (live - cum[seg2]))


def slide_offsets(livetime: float, n_slides: int, step: float, min_offset: float) -> np.ndarray:
    """Offsets ``k * step`` (s) whose cyclic distance from zero on ``livetime`` is at least
    ``min_offset``: a slide that wraps round to almost no shift would count real coincidences."""
    out = []
    k = 1
    while len(out) < n_slides and k <= 20 * n_slides:
        off = (k * step) % livetime
        if min(off, livetime - off) >= min_offset:
            out.append(off)
        k += 1
    return np.array(out)


def slide_fap(
    strain: np.ndarray,
    aux: np.ndarray,
    window: float,
    segments: np.ndarray,
    n_slides: int,
    step: float,
    observed: int,
) -> tuple[float, np.ndarray]:
    """Empirical false-alarm probability of ``observed`` coincidences and the slide counts."""
    livetime = float(np.sum(segments[:, 1] - segments[:, 0]))
    offsets = slide_offsets(livetime, n_slides, step, max(1.0, 4 * window))
    counts = np.array(
        [int(coincident(strain, slide(aux, off, segments), window).sum()) for off in offsets]
    )
    k = int((counts >= observed).sum()) if observed > 0 else len(counts)
    return (k + 1) / (len(counts) + 1), counts


def coincidence_stats(strain: np.ndarray, aux: np.ndarray, window: float, livetime: float) -> dict:
    """Coincidences, chance expectation, significance and use percentage of one channel."""
    n_coinc = int(coincident(strain, aux, window).sum())
    used = int(coincident(aux, strain, window).sum())
    mu = len(strain) * len(aux) * window / livetime if livetime > 0 else 0.0
    return {
        "n_strain": len(strain),
        "n_aux": len(aux),
        "coincidences": n_coinc,
        "expected": mu,
        "significance": poisson_significance(n_coinc, mu),
        "use_percentage": 100.0 * used / len(aux) if len(aux) else 0.0,
    }
