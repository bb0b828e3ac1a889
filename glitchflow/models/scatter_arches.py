"""Scattered-light arches fitted in whitened strain where a motion witness triggers.

Scattered light couples non-linearly: strain carries ``w(t) sin(Phi(t) + phi)``
with the fringe phase ``Phi = 4 pi x(t) / lambda`` of a scatterer moving as
``x(t)``.  When the witness records the in-band transient of the motion but not
the slow motion itself (seismic noise buries it below a few Hz), the fringe
phase cannot be predicted sample by sample from the witness.  Following the
idea of template searches for scattered light (ArchEnemy, Tolley et al. 2023),
the witness gives *where* (its trigger window) and the strain gives *what*: a
physical arch model

    s(t) = w(t) [a sin Phi(t) + b (cos Phi(t) - 1)],
    Phi(t) = r w(t) sin(2 pi f_m (t - t_m)),   w(t) = cos^2(pi (t - t_c) / D), |t - t_c| < D/2

(Hann envelope of length ``D`` centred ``t_c``, motion at ``f_m`` Hz with phase
time ``t_m``, modulation depth ``r``; peak arch frequency ``f_peak ~ r f_m``;
``(a, b) = A (cos phi, sin phi)`` enter linearly) is fitted to the whitened
strain around the window, in three stages:

1. **incoherent**: the arch's frequency track ``|dPhi/dt| / 2 pi`` is laid over
   the whitened strain's spectrogram on a grid of ``(t_c, D, f_m, t_m, f_peak)``;
   the tracks that collect the most excess power (four distinct ones) go on
   (smooth in the parameters, so a coarse grid finds them);
2. **coherent**: around each, a fine grid in ``(f_m, t_m, f_peak)`` maximises the
   SNR^2 the whitened template explains (``a, b`` solved by least squares); around
   the three best, the envelope ``(t_c, D)`` and a finer motion grid;
3. **refine**: Nelder-Mead on all five from those three (bounded to the search
   ranges), then the fit at the full analysis rate.

Stages 1-3 run at ``search_rate`` (the arches lie below ~100 Hz); the whitened
template is the arch through the same whitening FIR as the data.  The fit
explains ~2 degrees of freedom of noise plus the search's look-elsewhere (an
arch-free segment fits SNR ~4-5), so a fit is subtracted only above ``min_snr``; and
the coherent stages run only when the best track collects at least
``min_track_score`` (excess power summed along it; arch-free twin segments: 34-84,
twin arches of SNR >= 8.9: >= 100).

Units: ``y`` whitened strain ``(L,)`` at ``sample_rate`` Hz; times in seconds
from the segment's first sample; frequencies in Hz.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.fft as sfft
from scipy.optimize import minimize

#: frequency oversampling of the spectrogram the incoherent tracks are read from
TRACK_OVERSAMPLE = 4


@dataclass(frozen=True)
class ArchParams:
    """An arch's shape: envelope ``centre`` (s from the segment start) and ``duration`` (s),
    ``motion_frequency`` (Hz), ``motion_time`` (s, a zero crossing of the motion),
    ``depth`` (fringe phase amplitude, rad); :attr:`peak_frequency` ~ ``depth`` x motion."""

    centre: float
    duration: float
    motion_frequency: float
    motion_time: float
    depth: float

    @property
    def peak_frequency(self) -> float:
        return self.depth * self.motion_frequency


@dataclass(frozen=True)
class ArchFit:
    """The fitted arch in whitened strain ``fitted`` ``(L,)``, its SNR (``sqrt`` of the
    SNR^2 it explains), the in-phase/quadrature coefficients ``(a, b)`` and the shape."""

    fitted: np.ndarray
    snr: float
    coefficients: tuple[float, float]
    params: ArchParams


def arch_basis(t: np.ndarray, centre, duration, motion_frequency, motion_time, depth):
    """``(..., 2, n)`` columns ``w sin Phi`` and ``w (cos Phi - 1)`` at times ``t`` ``(n,)``;
    parameters are scalars or ``(k, 1)`` arrays (then ``k`` templates)."""
    u = (t - centre) / duration
    w = np.where(np.abs(u) < 0.5, np.cos(np.pi * u) ** 2, 0.0)
    phase = depth * w * np.sin(2 * np.pi * motion_frequency * (t - motion_time))
    return np.stack([w * np.sin(phase), w * (np.cos(phase) - 1.0)], axis=-2)


def explained(y: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SNR^2 explained by the least-squares fit of ``y`` ``(n,)`` on the two columns of
    ``m`` ``(..., 2, n)``, and the coefficients ``(..., 2)``."""
    gram = m @ np.swapaxes(m, -1, -2)
    gram = gram + 1e-12 * np.trace(gram, axis1=-2, axis2=-1)[..., None, None] * np.eye(2)
    b = m @ y
    det = gram[..., 0, 0] * gram[..., 1, 1] - gram[..., 0, 1] ** 2
    det = np.where(det > 0, det, np.inf)
    c0 = (gram[..., 1, 1] * b[..., 0] - gram[..., 0, 1] * b[..., 1]) / det
    c1 = (gram[..., 0, 0] * b[..., 1] - gram[..., 0, 1] * b[..., 0]) / det
    coef = np.stack([c0, c1], axis=-1)
    return (coef * b).sum(-1), coef


