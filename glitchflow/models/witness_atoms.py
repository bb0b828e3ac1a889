"""A witness glitch rebuilt from sine-Gaussian atoms: the witness's signal without its noise.

Subtraction predicts strain from the witness.  Feeding the raw (whitened)
witness carries the witness's own noise into the prediction: with a coupling
gain ``g`` (strain SNR / witness SNR, ~0.4-0.5 in the twin) and ``N`` noise
degrees of freedom in the analysis band the prediction adds a residual SNR of
about ``g sqrt(N)`` — a few units, enough to keep a loud glitch above SNR 5.
Matching pursuit over a sine-Gaussian (Gabor) dictionary, the glitch model of
BayesWave and Omicron's tiles, keeps only what the witness's glitch is:

1. correlate the whitened segment ``u`` with complex atoms
   ``exp(-(t/tau)^2) exp(2 pi i f t)``, ``tau = Q / (sqrt2 pi f)``, on a grid of
   ``(f, Q)`` around the trigger's frequency, at every centre inside the
   trigger's window (one FFT per atom);
2. refine the loudest atom's ``(f, Q, t0)`` continuously (Nelder-Mead on its SNR^2);
3. refit all atoms found so far jointly (real least squares on their in-phase
   and quadrature parts) and repeat on the remainder until the loudest atom's
   SNR^2 is below ``stop_snr2`` or ``max_atoms`` are in.

Units: ``u`` is whitened (unit-variance noise) at ``sample_rate`` Hz, shape
``(L,)``; times are seconds from the segment's centre sample ``L // 2``; an
atom's SNR^2 is the power it explains in that whitened data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.fft as sfft
from scipy.optimize import minimize


@dataclass(frozen=True)
class Atom:
    """One sine-Gaussian: centre ``time`` (s from the segment centre), ``frequency`` (Hz),
    ``q``, and the ``snr2`` it explained when it was found."""

    time: float
    frequency: float
    q: float
    snr2: float


def complex_atom(n: int, sample_rate: float, time: float, frequency: float, q: float):
    """``(L,)`` complex sine-Gaussian centred ``time`` s from sample ``n // 2``, scaled so its
    real and imaginary parts each have (about) unit norm."""
    t = (np.arange(n) - n // 2) / sample_rate - time
    tau = q / (math.sqrt(2.0) * math.pi * frequency)
    envelope = np.exp(-((t / tau) ** 2))
    norm = math.sqrt(max(float(envelope @ envelope) / 2.0, 1e-300))
    return envelope * np.exp(2j * math.pi * frequency * t) / norm


def atom_product(r: np.ndarray, sample_rate: float, time: float, frequency: float, q: float):
    """``<r, complex_atom(...)>`` (conjugate-linear in the atom) over the atom's support only
    (+-4 tau), for the refinement's many evaluations."""
    n = len(r)
    tau = q / (math.sqrt(2.0) * math.pi * frequency)
    centre = n // 2 + time * sample_rate
    a = max(int(centre - 4 * tau * sample_rate), 0)
    b = min(int(centre + 4 * tau * sample_rate) + 2, n)
    t = (np.arange(a, b) - centre) / sample_rate
    envelope = np.exp(-((t / tau) ** 2))
    norm = math.sqrt(max(float(envelope @ envelope) / 2.0, 1e-300))
    return np.dot(r[a:b], envelope * np.exp(-2j * math.pi * frequency * t)) / norm


