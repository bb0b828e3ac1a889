"""Witness-to-strain glitch subtraction: localised witness, coupling FIR, per-glitch fit.

Everything here works on *whitened* data at the analysis rate ``fs`` (the one
Conditioner's whitening), where a linear coupling ``strain = H * witness`` is
the short filter ``G = W_strain H / W_witness`` and a glitch's SNR is the norm
of its samples.  For each witness trigger (time, duration from the
Conditioner's tiles):

1. **Localise** the witness glitch in a segment of ``clean.segment`` seconds.
   ``clean.localise = "atoms"`` (default) rebuilds it from sine-Gaussian atoms
   found by matching pursuit within the trigger's extent
   (:mod:`glitchflow.models.witness_atoms`): the witness's signal without its
   noise.  ``"mask"``: a cosine gate over the trigger's extent (plus
   ``gate_extra``, ramp ``gate_ramp``), then a spectral Wiener-like mask that
   drops frequency bins whose power is below ``mask_kappa`` x the gated noise
   power.  Without either the prediction would carry ``~2 B T`` degrees of
   witness noise into strain.
2. **Predict** the strain glitch with the channel's coupling ``G`` (stored as FIR
   taps at lags ``-fir_before .. +fir_after``): a pure delay times a smooth
   complex response (Gaussian bumps in log frequency), fitted by ridge-regularised
   least squares over training triggers, the delay by the best fit over a grid
   (:class:`CouplingEquations`; sums over GPS blocks merge exactly, so the fit
   distributes).  The smooth basis carries the response across frequencies where
   training glitches were sparse.
3. **Fit** the prediction and its Hilbert transform to the strain segment
   (the glitch-to-glitch gain and phase scatter of the coupling), and a local
   spectral tilt around the trigger's frequency (``fit_tilt``), and subtract when
   the fitted glitch's SNR is at least ``min_fit_snr``; a witness glitch that does
   not couple (witness-only) fits at noise level and is left alone.

Shapes: segments are ``(L,)`` with ``L = round(segment * fs)``; FIR taps
``(n_taps,)``; ``K`` bumps give ``2K`` real regressors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from glitchflow.models.coupling_fit import Fit, fit_columns, fit_glitch
from glitchflow.models.witness_atoms import AtomSearch

#: channel name (after the detector prefix) of the subtracted signal ``glitchflow clean``
#: writes beside the cleaned strain
SUBTRACTED = "GLITCHFLOW_SUBTRACTED"

#: format version of subtraction checkpoints
CHECKPOINT_VERSION = 1
KIND = "witness_subtraction"


@dataclass(frozen=True)
class Localiser:
    """Gate and spectral mask of a witness trigger's segment (times in s, rate in Hz)."""

    sample_rate: float
    segment: float
    gate_extra: float
    gate_ramp: float
    mask_kappa: float
    gate_q: float = 8.0
    method: str = "mask"
    atom_stop_snr2: float = 20.0
    atom_max: int = 4

    def half_width(self, duration: float, frequency: float | None) -> float:
        """Flat half-width (s): the trigger's extent, at least two e-folds of a
        sine-Gaussian of Q ``gate_q`` at ``frequency`` (low-frequency glitches ring long)."""
        half = duration / 2
        if frequency:
            half = max(half, 2 * self.gate_q / (math.sqrt(2) * math.pi * frequency))
        return half + self.gate_extra

    @property
    def n(self) -> int:
        return round(self.segment * self.sample_rate)

    def gate(self, duration: float, frequency: float | None = None) -> np.ndarray:
        """Cosine-ramped gate ``(L,)`` centred on the segment, flat over the trigger."""
        t = (np.arange(self.n) - self.n // 2) / self.sample_rate
        x = (np.abs(t) - self.half_width(duration, frequency)) / self.gate_ramp
        return np.where(x > 0, 0.5 + 0.5 * np.cos(np.pi * np.clip(x, 0, 1)), 1.0)

    def __call__(self, u: np.ndarray, duration: float, frequency: float | None = None, notches=()):
        """The witness glitch in the whitened segment ``u`` ``(L,)``, noise masked out
        (``method="mask"``) or rebuilt from sine-Gaussian atoms centred within the
        gate's flat part (``method="atoms"``, :mod:`glitchflow.models.witness_atoms`;
        ``notches``: the witness's spectral lines (Hz intervals) its whitening removed,
        filled in from the glitch's shape)."""
        if self.method == "atoms" and frequency:
            search = AtomSearch(self.sample_rate, self.atom_stop_snr2, self.atom_max)
            rebuilt, _ = search(u, self.half_width(duration, frequency), frequency, notches)
            return rebuilt
        g = self.gate(duration, frequency)
        spectrum = np.fft.rfft(u * g, 2 * self.n)
        noise = float(np.sum(g**2))  # expected |U|^2 of unit-variance white noise
        power = np.maximum(np.abs(spectrum) ** 2, 1e-300)
        keep = np.clip(1.0 - self.mask_kappa * noise / power, 0.0, None)
        return np.fft.irfft(spectrum * keep, 2 * self.n)[: self.n]


def segment_at(x: np.ndarray, start: int, n: int) -> np.ndarray:
    """``x[start:start + n]`` with zeros where it runs past either end."""
    out = np.zeros(n)
    a, b = max(start, 0), min(start + n, len(x))
    if b > a:
        out[a - start : b - start] = x[a:b]
    return out


def log_bumps(freqs: np.ndarray, first: float, ratio: float, count: int) -> np.ndarray:
    """``(count, len(freqs))`` Gaussian bumps in log frequency centred at ``first * ratio**k``
    Hz, each ``0.6 ln(ratio)`` wide: a smooth basis for transfer functions."""
    centres = first * ratio ** np.arange(count)
    width = 0.6 * np.log(ratio)
    with np.errstate(divide="ignore"):
        logf = np.log(np.maximum(freqs, 1e-3))
    return np.exp(-0.5 * ((logf[None, :] - np.log(centres)[:, None]) / width) ** 2)


@dataclass
class CouplingEquations:
    """Least-squares sums for one witness's coupling ``G(f) = exp(-2 pi i f tau) sum_k c_k
    B_k(f)``: a pure delay ``tau`` (searched over ``delays``, samples) times a smooth complex
    response on the bumps ``B_k`` (``basis``, on the rfft grid of ``2 L`` samples).

    Regressors ``q_k = B_k * m`` and ``i B_k * m`` (``2K``); ``R = sum q q^T`` does not
    depend on the delay, and ``X[:, d] = sum_t y(t) q(t - delays[d])`` is one correlation,
    so every delay is solved from the same sums.  Sums merge exactly across blocks.

    The per-trigger sums ``Rs`` ``(n, 2K, 2K)`` and ``Xs`` ``(n, 2K, D)`` are kept
    too (a few tens of kB per trigger): a coupling's gain scatters from glitch to
    glitch, and a plain sum lets that scatter leak into the response's *shape* (each
    frequency is pinned by the few glitches there).  :meth:`solve` with
    ``gain_iterations`` alternates per-trigger gains and the shared response.
    """

    basis: np.ndarray  # (K, n_freq)
    delays: np.ndarray  # (D,) samples, on a grid of 1 / oversample samples
    oversample: int = 1
    R: np.ndarray = None  # (2K, 2K)
    X: np.ndarray = None  # (2K, D)
    count: int = 0
    Rs: np.ndarray = None  # (n, 2K, 2K) per trigger
    Xs: np.ndarray = None  # (n, 2K, D) per trigger

    def __post_init__(self) -> None:
        k = 2 * len(self.basis)
        self.R = np.zeros((k, k)) if self.R is None else self.R
        self.X = np.zeros((k, len(self.delays))) if self.X is None else self.X
        self.Rs = np.zeros((0, k, k)) if self.Rs is None else self.Rs
        self.Xs = np.zeros((0, k, len(self.delays))) if self.Xs is None else self.Xs

    def add(self, m: np.ndarray, y: np.ndarray) -> None:
        """Add one trigger: localised witness ``m`` ``(L,)`` and whitened strain ``y`` ``(L,)``."""
        nfft = 2 * len(m)
        spec_m = np.fft.rfft(m, nfft)
        spec_q = np.concatenate([self.basis * spec_m, 1j * self.basis * spec_m])
        q = np.fft.irfft(spec_q, nfft)
        r = q @ q.T
        # the correlation at every lag on a grid of 1 / oversample samples (zero-padded
        # spectrum): a delay between samples is a linear phase the smooth response
        # would otherwise have to imitate
        up = nfft * self.oversample
        lags = np.round(self.delays * self.oversample).astype(int) % up
        spec = np.fft.rfft(y, nfft)[None] * spec_q.conj()
        x = np.fft.irfft(spec, up)[:, lags] * self.oversample
        self.R += r
        self.X += x
        self.Rs = np.concatenate([self.Rs, r[None]])
        self.Xs = np.concatenate([self.Xs, x[None]])
        self.count += 1

    def merge(self, other: CouplingEquations) -> CouplingEquations:
        return CouplingEquations(
            self.basis,
            self.delays,
            self.oversample,
            self.R + other.R,
            self.X + other.X,
            self.count + other.count,
            np.concatenate([self.Rs, other.Rs]),
            np.concatenate([self.Xs, other.Xs]),
        )

    def solve(
        self, ridge: float, gain_iterations: int = 0, smoothness: float = 0.0
    ) -> tuple[np.ndarray, float]:
        """``(coefficients (2K,), delay in samples)`` explaining the most strain power.

        The delay comes from the summed equations; then, with ``gain_iterations`` and
        per-trigger sums, each trigger's real gain ``g_i = x_i.c / c'R_i c`` and the
        response ``(sum g_i^2 R_i + penalty) c = sum g_i x_i`` are solved in turn, the
        gains normalised to a median of 1 (the per-glitch fit at subtraction time takes
        the gain anyway).  The penalty is ``ridge`` (towards zero) plus ``smoothness``
        on the second differences of neighbouring bumps' coefficients (towards a
        response that changes linearly in log frequency: where few training glitches
        pin the response, it continues the trend of its neighbours instead of
        shrinking), both relative to the mean power of the equations."""
        k = self.R.shape[0]
        if self.count == 0:
            return np.zeros(k), 0
        scale = np.trace(self.R) / k + 1e-300
        half = k // 2
        second = np.diff(np.eye(half), n=2, axis=0)  # (K - 2, K)
        curvature = np.kron(np.eye(2), second.T @ second)  # real and imaginary parts
        penalty = scale * (ridge * np.eye(k) + smoothness * curvature)
        coef = np.linalg.solve(self.R + penalty, self.X)  # (2K, D)
        best = int(np.argmax(np.sum(coef * self.X, axis=0)))
        c = coef[:, best]
        if gain_iterations and len(self.Rs) == self.count:
            x = self.Xs[:, :, best]  # (n, 2K)
            for _ in range(gain_iterations):
                power = np.einsum("i,nij,j->n", c, self.Rs, c)
                gains = np.where(power > 0, (x @ c) / np.maximum(power, 1e-300), 0.0)
                norm = np.median(np.abs(gains[gains != 0])) if np.any(gains) else 1.0
                gains = gains / norm
                lhs = np.einsum("n,nij->ij", gains**2, self.Rs)
                c = np.linalg.solve(lhs + penalty, gains @ x)
        return c, float(self.delays[best])

    def fir(self, coef: np.ndarray, delay: float, lags: np.ndarray) -> np.ndarray:
        """Taps of ``G`` at ``lags`` (samples)."""
        n_freq = self.basis.shape[1]
        nfft = 2 * (n_freq - 1)
        k = len(self.basis)
        response = (coef[:k, None] + 1j * coef[k:, None]) * self.basis
        shift = np.exp(-2j * np.pi * np.arange(n_freq) * delay / nfft)
        impulse = np.fft.irfft(response.sum(axis=0) * shift, nfft)
        return impulse[lags % nfft]


@dataclass
class SubtractionModel:
    """Per-witness coupling FIRs plus the settings that localise and fit (self-describing).

    Witnesses in ``arches`` couple as scattered light: their triggers mark where an
    arch is fitted in strain (:mod:`glitchflow.models.scatter_arches`), not a filter.

    ``firs[channel]`` are taps at ``lags`` samples of ``sample_rate`` Hz;
    ``settings`` is the ``clean`` config section used; ``signal`` the
    Conditioner's settings (the model only makes sense on data whitened by them).
    """

    strain_channel: str
    channels: list[str]
    firs: dict[str, np.ndarray]
    lags: np.ndarray
    sample_rate: float
    settings: dict
    signal: dict
    meta: dict = field(default_factory=dict)
    arches: list[str] = field(default_factory=list)  # witnesses fitted as scattered-light arches
    priors: dict[str, list[float]] = field(default_factory=dict)  # per witness, of the fit

    @property
    def localiser(self) -> Localiser:
        return localiser_from_settings(self.settings, self.sample_rate)

    def predict(self, channel: str, m: np.ndarray) -> np.ndarray:
        """Whitened strain ``(L,)`` predicted from the localised witness ``m`` ``(L,)``."""
        g = self.firs[channel]
        full = np.convolve(m, g)
        first = -int(self.lags[0])
        return full[first : first + len(m)]

    def fit(
        self, prediction: np.ndarray, y: np.ndarray, frequency: float | None = None,
        channel: str | None = None,
    ) -> Fit:  # fmt: skip
        """Least-squares fit of the prediction to the strain ``y``: its gain and, with
        ``settings["fit_quadrature"]`` (default), its phase (``[p, Hilbert(p)]``) and, with
        ``settings["fit_tilt"]`` and the trigger's ``frequency``, a local spectral tilt
        (``p`` filtered by ``ln(f / frequency)``, and its Hilbert pair): the coupling's
        gain may change across a glitch's band from one glitch to the next.  Each
        coefficient also fits one degree of freedom of noise (residual SNR ~ sqrt(k));
        with the ``channel``'s entry in ``priors`` the non-gain coefficients are shrunk
        toward the coupling's usual shape (:mod:`glitchflow.models.coupling_fit`).
        Coefficients reported: gain and quadrature (0 when not fitted)."""
        basis, quadrature = fit_columns(
            prediction,
            self.sample_rate,
            frequency,
            bool(self.settings.get("fit_tilt")),
            bool(self.settings.get("fit_quadrature", True)),
        )
        return fit_glitch(basis, y, quadrature, self.priors.get(channel))

    def group_delay(self, channel: str, band: tuple[float, float] = (40.0, 250.0)) -> float:
        """Group delay (s) of a channel's coupling over ``band`` (Hz): the slope of its
        unwrapped phase (strain after witness is positive)."""
        freqs = np.linspace(band[0], band[1], 64)
        response = np.exp(-2j * np.pi * freqs[:, None] * self.lags[None, :] / self.sample_rate)
        phase = np.unwrap(np.angle(response @ self.firs[channel]))
        return float(-np.polyfit(2 * np.pi * freqs, phase, 1)[0])

    # ------------------------------------------------------------ checkpoint
    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {
            "kind": KIND,
            "version": CHECKPOINT_VERSION,
            "strain_channel": self.strain_channel,
            "channels": list(self.channels),
            "firs": {c: torch.from_numpy(np.asarray(self.firs[c])) for c in self.channels},
            "lags": torch.from_numpy(np.asarray(self.lags)),
            "sample_rate": self.sample_rate,
            "settings": self.settings,
            "signal": self.signal,
            "meta": self.meta,
            "arches": list(self.arches),
            "priors": dict(self.priors),
        }
        tmp = path.with_name(path.name + ".tmp")
        torch.save(state, tmp)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> SubtractionModel:
        """Load and validate a checkpoint written by :meth:`save`."""
        state = torch.load(path, map_location="cpu", weights_only=False)
        if not isinstance(state, dict) or state.get("kind") != KIND:
            raise ValueError(f"{path}: not a glitchflow subtraction checkpoint")
        if state.get("version") != CHECKPOINT_VERSION:
            raise ValueError(
                f"{path}: subtraction checkpoint version {state.get('version')}, "
                f"this glitchflow reads {CHECKPOINT_VERSION}"
            )
        missing = [c for c in state["channels"] if c not in state["firs"]]
        if missing:
            raise ValueError(f"{path}: no coupling FIR for channels {missing}")
        return cls(
            state["strain_channel"],
            list(state["channels"]),
            {c: state["firs"][c].numpy() for c in state["channels"]},
            state["lags"].numpy(),
            float(state["sample_rate"]),
            dict(state["settings"]),
            dict(state["signal"]),
            dict(state.get("meta", {})),
            list(state.get("arches", [])),
            dict(state.get("priors", {})),
        )


def localiser_from_settings(settings: dict, sample_rate: float) -> Localiser:
    """The :class:`Localiser` of the ``clean`` settings (a config section or a
    checkpoint's; checkpoints written before the atoms localise by mask)."""
    s = settings
    return Localiser(
        sample_rate,
        s["segment"],
        s["gate_extra"],
        s["gate_ramp"],
        s["mask_kappa"],
        s.get("gate_q", 8.0),
        s.get("localise", "mask"),
        s.get("atom_stop_snr2", 20.0),
        s.get("atom_max", 4),
    )


def coupling_equations(settings: dict, sample_rate: float) -> CouplingEquations:
    """Empty :class:`CouplingEquations` for the ``clean`` settings."""
    n = round(settings["segment"] * sample_rate)
    freqs = np.fft.rfftfreq(2 * n, 1.0 / sample_rate)
    first, ratio, count = settings["coupling_bumps"]
    basis = log_bumps(freqs, first, ratio, int(count))
    lo, hi = settings["coupling_delays"]
    over = int(settings.get("delay_oversample", 1))
    delays = np.arange(round(lo * sample_rate * over), round(hi * sample_rate * over) + 1) / over
    return CouplingEquations(basis, delays, over)


def fir_lags(before: float, after: float, sample_rate: float) -> np.ndarray:
    """Integer sample lags ``-before .. +after`` (s) of a coupling FIR."""
    return np.arange(-round(before * sample_rate), round(after * sample_rate) + 1)
