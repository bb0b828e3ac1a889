"""Witness-to-strain glitch subtraction: localised witness, coupling FIR, per-glitch fit.

Everything here works on *whitened* data at the analysis rate ``fs`` (the one
Conditioner's whitening), where a linear coupling ``strain = H * witness`` is
the short filter ``G = W_strain H / W_witness`` and a glitch's SNR is the norm
of its samples.  For each witness trigger (time, duration from the
Conditioner's tiles):

1. **Localise** the witness glitch in a segment of ``clean.segment`` seconds:
   a cosine gate over the trigger's extent (plus ``gate_extra``, ramp
   ``gate_ramp``), then a spectral Wiener-like mask that drops frequency bins
   whose power is below ``mask_kappa`` x the gated noise power.  Without it the
   prediction would carry ``~2 B T`` degrees of witness noise into strain.
2. **Predict** the strain glitch with the channel's coupling FIR ``g`` (taps at
   lags ``-fir_before .. +fir_after``), fitted by ridge-regularised least
   squares over training triggers (normal equations summed over GPS blocks,
   so the fit distributes and merges exactly); the ridge grows with lag, which
   keeps ``G`` smooth in frequency where training glitches were sparse.
3. **Fit** the prediction and its Hilbert transform to the strain segment
   (two coefficients: the glitch-to-glitch gain and phase scatter of the
   coupling) and subtract when the fitted glitch's SNR is at least
   ``min_fit_snr``; a witness glitch that does not couple (witness-only) fits
   at noise level and is left alone.

Shapes: segments are ``(L,)`` with ``L = round(segment * fs)``; FIR taps
``(n_taps,)``; normal equations ``R (n_taps, n_taps)``, ``b (n_taps,)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy.linalg import toeplitz
from scipy.signal import hilbert

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

    @property
    def n(self) -> int:
        return round(self.segment * self.sample_rate)

    def gate(self, duration: float) -> np.ndarray:
        """Cosine-ramped gate ``(L,)`` centred on the segment, flat over the trigger."""
        t = (np.arange(self.n) - self.n // 2) / self.sample_rate
        x = (np.abs(t) - (duration / 2 + self.gate_extra)) / self.gate_ramp
        return np.where(x > 0, 0.5 + 0.5 * np.cos(np.pi * np.clip(x, 0, 1)), 1.0)

    def __call__(self, u: np.ndarray, duration: float) -> np.ndarray:
        """The witness glitch in the whitened segment ``u`` ``(L,)``, noise masked out."""
        g = self.gate(duration)
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


@dataclass
class NormalEquations:
    """Least-squares sums for one channel's coupling FIR: ``R g = b`` (lags ``lags``)."""

    lags: np.ndarray  # (n_taps,) integer sample lags
    R: np.ndarray = None  # (n_taps, n_taps)
    b: np.ndarray = None  # (n_taps,)
    count: int = 0

    def __post_init__(self) -> None:
        n = len(self.lags)
        self.R = np.zeros((n, n)) if self.R is None else self.R
        self.b = np.zeros(n) if self.b is None else self.b

    def add(self, m: np.ndarray, y: np.ndarray) -> None:
        """Add one trigger: localised witness ``m`` ``(L,)`` and whitened strain ``y`` ``(L,)``."""
        nfft = 2 * len(m)
        spec_m = np.fft.rfft(m, nfft)
        auto = np.fft.irfft(np.abs(spec_m) ** 2, nfft)
        cross = np.fft.irfft(np.fft.rfft(y, nfft) * spec_m.conj(), nfft)
        self.R += toeplitz(auto[np.arange(len(self.lags))])
        self.b += cross[self.lags % nfft]
        self.count += 1

    def merge(self, other: NormalEquations) -> NormalEquations:
        return NormalEquations(
            self.lags, self.R + other.R, self.b + other.b, self.count + other.count
        )

    def solve(self, ridge: float, lag_scale_samples: float) -> np.ndarray:
        """Ridge solution; the penalty on tap ``k`` is ``ridge * mean(diag R) * (1 + (k/s)^2)``."""
        n = len(self.lags)
        if self.count == 0:
            return np.zeros(n)
        scale = ridge * np.trace(self.R) / n
        penalty = scale * (1.0 + (self.lags / lag_scale_samples) ** 2) + 1e-12
        return np.linalg.solve(self.R + np.diag(penalty), self.b)


@dataclass
class Fit:
    """One trigger's fit: the fitted strain glitch ``(L,)``, its SNR and the two coefficients."""

    fitted: np.ndarray
    snr: float
    coefficients: tuple[float, float]


@dataclass
class SubtractionModel:
    """Per-witness coupling FIRs plus the settings that localise and fit (self-describing).

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

    @property
    def localiser(self) -> Localiser:
        s = self.settings
        return Localiser(
            self.sample_rate, s["segment"], s["gate_extra"], s["gate_ramp"], s["mask_kappa"]
        )

    def predict(self, channel: str, m: np.ndarray) -> np.ndarray:
        """Whitened strain ``(L,)`` predicted from the localised witness ``m`` ``(L,)``."""
        g = self.firs[channel]
        full = np.convolve(m, g)
        first = -int(self.lags[0])
        return full[first : first + len(m)]

    @staticmethod
    def fit(prediction: np.ndarray, y: np.ndarray) -> Fit:
        """Least-squares fit of ``[prediction, Hilbert(prediction)]`` to the strain ``y``."""
        basis = np.stack([prediction, np.imag(hilbert(prediction))], axis=1)
        coef, *_ = np.linalg.lstsq(basis, y, rcond=None)
        fitted = basis @ coef
        return Fit(fitted, math.sqrt(max(float(fitted @ y), 0.0)), (float(coef[0]), float(coef[1])))

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
        )


def fir_lags(before: float, after: float, sample_rate: float) -> np.ndarray:
    """Integer sample lags ``-before .. +after`` (s) of a coupling FIR."""
    return np.arange(-round(before * sample_rate), round(after * sample_rate) + 1)
