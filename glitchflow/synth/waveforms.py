"""Glitch waveforms of the twin, rendered on any channel's sample grid.

A :class:`Component` is one glitch as seen by one channel.  ``render`` gives
its samples on the grid ``t_k = epoch + k / sample_rate`` over the
component's support, so frames at different sample rates line up exactly.
Amplitudes are in the channel's units; shapes have unit peak before scaling.

Shapes
------
``sine_gaussian``            ``exp(-(t-t0)^2/tau^2) cos(2 pi f (t-t0) + phi)``,
                             ``tau = Q/(sqrt2 pi f)``
``lowpassed_sine_gaussian``  the same through ``H(f) = 1 / (1 + i f/fc)^2``
``coupled_sine_gaussian``    a witness's sine-Gaussian through a coupling transfer function
                             ``H(f) = transfer(f) / (1 + i f/fc)^2`` (``fc = 0``: no low-pass):
                             how a linearly witnessed glitch appears in strain
``scatter_fringe``           ``w(t) sin(4 pi x(t)/lambda + phi)``: scattered-light arches in strain
``scatter_motion``           ``x(t)`` plus a band-limited burst: the witness's motion transient
with ``x(t) = A_x w(t) sin(2 pi f_m (t-t0))``, ``A_x = f_fringe lambda / (4 pi f_m)`` and
``w`` a Hann envelope of the burst duration, so the arch frequency ``2|v|/lambda`` peaks
near ``f_fringe``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: extra support (s) each side for the ringing of a coupling transfer function
COUPLING_RING_SECONDS = 0.25


@dataclass(frozen=True)
class Component:
    """One glitch in one channel.

    ``params`` (by shape): sine_gaussian ``(f, q, phase)``; lowpassed_sine_gaussian
    ``(f, q, phase, corner)``; coupled_sine_gaussian ``(f, q, phase, corner, transfer)``
    with ``transfer(freqs_Hz) -> response`` (a callable); scatter_fringe / scatter_motion
    ``(f_fringe, f_motion, duration, phase, wavelength, burst_seed)``.
    """

    channel: str
    shape: str
    amplitude: float
    t_peak: float
    params: tuple

    def support(self) -> tuple[float, float]:
        """GPS interval (s) outside which the waveform is negligible (< 1e-6 of peak)."""
        if self.shape in ("sine_gaussian", "lowpassed_sine_gaussian", "coupled_sine_gaussian"):
            f, q = self.params[0], self.params[1]
            half = 4.0 * q / (np.sqrt(2.0) * np.pi * f)
            if self.shape != "sine_gaussian" and self.params[3] > 0:
                half += 8.0 / (2 * np.pi * self.params[3])
            if self.shape == "coupled_sine_gaussian":
                half += COUPLING_RING_SECONDS
            return self.t_peak - half, self.t_peak + half
        duration = self.params[2]
        return self.t_peak - duration / 2, self.t_peak + duration / 2

    def scaled(self, amplitude: float, channel: str | None = None, delay: float = 0.0):
        return Component(
            channel or self.channel, self.shape, amplitude, self.t_peak + delay, self.params
        )


def render(comp: Component, epoch: float, sample_rate: float) -> tuple[int, np.ndarray]:
    """Samples of ``comp`` on the grid ``epoch + k / sample_rate`` over its support.

    Returns ``(k0, values)``: the first grid index and ``values`` (float64,
    channel units) for indices ``k0 .. k0 + len(values) - 1``.
    """
    lo, hi = comp.support()
    k0 = int(np.floor((lo - epoch) * sample_rate))
    k1 = int(np.ceil((hi - epoch) * sample_rate)) + 1
    t = epoch + np.arange(k0, k1) / sample_rate - comp.t_peak
    return k0, comp.amplitude * _SHAPES[comp.shape](t, sample_rate, comp.params)


def _sine_gaussian(t: np.ndarray, _fs: float, p: tuple) -> np.ndarray:
    f, q, phase = p[:3]
    tau = q / (np.sqrt(2.0) * np.pi * f)
    return np.exp(-((t / tau) ** 2)) * np.cos(2 * np.pi * f * t + phase)


def _lowpassed_sine_gaussian(t: np.ndarray, fs: float, p: tuple) -> np.ndarray:
    corner = p[3]
    x = _sine_gaussian(t, fs, p)
    n = 2 * len(x)  # zero-pad against wrap-around
    freqs = np.fft.rfftfreq(n, 1.0 / fs)
    response = 1.0 / (1.0 + 1j * freqs / corner) ** 2
    return np.fft.irfft(np.fft.rfft(x, n) * response, n)[: len(x)]


def _coupled_sine_gaussian(t: np.ndarray, fs: float, p: tuple) -> np.ndarray:
    f, q, phase, corner, transfer = p
    x = _sine_gaussian(t, fs, (f, q, phase))
    n = 2 * len(x)  # zero-pad against wrap-around; the zero-phase part wraps to the end
    freqs = np.fft.rfftfreq(n, 1.0 / fs)
    response = np.asarray(transfer(freqs), dtype=complex)
    if corner > 0:
        response = response / (1.0 + 1j * freqs / corner) ** 2
    return np.fft.irfft(np.fft.rfft(x, n) * response, n)[: len(x)]


def _hann_envelope(t: np.ndarray, duration: float) -> np.ndarray:
    inside = np.abs(t) < duration / 2
    return np.where(inside, np.cos(np.pi * t / duration) ** 2, 0.0)


def _motion(t: np.ndarray, p: tuple) -> np.ndarray:
    f_fringe, f_motion, duration, _phase, wavelength, _seed = p
    amplitude = f_fringe * wavelength / (4 * np.pi * f_motion)
    return amplitude * _hann_envelope(t, duration) * np.sin(2 * np.pi * f_motion * t)


def _scatter_fringe(t: np.ndarray, _fs: float, p: tuple) -> np.ndarray:
    phase, wavelength = p[3], p[4]
    fringe = np.sin(4 * np.pi * _motion(t, p) / wavelength + phase) - np.sin(phase)
    return _hann_envelope(t, p[2]) * fringe


def _scatter_motion(t: np.ndarray, fs: float, p: tuple) -> np.ndarray:
    """Motion x(t) (m, unit = the physical amplitude) plus a burst band-limited to 8 Hz..f_fringe.

    The burst carries the in-band (>= 8 Hz) part of the motion transient; its
    peak amplitude equals the motion amplitude before the component is scaled.
    """
    f_fringe, duration, seed = p[0], p[2], p[5]
    motion = _motion(t, p)
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(len(t))
    freqs = np.fft.rfftfreq(len(t), 1.0 / fs)
    band = (freqs >= 8.0) & (freqs <= max(f_fringe, 12.0))
    burst = np.fft.irfft(np.fft.rfft(noise) * band, len(t)) * _hann_envelope(t, duration)
    peak = np.max(np.abs(burst)) or 1.0
    scale = np.max(np.abs(motion)) or 1.0
    return motion + burst * (scale / peak)


_SHAPES = {
    "sine_gaussian": _sine_gaussian,
    "lowpassed_sine_gaussian": _lowpassed_sine_gaussian,
    "coupled_sine_gaussian": _coupled_sine_gaussian,
    "scatter_fringe": _scatter_fringe,
    "scatter_motion": _scatter_motion,
}