class FirWhitener:
    """Whitening of short templates by the data's whitening FIR (``'same'`` alignment and
    the ``sqrt(2 / fs)`` scale of :func:`glitchflow.signal.whitening.whiten_segment`).

    ``fir`` ``(ntaps,)`` at ``sample_rate``; templates of ``n`` samples at ``rate``
    (``sample_rate`` divided by an integer) are zero-padded by the filter's length so
    the whitened template rings out inside the FFT.
    """

    def __init__(self, fir: np.ndarray, sample_rate: float, n: int, rate: float) -> None:
        factor = round(sample_rate / rate)
        ntaps = len(fir)
        self.n = n
        self.nfft = sfft.next_fast_len(n + math.ceil(ntaps / factor) + 2)
        self.pad = (self.nfft - n) // 2
        centre = (ntaps - 1) // 2
        big = self.nfft * factor
        taps = np.zeros(big)
        taps[:ntaps] = fir
        response = sfft.rfft(np.roll(taps, -centre))[: self.nfft // 2 + 1]
        self.response = response * math.sqrt(2.0 / sample_rate)
        # float32 templates only score (the explained SNR^2 does not depend on the
        # template's scale): a unit-peak response keeps strain's ~1e21 whitening in range
        self.response32 = (response / np.abs(response).max()).astype(np.complex64)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Whitened ``x`` ``(..., n)``, in ``x``'s precision (float32 for the grids)."""
        z = np.zeros((*x.shape[:-1], self.nfft), dtype=x.dtype)
        z[..., self.pad : self.pad + self.n] = x
        response = self.response32 if x.dtype == np.float32 else self.response
        out = sfft.irfft(sfft.rfft(z, axis=-1) * response, self.nfft, axis=-1)
        return out[..., self.pad : self.pad + self.n]


def decimate(y: np.ndarray, factor: int) -> np.ndarray:
    """``y`` ``(n,)`` (``n`` a multiple of ``factor``) band-limited by FFT truncation and
    sampled every ``factor`` samples; values keep their scale."""
    m = len(y) // factor
    return sfft.irfft(sfft.rfft(y)[: m // 2 + 1], m) * (m / len(y))


def excess_spectrogram(y: np.ndarray, rate: float, window: float, hop: float):
    """Hann-windowed power of ``y`` ``(n,)`` normalised by its median per frequency, minus 1
    (noise ~ 0): times (s, window centres) ``(K,)``, frequencies ``(F,)``, power ``(K, F)``."""
    nw, nh = round(window * rate), max(1, round(hop * rate))
    starts = np.arange(0, len(y) - nw + 1, nh)
    frames = np.lib.stride_tricks.sliding_window_view(y, nw)[starts] * np.hanning(nw)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    power /= np.maximum(np.median(power, axis=0, keepdims=True), 1e-300)
    return (starts + nw / 2) / rate, np.fft.rfftfreq(nw, 1.0 / rate), power - 1.0


@dataclass(frozen=True)
class ArchSearch:
    """Settings of the arch fit (see the module docstring); ranges are (low, high)."""

    peak_frequency: tuple[float, float] = (14.0, 64.0)
    motion_frequency: tuple[float, float] = (1.0, 4.0)
    duration: tuple[float, float] = (0.8, 3.0)
    search_rate: float = 256.0
    track_band: tuple[float, float] = (16.0, 100.0)
    min_snr: float = 6.5
    min_track_score: float = 90.0

    def segment(self, window: tuple[float, float]) -> float:
        """Seconds of data a fit over the witness ``window`` (GPS s) needs."""
        return (window[1] - window[0]) + self.duration[1] + 1.0

    def __call__(
        self, y: np.ndarray, sample_rate: float, fir: np.ndarray, window: tuple[float, float]
    ) -> ArchFit:
        """Fit an arch to whitened strain ``y`` whose envelope centre lies in ``window``
        (s from the first sample); ``fir``: the whitening FIR the data went through."""
        factor = round(sample_rate / self.search_rate)
        length = len(y)
        n = length // factor * factor
        y = np.asarray(y[:n], float)
        rate = sample_rate / factor
        yd = decimate(y, factor)
        t = np.arange(len(yd)) / rate
        white = FirWhitener(fir, sample_rate, len(yd), rate)
        score, tracks = self._incoherent(yd, rate, window)
        if score < self.min_track_score:  # no arch in the spectrogram: nothing to fit
            return ArchFit(np.zeros(length), 0.0, (0.0, 0.0), ArchParams(*tracks[0]))
        best = self._coherent(yd, t, white, tracks)

        lo, hi = self._bounds(window)

        def cost(p):
            if np.any(p < lo) or np.any(p > hi) or p[4] * p[2] > 1.2 * self.peak_frequency[1]:
                return 0.0
            return -float(explained(yd, white(arch_basis(t, *p)))[0])

        p = min((self._refine(cost, p) for p in best), key=lambda r: r.fun).x
        tf = np.arange(n) / sample_rate
        m = FirWhitener(fir, sample_rate, n, sample_rate)(arch_basis(tf, *p))
        snr2, coef = explained(y, m)
        fitted = coef @ m
        full = np.zeros(length)
        full[:n] = fitted
        return ArchFit(full, math.sqrt(max(float(snr2), 0.0)), tuple(map(float, coef)),
                       ArchParams(*map(float, p)))  # fmt: skip

    def _bounds(self, window: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper limits of ``(centre, duration, f_m, t_m, depth)`` for the
        refinement: the search ranges widened by 20 %, the centre within 0.5 s of the
        witness window."""
        (d0, d1), (f0, f1) = self.duration, self.motion_frequency
        lo = np.array([window[0] - 0.5, 0.8 * d0, 0.8 * f0, -np.inf, 0.5])
        hi = np.array([window[1] + 0.5, 1.2 * d1, 1.2 * f1, np.inf, np.inf])
        return lo, hi

    @staticmethod
    def _refine(cost, p, rounds: int = 2):
        """Nelder-Mead from ``p`` with a simplex scaled to the coherent grid's steps,
        restarted once from its result (a collapsed simplex stalls on the ridges)."""
        steps = np.array([0.01, 0.03, 0.003, 0.002, 0.05 * max(p[4], 1.0) / 10])
        best = None
        for _ in range(rounds):
            simplex = np.vstack([p, p + np.diag(steps)])
            best = minimize(cost, p, method="Nelder-Mead",
                            options={"initial_simplex": simplex, "xatol": 1e-5,
                                     "fatol": 1e-5, "maxiter": 500})  # fmt: skip
            p = best.x
        return best

    def _incoherent(self, yd: np.ndarray, rate: float, window: tuple[float, float], keep=4):
        """The best track's score and the ``keep`` best distinct tracks on the spectrogram,
        as parameter tuples."""
        coarse = excess_spectrogram(yd, rate, 0.125, 1.0 / 32)
        lo, hi = window
        found = _track_scores(
            coarse,
            np.arange(lo - 0.15, hi + 0.15 + 1e-9, 0.15),
            np.arange(self.duration[0], self.duration[1] + 1e-9, 0.4),
            np.arange(self.motion_frequency[0], self.motion_frequency[1] + 1e-9, 0.05),
            np.arange(12) * np.pi / 12,  # the track repeats every half motion period
            np.arange(self.peak_frequency[0], self.peak_frequency[1] + 1e-9, 3.0),
            self.track_band,
            2 * keep,
        )
        return found[0][0], _distinct([p for _, p in found], keep)

    def _coherent(self, yd, t, white, tracks, keep=3):
        """The ``keep`` best parameter tuples: around each track a grid in ``(f_m, t_m,
        f_peak)``; then, around the best, the envelope ``(t_c, D)`` and a finer
        ``(f_m, t_m, f_peak)`` (the fringe phase is most sensitive to those three)."""

        t32, y32 = t.astype(np.float32), yd.astype(np.float32)

        def best_of(grid):  # templates in float32: scores to ~1e-6, twice as fast
            scores = np.concatenate([
                explained(y32, white(arch_basis(t32, *(c[:, None] for c in chunk.T))))[0]
                for chunk in np.array_split(grid.astype(np.float32), max(1, len(grid) // 512))
            ])  # fmt: skip
            i = int(np.argmax(scores))
            return float(scores[i]), grid[i].astype(float)

        out = [best_of(_motion_grid(p, 0.04, 0.005, 0.02, 0.0025, 2.0, 2.0)) for p in tracks]
        out.sort(key=lambda x: -x[0])
        refined = []
        for _, p in out[:keep]:
            dc, dd = np.meshgrid(np.arange(-0.04, 0.041, 0.02), np.arange(-0.24, 0.241, 0.06))
            grid = np.repeat(p[None], dc.size, axis=0)
            grid[:, 0] += dc.ravel()
            grid[:, 1] = np.maximum(grid[:, 1] + dd.ravel(), 0.2)
            _, p = best_of(grid)
            refined.append(best_of(_motion_grid(p, 0.01, 0.0025, 0.005, 0.00125, 1.0, 0.5)))
        refined.sort(key=lambda x: -x[0])
        return [p for _, p in refined]


def _track_scores(spectrogram, centres, durations, fm, psi, peaks, band, keep: int) -> list:
    """``(score, (centre, duration, f_m, t_m, depth))`` of the ``keep`` best tracks of each
    envelope: the excess power summed along ``f(t) = f_peak |d/dt (w sin s)| / (2 pi f_m)``,
    ``s = 2 pi f_m (t - centre) + psi``, where it lies in ``band`` (the spectrogram is
    interpolated to :data:`TRACK_OVERSAMPLE` x its frequency resolution, float32)."""
    times, freqs, excess = spectrogram
    step = freqs[1] / TRACK_OVERSAMPLE
    grid = np.arange(0.0, freqs[-1] + step / 2, step)
    table = np.stack([np.interp(grid, freqs, row) for row in excess]).astype(np.float32)
    table[:, (grid < band[0]) | (grid > band[1])] = 0.0
    table = np.concatenate([table, np.zeros((len(times), 1), np.float32)], axis=1)
    last = table.shape[1] - 1  # a zero column for tracks above the spectrogram
    FM, PSI = (a.ravel()[:, None].astype(np.float32) for a in np.meshgrid(fm, psi, indexing="ij"))
    scale = (np.asarray(peaks, np.float32) / np.float32(step))[None, :, None]
    found = []
    for centre in centres:
        for duration in durations:
            u = (times - centre) / duration
            inside = np.abs(u) < 0.5
            if not inside.any():
                continue
            w = (np.cos(np.pi * u[inside]) ** 2).astype(np.float32)
            dw = (-np.pi / duration * np.sin(2 * np.pi * u[inside])).astype(np.float32)
            s = 2 * np.float32(np.pi) * FM * (times[inside] - centre).astype(np.float32) + PSI
            g = np.abs(dw * np.sin(s) / (2 * np.float32(np.pi) * FM) + w * np.cos(s))
            index = np.minimum(g[:, None, :] * scale + 0.5, last).astype(np.intp)
            rows = table[inside]
            score = rows[np.arange(rows.shape[0]), index].sum(-1)  # (grid, peaks)
            best = np.argsort(score, axis=None)[-keep:]
            for a, b in zip(*np.unravel_index(best, score.shape)):
                f = float(FM[a, 0])
                tm = centre - float(PSI[a, 0]) / (2 * np.pi * f)
                found.append((float(score[a, b]), (centre, duration, f, tm, peaks[b] / f)))
    found.sort(key=lambda x: -x[0])
    return found


def _distinct(tracks: list, keep: int) -> list:
    """The first ``keep`` of ``tracks`` (best first) that differ from every one kept before
    in motion frequency (>= 0.06 Hz) or in the arches' times (>= 0.03 s)."""
    out = []
    for p in tracks:
        if not any(_same_arches(p, q) for q in out):
            out.append(p)
        if len(out) == keep:
            break
    return out


def _same_arches(p, q) -> bool:
    if abs(p[2] - q[2]) >= 0.06:
        return False
    half = 0.5 / p[2]  # the arches repeat every half motion period
    shift = (p[3] - q[3]) % half
    return min(shift, half - shift) < 0.03


def _motion_grid(p, fm_span, fm_step, tm_span, tm_step, peak_span, peak_step) -> np.ndarray:
    """``(k, 5)`` parameter tuples around ``p`` in motion frequency, motion time and peak
    frequency (+- span, by step); the envelope is kept."""
    centre, duration, fm, tm, depth = p
    dfm, dtm, dpk = np.meshgrid(
        np.arange(-fm_span, fm_span + 1e-9, fm_step),
        np.arange(-tm_span, tm_span + 1e-9, tm_step),
        np.arange(-peak_span, peak_span + 1e-9, peak_step),
        indexing="ij",
    )
    f = fm + dfm.ravel()
    peak = np.maximum(depth * fm + dpk.ravel(), 1.0)
    return np.stack([np.full_like(f, centre), np.full_like(f, duration), f, tm + dtm.ravel(),
                     peak / f], axis=1)  # fmt: skip


def arch_search(settings: dict) -> ArchSearch:
    """The :class:`ArchSearch` of a ``clean`` settings dict (its ``arch`` section; the
    defaults where a checkpoint predates it)."""
    a = settings.get("arch") or {}
    d = ArchSearch()
    return ArchSearch(
        tuple(a.get("peak_frequency", d.peak_frequency)),
        tuple(a.get("motion_frequency", d.motion_frequency)),
        tuple(a.get("duration", d.duration)),
        min_snr=float(a.get("min_snr", d.min_snr)),
        min_track_score=float(a.get("min_track_score", d.min_track_score)),
    )