@dataclass(frozen=True)
class AtomSearch:
    """Matching-pursuit settings (see the module docstring).

    ``q_range``: smallest and largest Q of the dictionary; ``n_q`` Q values
    log-spaced between; ``octaves``: frequencies searched each side of the
    trigger's; ``per_octave``: frequency grid density.  Atoms whose envelope
    (3 tau) does not fit in half the segment are left out.
    """

    sample_rate: float
    stop_snr2: float = 20.0
    max_atoms: int = 4
    q_range: tuple[float, float] = (2.5, 64.0)
    n_q: int = 8
    octaves: float = 1.3
    per_octave: int = 10
    min_frequency: float = 10.0

    def grid(self, n: int, frequency: float) -> list[tuple[float, float]]:
        """``(f, Q)`` of the dictionary around ``frequency`` (Hz) for ``n``-sample segments."""
        nyquist = 0.45 * self.sample_rate
        lo = max(self.min_frequency, frequency * 2.0**-self.octaves)
        hi = min(nyquist, frequency * 2.0**self.octaves)
        count = max(2, math.ceil(math.log2(hi / lo) * self.per_octave) + 1)
        freqs = np.geomspace(lo, hi, count)
        qs = np.geomspace(self.q_range[0], self.q_range[1], self.n_q)
        tau_max = n / self.sample_rate / 6.0
        return [
            (float(f), float(q))
            for f in freqs
            for q in qs
            if q / (math.sqrt(2.0) * math.pi * f) <= tau_max
        ]

    def _loudest(self, r: np.ndarray, grid, window: float) -> Atom:
        """Best ``(f, Q)`` of the grid and centre within ``|t| <= window`` (s) for residual ``r``.

        Each atom is analytic and band-limited (a Gaussian of ``1 / (pi tau)`` Hz e-fold
        around ``f``), so its correlation with ``r`` is computed from its band alone:
        the band moved to zero frequency and inverse-transformed at the band's length,
        which samples ``|correlation|`` on a time grid as coarse as the band allows
        (``nfft / M`` samples).  Atoms with the same ``M`` share one batched FFT; the
        refinement then polishes the best one."""
        n = len(r)
        nfft = 2 * n
        fs = self.sample_rate
        df = fs / nfft
        spectrum = sfft.fft(r, nfft)
        w = window * fs
        best = Atom(0.0, grid[0][0], grid[0][1], -1.0)
        groups: dict[int, list] = {}
        for f, q in grid:
            tau = q / (math.sqrt(2.0) * math.pi * f)
            half = 4.0 / (math.pi * tau)  # Hz: the Gaussian is down by e^-16 there
            k0 = max(int((f - half) / df), 0)
            k1 = min(math.ceil((f + half) / df) + 1, nfft // 2)
            m = 1 << max(math.ceil(math.log2(max(k1 - k0, 2))), 3)
            groups.setdefault(m, []).append((f, q, tau, k0, k1))
        for m, members in groups.items():
            bands = np.zeros((len(members), m), np.complex128)
            for i, (f, _q, tau, k0, k1) in enumerate(members):
                nu = np.arange(k0, k1) * df
                # DFT of the atom centred on sample 0 (continuous transform x fs, real),
                # scaled like complex_atom: sum of envelope^2 = fs tau sqrt(pi / 2)
                norm = math.sqrt(fs * tau * math.sqrt(math.pi / 2.0) / 2.0)
                gauss = np.exp(-((math.pi * tau * (nu - f)) ** 2))
                bands[i, : k1 - k0] = (
                    spectrum[k0:k1] * (fs * tau * math.sqrt(math.pi) / norm) * gauss
                )
            # |c| at centre sample j * nfft / m: the band's inverse FFT (its shift to zero
            # frequency only turns the phase)
            c = sfft.ifft(bands, axis=1) * (m / nfft)
            step = nfft / m
            centres = np.arange(math.ceil((n // 2 - w) / step), math.floor((n // 2 + w) / step) + 1)
            if len(centres) == 0:
                centres = np.array([round(n // 2 / step)])
            power = np.abs(c[:, centres % m]) ** 2
            i, k = np.unravel_index(int(np.argmax(power)), power.shape)
            if power[i, k] > best.snr2:
                f, q = members[i][0], members[i][1]
                best = Atom(float((centres[k] * step - n // 2) / fs), f, q, float(power[i, k]))
        return best

    def _refine(self, r: np.ndarray, atom: Atom, window: float) -> Atom:
        tau_max = len(r) / self.sample_rate / 6.0

        def cost(p):
            t, lf, lq = p
            if abs(t) > window + 0.01:
                return 0.0
            f, q = math.exp(lf), math.exp(lq)
            if not (self.min_frequency <= f <= 0.45 * self.sample_rate):
                return 0.0
            # Q stays near the dictionary's range: a needle-sharp "atom" is a line
            tau = q / (math.sqrt(2.0) * math.pi * f)
            if not (self.q_range[0] / 1.5 <= q <= self.q_range[1] * 1.5) or tau > tau_max:
                return 0.0
            return -(abs(atom_product(r, self.sample_rate, t, f, q)) ** 2)

        start = np.array([atom.time, math.log(atom.frequency), math.log(atom.q)])
        step = np.array([0.25 * atom.q / (math.sqrt(2) * math.pi * atom.frequency), 0.05, 0.15])
        simplex = np.vstack([start] + [start + np.diag(step)[i] for i in range(3)])
        res = minimize(
            cost,
            start,
            method="Nelder-Mead",
            options={"initial_simplex": simplex, "xatol": 1e-5, "fatol": 1e-3, "maxiter": 300},
        )
        if -res.fun <= atom.snr2:
            return atom
        t, lf, lq = res.x
        return Atom(float(t), math.exp(lf), math.exp(lq), float(-res.fun))

    def __call__(
        self,
        u: np.ndarray,
        window: float,
        frequency: float,
        notches: tuple[tuple[float, float], ...] = (),
    ) -> tuple[np.ndarray, list[Atom]]:
        """The witness glitch in ``u`` ``(L,)`` rebuilt from atoms centred within ``window`` s
        of the segment centre, searched around ``frequency`` Hz: ``(rebuilt (L,), atoms)``.
        The first atom is always kept (the trigger is there); later ones only above
        ``stop_snr2``.

        ``notches``: frequency intervals (Hz) the witness's whitening notched out (its
        spectral lines, e.g. mains in a magnetometer).  The glitch's energy there is
        missing from ``u`` but not from the strain it couples into, so the atoms are
        fitted to ``u`` outside the notches only and returned whole: the notch is
        filled in from the glitch's shape."""
        n = len(u)
        grid = self.grid(n, frequency)
        notch = _Notch(n, self.sample_rate, notches)
        atoms: list[Atom] = []
        whole: list[np.ndarray] = []
        seen: list[np.ndarray] = []
        rebuilt = np.zeros(n)
        u = notch(np.asarray(u, float))
        r = u
        while len(atoms) < self.max_atoms:
            found = self._loudest(r, grid, window)
            if atoms and found.snr2 < self.stop_snr2:
                break
            found = self._refine(r, found, window)
            a = complex_atom(n, self.sample_rate, found.time, found.frequency, found.q)
            atoms.append(found)
            whole += [a.real, a.imag]
            seen += [notch(a.real), notch(a.imag)]
            coef, *_ = np.linalg.lstsq(np.stack(seen, axis=1), u, rcond=None)
            rebuilt = np.stack(whole, axis=1) @ coef
            r = u - np.stack(seen, axis=1) @ coef
        return rebuilt, atoms


class _Notch:
    """Zeroes the frequency intervals ``notches`` (Hz) of ``n``-sample segments (an FFT
    of ``2 n``: no wrap-around); the identity when there are none."""

    def __init__(self, n: int, sample_rate: float, notches) -> None:
        self.n = n
        freqs = np.fft.rfftfreq(2 * n, 1.0 / sample_rate)
        keep = np.ones(len(freqs), bool)
        for lo, hi in notches:
            keep &= ~((freqs >= lo) & (freqs <= hi))
        self.keep = None if keep.all() else keep

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.keep is None:
            return x
        return np.fft.irfft(np.fft.rfft(x, 2 * self.n) * self.keep, 2 * self.n)[: self.n]
