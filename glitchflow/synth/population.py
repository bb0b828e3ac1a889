"""Draw the twin's glitch populations and scale each one to its target SNR.

Each family is a Poisson process over the span with its own seeded stream
(``SeedSequence([seed, family_index])``), so changing one family's rate does
not move another family's glitches.  Amplitudes are set from SNRs computed
against the channel PSDs, so ``strain_snr`` in the truth catalogue is the
optimal SNR the glitch really has in the written strain.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from glitchflow.config.twin import TwinConfig
from glitchflow.synth.noise import PsdFunction, snr
from glitchflow.synth.waveforms import Component, render

#: Hz; the linear couplings are high-passed below this (no coupling of seismic drifts)
COUPLING_HIGHPASS = 10.0


@dataclass(frozen=True)
class AsdRatioTransfer:
    """The linear families' coupling shape ``|H(f)| = ASD_strain(f) / ASD_witness(f)``,
    high-passed at ``COUPLING_HIGHPASS`` (4th order, zero phase).

    A fixed (LTI) transfer function, chosen so that a witness glitch and the
    strain glitch it causes have the same SNR ratio at every frequency: the
    family's ``witness_snr_ratio`` means what it says, and whitened strain is the
    whitened witness times a constant (and the environmental low-pass).
    """

    strain_psd: PsdFunction
    witness_psd: PsdFunction

    def __call__(self, freqs: np.ndarray) -> np.ndarray:
        f = np.asarray(freqs, dtype=float)
        ratio = np.sqrt(self.strain_psd(f) / self.witness_psd(f))
        x = (f / COUPLING_HIGHPASS) ** 4
        return ratio * x / (1.0 + x)


FAMILIES = ("blip", "scattered_light", "environmental", "unwitnessed", "witness_only", "decoy")


@dataclass
class Glitch:
    """One injected glitch: its truth-catalogue fields and its per-channel components."""

    id: int
    family: str
    gps_peak: float
    duration: float
    frequency: float
    q: float
    strain_snr: float = 0.0
    witnesses: list[str] = field(default_factory=list)
    witness_snrs: list[float] = field(default_factory=list)
    coupling: float = 0.0
    components: list[Component] = field(default_factory=list)

    def truth_row(self) -> dict:
        return {
            "id": self.id,
            "family": self.family,
            "gps_peak": round(self.gps_peak, 6),
            "duration": round(float(self.duration), 6),
            "frequency": round(self.frequency, 4),
            "q": round(self.q, 4),
            "strain_snr": round(self.strain_snr, 4),
            "witnesses": ";".join(self.witnesses),
            "witness_snrs": ";".join(f"{s:.4f}" for s in self.witness_snrs),
            "coupling": float(f"{self.coupling:.6g}"),
            "channels": ";".join(sorted({c.channel for c in self.components})),
        }


def _power_law(rng: np.random.Generator, low: float, high: float, index: float) -> float:
    u = rng.uniform()
    if high == low:
        return low
    if abs(index - 1.0) < 1e-9:
        return float(low * (high / low) ** u)
    a = 1.0 - index
    return float((low**a + u * (high**a - low**a)) ** (1.0 / a))


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


class PopulationBuilder:
    """Builds the glitch list for one twin realisation.

    ``psds`` maps channel name (strain included) to its one-sided PSD;
    ``rates`` maps channel name to sample rate (Hz).
    """

    def __init__(
        self,
        cfg: TwinConfig,
        seed: int,
        strain_channel: str,
        psds: dict[str, PsdFunction],
        rates: dict[str, float],
    ) -> None:
        self.cfg = cfg
        self.seed = seed
        self.strain = strain_channel
        self.psds = psds
        self.rates = rates
        self.derived = [c.name for c in cfg.channels if c.strain_derived]

    def _snr(self, comp: Component) -> float:
        """Optimal SNR of ``comp`` as it is (amplitude included) in its channel."""
        _, values = render(comp, comp.t_peak, self.rates[comp.channel])
        return snr(values, self.rates[comp.channel], self.psds[comp.channel])

    def _at_snr(self, comp: Component, target: float) -> Component:
        return comp.scaled(target / self._snr(comp.scaled(1.0)))

    def _strain_derived(self, strain_comp: Component) -> list[Component]:
        """Copies of a strain component in strain-derived channels (e.g. DARM error)."""
        out = []
        for name in self.derived:
            unit = strain_comp.scaled(1.0, channel=name)
            out.append(self._at_snr(unit, self._snr(strain_comp)))
        return out

    def build(self) -> list[Glitch]:
        glitches: list[Glitch] = []
        cfg = self.cfg
        margin = 4.0
        for index, family in enumerate(FAMILIES):
            spec = getattr(cfg.families, family)
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, index]))
            count = rng.poisson(spec.rate * cfg.duration)
            times = np.sort(rng.uniform(cfg.gps_start + margin, cfg.gps_end - margin, count))
            for t in times:
                glitches.append(getattr(self, "_" + family)(rng, float(t), spec))
        glitches.sort(key=lambda g: g.gps_peak)
        for i, g in enumerate(glitches):
            g.id = i
        return glitches

    # ----------------------------------------------------------------- families
    def _sg_params(self, rng, spec) -> tuple[float, float, float]:
        f = _log_uniform(rng, *spec.frequency)
        q = float(rng.uniform(*spec.q))
        return f, q, float(rng.uniform(0, 2 * np.pi))

    def _witness_snr(self, rng, strain_snr: float, spec) -> float:
        return (
            strain_snr * spec.witness_snr_ratio * float(np.exp(rng.normal(0, spec.ratio_scatter)))
        )

    def _linear(self, rng, t, spec, family, corner: float = 0.0) -> Glitch:
        """A witness sine-Gaussian and the strain glitch it causes through a fixed linear
        coupling (:class:`AsdRatioTransfer`, and a two-pole low-pass at ``corner`` Hz
        when > 0); the gain scatters from glitch to glitch by ``ratio_scatter``."""
        f, q, phase = self._sg_params(rng, spec)
        transfer = AsdRatioTransfer(self.psds[self.strain], self.psds[spec.witness])
        rho = _power_law(rng, spec.snr.low, spec.snr.high, spec.snr.index)
        delay = getattr(spec, "delay", 0.0)
        strain_params = (f, q, phase, corner, transfer)
        strain = Component(self.strain, "coupled_sine_gaussian", 1.0, t + delay, strain_params)
        strain = self._at_snr(strain, rho)
        w_snr = self._witness_snr(rng, rho, spec)
        witness = Component(spec.witness, "sine_gaussian", 1.0, t, (f, q, phase))
        witness = self._at_snr(witness, w_snr)
        tau = q / (np.sqrt(2) * np.pi * f)
        return Glitch(
            0,
            family,
            t + delay,
            4 * tau,
            f,
            q,
            rho,
            [spec.witness],
            [w_snr],
            strain.amplitude / witness.amplitude,
            [strain, witness, *self._strain_derived(strain)],
        )

    def _blip(self, rng, t, spec) -> Glitch:
        return self._linear(rng, t, spec, "blip")

    def _environmental(self, rng, t, spec) -> Glitch:
        return self._linear(rng, t, spec, "environmental", spec.corner)

    def _scattered_light(self, rng, t, spec) -> Glitch:
        f_fringe = float(rng.uniform(*spec.fringe_frequency))
        f_motion = float(rng.uniform(*spec.motion_frequency))
        duration = float(rng.uniform(*spec.duration))
        phase = float(rng.uniform(0, 2 * np.pi))
        burst_seed = int(rng.integers(2**31))
        params = (f_fringe, f_motion, duration, phase, spec.wavelength, burst_seed)
        rho = _power_law(rng, spec.snr.low, spec.snr.high, spec.snr.index)
        strain = self._at_snr(Component(self.strain, "scatter_fringe", 1.0, t, params), rho)
        w_snr = self._witness_snr(rng, rho, spec)
        witness = self._at_snr(Component(spec.witness, "scatter_motion", 1.0, t, params), w_snr)
        return Glitch(
            0,
            "scattered_light",
            t,
            duration,
            f_fringe,
            0.0,
            rho,
            [spec.witness],
            [w_snr],
            strain.amplitude / witness.amplitude,
            [strain, witness, *self._strain_derived(strain)],
        )

    def _unwitnessed(self, rng, t, spec) -> Glitch:
        f, q, phase = self._sg_params(rng, spec)
        rho = _power_law(rng, spec.snr.low, spec.snr.high, spec.snr.index)
        strain = self._at_snr(Component(self.strain, "sine_gaussian", 1.0, t, (f, q, phase)), rho)
        tau = q / (np.sqrt(2) * np.pi * f)
        return Glitch(
            0,
            "unwitnessed",
            t,
            4 * tau,
            f,
            q,
            rho,
            [],
            [],
            0.0,
            [strain, *self._strain_derived(strain)],
        )

    def _in_channel(self, rng, t, spec, family) -> Glitch:
        f, q, phase = self._sg_params(rng, spec)
        channel = spec.channels[int(rng.integers(len(spec.channels)))]
        rho = _power_law(rng, spec.snr.low, spec.snr.high, spec.snr.index)
        comp = self._at_snr(Component(channel, "sine_gaussian", 1.0, t, (f, q, phase)), rho)
        tau = q / (np.sqrt(2) * np.pi * f)
        return Glitch(0, family, t, 4 * tau, f, q, 0.0, [channel], [rho], 0.0, [comp])

    def _witness_only(self, rng, t, spec) -> Glitch:
        return self._in_channel(rng, t, spec, "witness_only")

    def _decoy(self, rng, t, spec) -> Glitch:
        return self._in_channel(rng, t, spec, "decoy")
