"""The one Conditioner: resample -> whiten -> single-Q transform -> median-normalise.

Training data, batch inference, channel selection and the HTTP endpoint all
build this module from the same :class:`~glitchflow.config.SignalConfig`, so
there is one definition of a spectrogram in the project.

Time bookkeeping: for input that starts at GPS ``t0`` and lasts ``T`` seconds,
``edge = conditioner.edge_seconds`` is lost at each end (half the whitening
filter plus the Q-transform's wrap-around at the lowest row).  Output bin
``m`` starts at ``t0 + edge + m * time_step``; there are
``floor((T - 2 edge) / time_step)`` bins.  Pad segments with ``edge`` seconds
of neighbouring data to cover a span without edge artefacts.

The module keeps no state between calls (only constant buffers), so one
instance can serve concurrent requests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from glitchflow.config.signal import SignalConfig
from glitchflow.signal.qtransform import QTransform
from glitchflow.signal.resample import resample
from glitchflow.signal.whitening import (
    apply_whitening,
    filter_response,
    welch_psd,
    whiten_segment,
    whitening_filter,
)

#: fraction of a channel's native Nyquist frequency treated as usable band
USABLE_NYQUIST_FRACTION = 0.9


def _unit_scale(x: Tensor) -> tuple[Tensor, Tensor]:
    """Each channel's RMS about its mean ``(batch, channel, 1)`` (double; 1 for flat data)
    and ``x`` minus its mean brought to unit RMS in float32: whitening removes the mean
    and does not depend on a channel's scale, and strain (~1e-21) would underflow a
    float32 PSD (an offset left in would cost float32 digits).  One norm instead of
    ``std``: the same scale at a quarter of the cost."""
    centred = x - x.mean(dim=-1, keepdim=True)
    scale = torch.linalg.vector_norm(centred, dim=-1, keepdim=True)
    scale = scale / math.sqrt(max(x.shape[-1] - 1, 1))
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return scale, centred.float() * scale.reciprocal().float()


class Conditioner(nn.Module):
    """Raw multi-rate channels in, median-normalised Q-spectrograms ("SNR^2") out.

    Build with ``Conditioner(signal_config)``.  Use :meth:`stack` to resample
    channels at their native rates into one ``(batch, channel, time)`` tensor at
    ``signal.sample_rate``, then call the module with the native rates.
    """

    def __init__(self, signal: SignalConfig) -> None:
        super().__init__()
        self.signal = signal
        qt = signal.qtransform
        self.sample_rate = float(signal.sample_rate)
        self.qtransform = QTransform(
            qt.q,
            qt.frange,
            qt.n_freq,
            qt.time_step,
            self.sample_rate,
            reduction=qt.reduction,
            oversample=qt.oversample,
        )
        step = qt.time_step
        half_filter = signal.conditioning.filter_duration / 2
        # whitening loses half a filter per edge; round up to whole output bins so that
        # bins stay on the input's time_step grid
        self.whiten_edge = math.ceil(half_filter / step - 1e-9) * step
        self._lead = round((self.whiten_edge - half_filter) * self.sample_rate)
        self.edge_seconds = self.whiten_edge + self.qtransform.edge_seconds()

    # ----------------------------------------------------------------- geometry
    @property
    def time_step(self) -> float:
        return self.qtransform.time_step

    @property
    def frequencies(self) -> np.ndarray:
        """Row frequencies (Hz), shape ``(n_freq,)``."""
        return self.qtransform.frequencies.cpu().numpy()

    def n_bins(self, duration: float) -> int:
        """Output time bins for ``duration`` seconds of input."""
        usable = duration - 2 * self.edge_seconds
        return max(0, int(np.floor(usable / self.time_step + 1e-9)))

    def padded_duration(self, n_bins: int) -> float:
        """Input seconds needed for ``n_bins`` output bins."""
        return n_bins * self.time_step + 2 * self.edge_seconds

    # ----------------------------------------------------------------- stages
    def stack(self, channels: Sequence[Tensor], rates: Sequence[float]) -> Tensor:
        """Resample each ``(batch, time_c)`` channel from its rate to the analysis rate and
        stack them into ``(batch, channel, time)`` (resampled in float32, to ~4e-7 of each
        channel's peak; the input's dtype kept); lengths are cut to the shortest."""
        if len(channels) != len(rates):
            raise ValueError(f"{len(channels)} channels but {len(rates)} sample rates")
        out: list[Tensor | None] = [None] * len(channels)
        groups: dict[tuple[float, tuple], list[int]] = {}
        for i, (x, rate) in enumerate(zip(channels, rates)):
            groups.setdefault((float(rate), tuple(x.shape)), []).append(i)
        for (rate, _), members in groups.items():  # one resampling per rate
            batch = torch.stack([channels[i] for i in members], dim=-2)
            # in float32, as whitening and the Q-transform are (2-14x faster than double)
            done = resample(batch, rate, self.sample_rate, torch.float32)
            for k, i in enumerate(members):
                out[i] = done[..., k, :]
        n = min(x.shape[-1] for x in out)
        return torch.stack([x[..., :n] for x in out], dim=1)

    def band_limits(self, rates: Sequence[float], device=None) -> Tensor:
        """Usable upper frequency (Hz) per channel: 0.9 x the native Nyquist of channels
        up-sampled to the analysis rate; unlimited (infinity) for the others."""
        limits = [
            r / 2 * USABLE_NYQUIST_FRACTION if r < self.sample_rate else float("inf") for r in rates
        ]
        return torch.tensor(limits, dtype=torch.float64, device=device)

    def whiten(self, x: Tensor, rates: Sequence[float] | None = None) -> Tensor:
        """Whiten ``(batch, channel, time)`` at the analysis rate with a PSD estimated from
        ``x`` itself; returns data with ``filter_duration / 2`` cropped at each end."""
        return self.whiten_with_psd(x, rates)[0]

    def estimate_psd(self, x: Tensor) -> Tensor:
        """Welch PSD ``(batch, channel, freq)`` of ``x`` (batch, channel, time) at the analysis
        rate, in ``x``'s units^2 / Hz (double) on the ``1 / fftlength`` Hz grid: the PSD
        :meth:`whiten` would estimate, to keep and pass back as ``psd``."""
        scale, unit = _unit_scale(x.double())
        return self._welch(unit).double() * scale.square()

    def _welch(self, unit: Tensor) -> Tensor:
        """Welch PSD of unit-RMS data with the conditioning settings."""
        cfg = self.signal.conditioning
        return welch_psd(unit, self.sample_rate, cfg.fftlength, cfg.overlap, cfg.average)

    def kept_response(self, psd: Tensor, n: int, rates: Sequence[float] | None = None) -> Tensor:
        """The whitening filter of ``psd`` ``(channel, freq)`` (units^2 / Hz on the ``1 /
        fftlength`` Hz grid) for inputs of ``n`` samples, as a spectrum ``(channel, nfft //
        2 + 1)`` complex64 to pass to :meth:`forward` with that ``psd``.  It depends only
        on the PSD, ``n`` and the rates, so a caller that whitens many inputs with one kept
        PSD (the endpoint) builds it once per PSD version and saves each input the
        filter's design (an inverse FFT of ``n`` samples) and its FFT.  Designed in double
        in ``psd``'s units: whitening data at any scale with it is whitening them at unit
        scale with the filter times the scale."""
        cfg = self.signal.conditioning
        self._check_psd(psd, psd.shape[-2])
        limits = self.band_limits(rates, psd.device) if rates is not None else None
        fir = whitening_filter(
            psd.double().reshape(1, -1, psd.shape[-1]),
            1.0 / cfg.fftlength,
            n,
            self.sample_rate,
            cfg.filter_duration,
            cfg.highpass,
            limits,
        )[0]
        return filter_response(fir, n).to(torch.complex64)

    def _check_psd(self, psd: Tensor, n_channels: int) -> None:
        cfg = self.signal.conditioning
        n_freq = round(cfg.fftlength * self.sample_rate) // 2 + 1
        if psd.shape[-1] != n_freq or psd.shape[-2] != n_channels:
            raise ValueError(
                f"psd of shape {tuple(psd.shape)}: expected (..., {n_channels} channels, "
                f"{n_freq} bins of {1 / cfg.fftlength} Hz)"
            )

    def whiten_with_psd(
        self,
        x: Tensor,
        rates: Sequence[float] | None = None,
        psd: Tensor | None = None,
        response: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """:meth:`whiten`, and the PSD it used ``(batch, channel, freq)`` on a
        ``1 / fftlength`` Hz grid (to undo the whitening of a subtracted signal).

        ``psd``: a PSD to whiten with instead of one estimated from ``x`` (the endpoint's
        kept PSD), ``(channel, freq)`` or ``(batch, channel, freq)`` on the same grid, in
        ``x``'s units^2 / Hz; then ``x`` needs only the filter's edges, not a Welch span.
        ``response``: that PSD's filter from :meth:`kept_response` for ``x``'s length and
        ``rates`` (the same numbers as designing it here, to float32 rounding).
        """
        cfg = self.signal.conditioning
        # whitening does not depend on a channel's scale: bring every channel to unit
        # RMS (in double: strain is ~1e-21) and do the heavy FFTs in single precision
        x = x.double()
        scale, unit = _unit_scale(x)
        if psd is None:
            if response is not None:
                raise ValueError("a filter response needs the psd it was made from")
            psd = self._welch(unit)
        else:
            self._check_psd(psd, x.shape[1])
            if response is not None:
                ntaps = int(cfg.filter_duration * self.sample_rate)
                white = apply_whitening(unit, response * scale.float(), ntaps, self.sample_rate)
                return white, psd.to(x).expand(x.shape[0], -1, -1)
            psd = (psd.to(x) / scale.square()).float().expand(x.shape[0], -1, -1)
        limits = self.band_limits(rates, x.device) if rates is not None else None
        white = whiten_segment(
            unit,
            psd,
            1.0 / cfg.fftlength,
            self.sample_rate,
            cfg.filter_duration,
            cfg.highpass,
            band_limit=limits,
        )
        return white, psd.double() * scale.square()

    def transform(self, white: Tensor, rates: Sequence[float] | None = None) -> Tensor:
        """Q-transform data from :meth:`whiten` (trimmed to the bin grid and to whole bins);
        the wrap-around edge bins are cut.  Returns ``(batch, channel, n_freq, bins)``."""
        per_bin = self.qtransform.samples_per_bin
        white = white[..., self._lead :]
        n = (white.shape[-1] // per_bin) * per_bin
        limits = self.band_limits(rates, white.device) if rates is not None else None
        spec = self.qtransform(white[..., :n], limits)
        cut = round(self.qtransform.edge_seconds() / self.time_step)
        return spec[..., cut : spec.shape[-1] - cut]

    def tile_peaks(
        self, white: Tensor, threshold: float, rates: Sequence[float] | None = None
    ) -> list[list[np.ndarray]]:
        """Tiles above ``threshold`` SNR^2 at their own resolution in data from
        :meth:`whiten`: per batch and channel ``(k, 4)`` arrays ``[time, frequency (Hz),
        SNR^2, time resolution (s)]``, time in s from the first sample given to
        :meth:`forward` (so on the same clock as its bins); tiles in the edges that
        :meth:`forward` cuts are dropped."""
        per_bin = self.qtransform.samples_per_bin
        white = white[..., self._lead :]
        n = (white.shape[-1] // per_bin) * per_bin
        limits = self.band_limits(rates, white.device) if rates is not None else None
        found = self.qtransform.tile_peaks(white[..., :n], threshold, limits)
        q_edge = self.qtransform.edge_seconds()
        last = n / self.sample_rate - q_edge
        out = []
        for row in found:
            kept = []
            for tiles in row:
                keep = (tiles[:, 0] >= q_edge) & (tiles[:, 0] < last)
                shifted = tiles[keep].copy()
                shifted[:, 0] += self.whiten_edge
                kept.append(shifted)
            out.append(kept)
        return out

    def forward(
        self,
        x: Tensor,
        rates: Sequence[float] | None = None,
        psd: Tensor | None = None,
        response: Tensor | None = None,
    ) -> Tensor:
        """``(batch, channel, time)`` at the analysis rate -> ``(batch, channel, freq, bins)``.

        ``rates`` are the channels' native sample rates (Hz); rows above 0.9 x a
        channel's native Nyquist are zero.  Bin ``m`` starts ``edge_seconds + m *
        time_step`` after the first input sample.  ``psd``: whiten with it instead of a
        PSD estimated from ``x``, ``response``: its kept filter (see
        :meth:`whiten_with_psd`).
        """
        if x.ndim != 3:
            raise ValueError(f"expected (batch, channel, time), got shape {tuple(x.shape)}")
        if rates is not None and len(rates) != x.shape[1]:
            raise ValueError(f"{x.shape[1]} channels but {len(rates)} native rates")
        spec = self.transform(self.whiten_with_psd(x, rates, psd, response)[0], rates)
        return spec[..., : self.n_bins(x.shape[-1] / self.sample_rate)]

    def condition(self, channels: Sequence[Tensor], rates: Sequence[float]) -> Tensor:
        """Native-rate channels ``[(batch, time_c)]`` -> ``(batch, channel, freq, bins)``."""
        return self(self.stack(channels, rates), rates)
