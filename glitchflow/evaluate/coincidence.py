"""Coincidence statistics between strain and auxiliary triggers (hveto's definitions).

* coincidences ``n``: strain triggers with an auxiliary trigger within +-window/2;
  with trigger durations (the extent of their tiles) the reach grows by half of
  each trigger's duration, so a 2-s scattered-light arch coincides with the motion
  that made it wherever their loudest tiles fall;
* chance expectation ``mu = N_strain * N_aux * w / livetime`` with ``w`` the
  window plus the mean durations;
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


def coincident(
    times_a: np.ndarray,
    times_b: np.ndarray,
    window: float,
    extent_a: np.ndarray | None = None,
    extent_b: np.ndarray | None = None,
) -> np.ndarray:
    """Mask over ``times_a`` (sorted or not): has an event of ``times_b`` within
    ``window / 2 + (extent_a + extent_b) / 2`` s (extents: trigger durations, default 0)."""
    if len(times_a) == 0 or len(times_b) == 0:
        return np.zeros(len(times_a), dtype=bool)
    order = np.argsort(times_b, kind="stable")
    b = np.asarray(times_b)[order]
    eb = np.zeros(len(b)) if extent_b is None else np.asarray(extent_b)[order]
    ea = np.zeros(len(times_a)) if extent_a is None else np.asarray(extent_a)
    reach = window / 2 + ea / 2 + eb.max() / 2
    lo = np.searchsorted(b, times_a - reach, side="left")
    hi = np.searchsorted(b, times_a + reach, side="right")
    out = np.zeros(len(times_a), dtype=bool)
    for k in range(int(np.max(hi - lo, initial=0))):
        idx = lo + k
        j = np.minimum(idx, len(b) - 1)
        out |= (idx < hi) & (np.abs(times_a - b[j]) <= window / 2 + ea / 2 + eb[j] / 2)
    return out


def poisson_significance(n: int, mu: float) -> float:
    """``-log10 P(N >= n)`` for ``N ~ Poisson(mu)``; 0 when ``n == 0``."""
    if n <= 0:
        return 0.0
    if mu <= 0:
        return float("inf")
    log_sf = poisson.logsf(n - 1, mu)
    return float(-log_sf / np.log(10.0))


def slide(times: np.ndarray, offset: float, segments: np.ndarray) -> np.ndarray:
    """Shift ``times`` by ``offset`` s cyclically on the live time ``segments`` (k, 2);
    sorted."""
    return np.sort(shift(times, offset, segments))


def shift(times: np.ndarray, offset: float, segments: np.ndarray) -> np.ndarray:
    """:func:`slide` keeping the input order (so per-trigger durations stay aligned)."""
    if len(times) == 0:
        return times
    lengths = segments[:, 1] - segments[:, 0]
    cum = np.concatenate([[0.0], np.cumsum(lengths)])
    seg = np.clip(np.searchsorted(segments[:, 0], times, side="right") - 1, 0, len(segments) - 1)
    live = cum[seg] + (times - segments[seg, 0])
    live = (live + offset) % cum[-1]
    seg2 = np.clip(np.searchsorted(cum, live, side="right") - 1, 0, len(segments) - 1)
    return segments[seg2, 0] + (live - cum[seg2])


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
    strain_extent: np.ndarray | None = None,
    aux_extent: np.ndarray | None = None,
) -> tuple[float, np.ndarray]:
    """Empirical false-alarm probability of ``observed`` coincidences and the slide counts
    (extents: trigger durations as in :func:`coincident`)."""
    livetime = float(np.sum(segments[:, 1] - segments[:, 0]))
    offsets = slide_offsets(livetime, n_slides, step, max(1.0, 4 * window))
    counts = np.array(
        [
            int(
                coincident(
                    strain, shift(aux, off, segments), window, strain_extent, aux_extent
                ).sum()
            )
            for off in offsets
        ]
    )
    k = int((counts >= observed).sum()) if observed > 0 else len(counts)
    return (k + 1) / (len(counts) + 1), counts


def coincidence_stats(
    strain: np.ndarray,
    aux: np.ndarray,
    window: float,
    livetime: float,
    strain_extent: np.ndarray | None = None,
    aux_extent: np.ndarray | None = None,
) -> dict:
    """Coincidences, chance expectation, significance and use percentage of one channel
    (extents: trigger durations as in :func:`coincident`)."""
    n_coinc = int(coincident(strain, aux, window, strain_extent, aux_extent).sum())
    used = int(coincident(aux, strain, window, aux_extent, strain_extent).sum())
    reach = window
    for extent in (strain_extent, aux_extent):
        if extent is not None and len(extent):
            reach += float(np.mean(extent))
    mu = len(strain) * len(aux) * reach / livetime if livetime > 0 else 0.0
    return {
        "n_strain": len(strain),
        "n_aux": len(aux),
        "coincidences": n_coinc,
        "expected": mu,
        "significance": poisson_significance(n_coinc, mu),
        "use_percentage": 100.0 * used / len(aux) if len(aux) else 0.0,
    }
