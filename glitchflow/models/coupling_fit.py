"""One witness trigger's coupling fitted to strain, with an empirical-Bayes prior on its shape.

The coupling filter predicts a glitch ``p`` in whitened strain; the glitch that
arrives differs from glitch to glitch in gain (the twin's couplings scatter by
~30 %) and, less, in phase and spectral tilt.  The fit's columns are ``p``, its
tilt ``t`` (``p`` filtered by ``ln(f / f_trigger)``) and their Hilbert
transforms; each free coefficient also absorbs one degree of freedom of noise
(residual SNR ~ ``sqrt(k)``), which dominates what is left of a faint glitch.
The gain stays free; the other coefficients, relative to the gain, get a
zero-mean Gaussian prior whose widths fit-clean estimates from its training
triggers (:func:`prior_widths`: the spread of the relative coefficients minus
their noise), so a faint glitch keeps the shape the coupling usually has and a
loud one the shape it shows.

Units: whitened samples (unit-variance noise); ``prediction`` and ``y`` ``(L,)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: smallest prior width (relative to the gain) that :func:`prior_widths` returns
MIN_PRIOR_WIDTH = 0.01


@dataclass
class Fit:
    """One trigger's fit: the fitted strain glitch ``(L,)``, its SNR, the gain and
    quadrature coefficients, and per non-gain column its coefficient relative to the
    gain (``relative``) and that ratio's noise variance (``relative_var``)."""

    fitted: np.ndarray
    snr: float
    coefficients: tuple[float, float]
    relative: tuple[float, ...] = ()
    relative_var: tuple[float, ...] = ()


def hilbert_transform(x: np.ndarray) -> np.ndarray:
    """The Hilbert transform of ``x`` ``(n,)``: the imaginary part of its analytic signal
    (``scipy.signal.hilbert``'s, without scipy.signal's 0.6 s import in every actor)."""
    n = len(x)
    h = np.zeros(n)
    h[0] = 1.0
    if n % 2 == 0:
        h[n // 2] = 1.0
        h[1 : n // 2] = 2.0
    else:
        h[1 : (n + 1) // 2] = 2.0
    return np.imag(np.fft.ifft(np.fft.fft(x) * h))


def fit_columns(prediction, sample_rate: float, frequency, tilt: bool, quadrature: bool):
    """``(L, k)`` columns of the fit and the index of the quadrature column (None)."""
    columns = [prediction]
    if tilt and frequency:
        n = len(prediction)
        freqs = np.fft.rfftfreq(n, 1.0 / sample_rate)
        response = np.log(np.maximum(freqs, 1.0) / frequency)
        columns.append(np.fft.irfft(np.fft.rfft(prediction) * response, n))
    in_phase = len(columns)
    if quadrature:
        columns += [hilbert_transform(c) for c in columns]
    return np.stack(columns, axis=1), (in_phase if quadrature else None)


def fit_glitch(basis: np.ndarray, y: np.ndarray, quadrature_column, prior=None) -> Fit:
    """Least squares of ``y`` on ``basis`` ``(L, k)``; with ``prior`` (``k - 1`` widths
    relative to the gain), the non-gain coefficients are shrunk toward 0 by a ridge of
    ``1 / (width * gain)^2`` (gain from the plain fit)."""
    gram = basis.T @ basis
    rhs = basis.T @ y
    k = basis.shape[1]
    gram_reg = gram + 1e-12 * np.trace(gram) * np.eye(k)
    coef = np.linalg.solve(gram_reg, rhs)
    gain = float(coef[0])
    noise = np.diag(np.linalg.inv(gram_reg))
    relative, relative_var = (), ()
    if gain != 0.0 and k > 1:
        relative = tuple(float(c / gain) for c in coef[1:])
        relative_var = tuple(float(v / gain**2) for v in noise[1:])
    if prior is not None and len(prior) == k - 1 and gain != 0.0:
        ridge = np.concatenate([[0.0], 1.0 / (np.maximum(prior, MIN_PRIOR_WIDTH) * gain) ** 2])
        coef = np.linalg.solve(gram_reg + np.diag(ridge), rhs)
    fitted = basis @ coef
    quad = float(coef[quadrature_column]) if quadrature_column is not None else 0.0
    snr = math.sqrt(max(float(fitted @ y), 0.0))
    return Fit(fitted, snr, (float(coef[0]), quad), relative, relative_var)


def prior_widths(relative: list, relative_var: list) -> list[float] | None:
    """Prior widths of the relative coefficients from training fits, by maximum
    likelihood per column: ``r_i ~ N(0, width^2 + var_i)`` (each fit's own noise
    variance ``var_i``: faint glitches count for little), on a log grid of widths from
    :data:`MIN_PRIOR_WIDTH` to 10; None without at least 5 fits of one common length."""
    rows = [(r, v) for r, v in zip(relative, relative_var) if len(r)]
    if len({len(r) for r, _ in rows}) != 1 or len(rows) < 5:
        return None
    r = np.array([r for r, _ in rows])
    v = np.array([v for _, v in rows])
    widths = np.geomspace(MIN_PRIOR_WIDTH, 10.0, 241)
    out = []
    for j in range(r.shape[1]):
        total = widths[:, None] ** 2 + v[None, :, j]  # (grid, fits)
        loglike = -0.5 * (np.log(total) + r[None, :, j] ** 2 / total).sum(1)
        out.append(float(widths[int(np.argmax(loglike))]))
    return out
