"""The decision engine behind the endpoint: raw time series in, veto / denoise out.

No Ray and no HTTP here: :class:`DecisionEngine` is built from a checkpoint and
does what batch inference does for one window, for a batch of requests at once.

Request geometry (all GPS seconds; ``edge`` = the Conditioner's edge, ``unit``
= the shortest span holding whole samples of every integer rate and whole
output bins, 3 s for the default 3/128 s bins):

* ``pad_before = ceil(edge / unit) * unit``, ``pad_after = edge``;
* a request carries every channel from ``gps_start`` for ``pad_before + window
  + pad_after`` seconds, i.e. ``ceil(duration * rate)`` samples at the
  channel's native rate;
* the decision covers ``[gps_start + pad_before, + window)``.

This is exactly the span and arithmetic that ``glitchflow infer`` uses for a
window starting on its stride grid, so both give the same decision for it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from glitchflow.config import ServePsdConfig, SignalConfig
from glitchflow.config.base import validate_model
from glitchflow.io.span import Segment
from glitchflow.io.windows import ReadGrid
from glitchflow.models.checkpoint import Checkpoint
from glitchflow.models.decisions import WindowDecision
from glitchflow.models.inference import Predictor
from glitchflow.pipelines.clean_block import clean_segment
from glitchflow.serve.psd_keeper import PsdKeeper
from glitchflow.signal.conditioner import Conditioner

#: samples beyond this magnitude overflow the whitening's power spectrum (squares of 1e154)
MAX_ABS_SAMPLE = 1e100


#: kept-PSD whitening filters an engine holds (per version, channel set and length)
KEPT_FILTERS = 8


class RequestError(ValueError):
    """Bad request content; ``field`` names the offending field."""

    def __init__(self, field: str, message: str, status: int = 422) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.status = status


@dataclass
class WindowRequest:
    """One validated request: GPS start and ``{channel: float64 samples}``."""

    gps_start: float
    data: dict[str, np.ndarray]
    want_spectrograms: bool = False
    want_cleaned_strain: bool = False


class DecisionEngine:
    """Checkpoint -> Conditioner + Predictor; batches of :class:`WindowRequest` -> decisions.

    Args:
        ckpt: self-describing checkpoint.
        window: analysed window (s); None: the checkpoint's training window.
        device: torch device.
        snr2_threshold, min_area: decision thresholds; None: the checkpoint's.
        crop_hop, tiling: as ``infer.crop_hop`` and ``infer.tiling`` (equal settings, equal
            answers).
        psd: which PSD requests are whitened with (``serve.psd``); None: each request's own.
        subtraction: ``(SubtractionModel, description)`` from
            :func:`~glitchflow.tracking.model_store.resolve_subtraction`, or None: denoise
            requests then also get the witnessed glitches subtracted from strain.
    """

    def __init__(
        self,
        ckpt: Checkpoint,
        window: float | None = None,
        device: str = "cpu",
        snr2_threshold: float | None = None,
        min_area: int | None = None,
        crop_hop: float = 0.5,
        subtraction: tuple | None = None,
        tiling: str = "window",
        psd: ServePsdConfig | None = None,
    ) -> None:
        self.ckpt = ckpt
        self.signal = ckpt.signal
        self.cond = Conditioner(self.signal).to(device)
        self.predictor = Predictor(ckpt, device, crop_hop, snr2_threshold, min_area, tiling=tiling)
        self.device = device
        self.channels = list(ckpt.channels)
        self.rates = dict(ckpt.sample.rates)
        missing = [c for c in self.channels if c not in self.rates]
        if missing:
            raise ValueError(f"the checkpoint has no sample rate for {missing}; retrain with it")
        step = self.cond.time_step
        self.window = float(window or ckpt.sample.window)
        self.bins = round(self.window / step)
        if abs(self.bins * step - self.window) > 1e-9 or self.bins < self.predictor.crop:
            raise ValueError(
                f"window {self.window} s must be a multiple of {step} s and at least "
                f"{self.predictor.crop} bins"
            )
        grid = ReadGrid.of(self.cond)  # the read arithmetic of infer and online
        self.pad_before = grid.pad_before
        self.pad_after = grid.edge
        self.first_bin = grid.first_bin(self.pad_before, 0.0)
        self.frequencies = self.cond.frequencies[self.predictor.rows]
        self.psd_keeper = None
        #: whitening filters of the kept PSDs, by (version, channels, samples)
        self._kept_filters: dict[tuple, torch.Tensor] = {}
        if psd is not None and psd.mode == "kept":
            self.psd_keeper = PsdKeeper(
                self.channels, psd.refresh_s, psd.depth, psd.sample_every, psd.min_requests
            )
        self.subtraction = None
        if subtraction is not None:
            sub, described = subtraction
            missing = [c for c in sub.channels if c not in self.channels[1:]]
            if sub.strain_channel != self.channels[0] or missing:
                raise ValueError(
                    f"subtraction model {described['uri']}: strain {sub.strain_channel} and "
                    f"witnesses {sub.channels} must be channels of the veto model "
                    f"({self.channels}); missing {missing}"
                )
            sub_cond = Conditioner(validate_model(SignalConfig, sub.signal, "subtraction"))
            self.subtraction = (sub, sub_cond, described)

    @property
    def duration(self) -> float:
        """Seconds of data a request carries."""
        return self.pad_before + self.window + self.pad_after

    def samples(self, channel: str) -> int:
        return math.ceil(self.duration * self.rates[channel] - 1e-6)

    def describe(self) -> dict:
        return {
            "channels": self.channels,
            "strain_channel": self.channels[0],
            "aux_channels": self.channels[1:],
            "sample_rates": self.rates,
            "samples": {c: self.samples(c) for c in self.channels},
            "window_s": self.window,
            "pad_before_s": self.pad_before,
            "pad_after_s": self.pad_after,
            "request_duration_s": self.duration,
            "time_step_s": self.cond.time_step,
            "frequencies_hz": [float(f) for f in self.frequencies],
            "thresholds": self.predictor.point.describe(),
            "psd": {"mode": "request"} if self.psd_keeper is None else self.psd_keeper.describe(),
            "model": asdict(self.ckpt.model),
            "subtraction": None
            if self.subtraction is None
            else self.subtraction[2] | {"witnesses": self.subtraction[0].channels},
        }

    # ------------------------------------------------------------------ validation
    def validate(self, gps_start, channels: dict, need_strain: bool) -> WindowRequest:
        """Check a parsed request against the model; raises :class:`RequestError`."""
        if not isinstance(gps_start, int | float) or not math.isfinite(gps_start):
            raise RequestError("gps_start", "must be a finite number (GPS seconds)")
        strain = self.channels[0]
        allowed = set(self.channels)
        extra = sorted(set(channels) - allowed)
        if extra:
            raise RequestError("channels", f"not channels of this model: {extra}")
        required = self.channels if need_strain else self.channels[1:]
        missing = [c for c in required if c not in channels]
        if missing:
            raise RequestError("channels", f"missing channels: {missing}")
        data = {}
        for name, (rate, samples) in channels.items():
            field = f"channels.{name}"
            if not math.isclose(float(rate), self.rates[name]):
                raise RequestError(
                    f"{field}.sample_rate", f"{rate} Hz, the model expects {self.rates[name]} Hz"
                )
            x = np.asarray(samples, dtype=np.float64)
            if x.ndim != 1 or len(x) != self.samples(name):
                raise RequestError(
                    f"{field}.data",
                    f"{x.size} samples, expected {self.samples(name)} "
                    f"({self.duration} s at {self.rates[name]} Hz)",
                )
            bad = ~np.isfinite(x)
            if bad.any():
                raise RequestError(
                    f"{field}.data",
                    f"{int(bad.sum())} NaN/Inf samples (first at index "
                    f"{int(np.flatnonzero(bad)[0])})",
                )
            peak = float(np.abs(x).max(initial=0.0))
            if peak > MAX_ABS_SAMPLE:
                raise RequestError(
                    f"{field}.data", f"|sample| up to {peak:.3g}, beyond {MAX_ABS_SAMPLE:g}"
                )
            if np.ptp(x) == 0:
                raise RequestError(f"{field}.data", "flat (constant) data: nothing to whiten")
            data[name] = x
        if not need_strain and strain in data and len(data) == 1:
            raise RequestError("channels", "no auxiliary channel given")
        return WindowRequest(float(gps_start), data)

    # ------------------------------------------------------------------ decisions
    @torch.no_grad()
    def run(self, requests: list[WindowRequest]) -> list[dict]:
        """Decisions for a batch; the denoise fields for the requests that carry strain.

        Channels are conditioned independently (per-channel whitening and
        Q-transform), so conditioning strain apart from the auxiliary channels
        gives the same numbers as conditioning them together.
        """
        strain, aux_names = self.channels[0], self.channels[1:]
        keeper = self.psd_keeper
        psd_version = 0 if keeper is None else keeper.version_for(aux_names)
        aux = self._condition(requests, aux_names)
        with_strain = [strain in r.data for r in requests]
        real = None
        if any(with_strain):  # NaN rows: windows sent without strain (veto only)
            idx = [k for k, w in enumerate(with_strain) if w]
            real = torch.full((len(requests), *aux.shape[2:]), float("nan"))
            real[idx] = self._condition([requests[k] for k in idx], [strain])[:, 0]
        starts = np.array([r.gps_start + self.pad_before for r in requests])
        decided = self.predictor.decide_conditioned(
            aux, real, starts, self.cond.time_step, self.cond.frequencies
        )
        out = []
        for k, (req, d) in enumerate(zip(requests, decided.decisions)):
            result = as_response(d, with_strain[k]) | {"psd_version": psd_version}
            if not _finite(result):
                out.append(NON_FINITE)
                continue
            if with_strain[k] and self.subtraction is not None:
                result["subtraction"] = self._subtract(req)
            if req.want_spectrograms:
                result["generated"] = np.asarray(decided.generated[k])
                if with_strain[k]:
                    result["cleaned"] = np.asarray(decided.cleaned[k])
            out.append(result)
        return out

    def _subtract(self, req: WindowRequest) -> dict:
        """Witnessed glitches of the decision window subtracted from the request's strain:
        the fits, the spectrogram figure recomputed on the cleaned strain and, when asked,
        the cleaned samples of the decision window."""

        sub, cond, _ = self.subtraction
        strain = self.channels[0]
        names = [strain, *(c for c in sub.channels if c in req.data)]
        seg = Segment(
            req.gps_start,
            req.gps_start + self.duration,
            {c: req.data[c] for c in names},
            {c: self.rates[c] for c in names},
        )
        start = req.gps_start + self.pad_before
        removed, fits = clean_segment(sub, cond, seg, (start, start + self.window))
        cleaned = req.data[strain] - removed
        spec = self._condition(
            [WindowRequest(req.gps_start, {strain: cleaned})], [strain], keep=False
        )
        out = {
            "glitches": fits,
            "subtracted": sum(f["subtracted"] for f in fits),
            "max_cleaned_snr2": float(spec[0, 0][self.predictor.rows].max()),
        }
        if req.want_cleaned_strain:
            rate = self.rates[strain]
            a = round(self.pad_before * rate)
            out["cleaned_strain"] = {
                "gps_start": start,
                "sample_rate": rate,
                "data": np.asarray(cleaned[a : a + round(self.window * rate)], np.float64),
            }
        return out

    def _condition(
        self, requests: list[WindowRequest], names: list[str], keep: bool = True
    ) -> torch.Tensor:
        """``(batch, channel, n_freq, bins)`` SNR^2 of the decision window (float32, CPU),
        whitened with the kept PSDs when there are (``serve.psd.mode: kept``; ``keep``
        False: each request's own, as for the cleaned strain) and else each request's own."""
        cond, rates = self.cond, [self.rates[n] for n in names]
        arrays = [
            torch.from_numpy(np.stack([r.data[n] for r in requests])).to(self.device) for n in names
        ]
        x = cond.stack(arrays, rates)
        keeper = self.psd_keeper if keep else None
        kept = None if keeper is None else keeper.served(names)
        response = None
        if kept is not None:
            kept = kept.to(x.device)
            response = self._kept_filter(kept, keeper.version, names, rates, x.shape[-1])
        if keeper is not None:
            sampled = keeper.samples(names, len(requests))
            if sampled:
                own = cond.estimate_psd(x[sampled])
                keeper.add(names, own, [requests[k].gps_start for k in sampled])
        spec = cond(x, rates, psd=kept, response=response)
        return spec[..., self.first_bin : self.first_bin + self.bins].float().cpu()

    def _kept_filter(
        self, kept: torch.Tensor, version: int, names: list[str], rates: list[float], n: int
    ) -> torch.Tensor:
        """The whitening filter of the kept PSDs ``kept`` (version ``version``) for
        ``n``-sample inputs, designed once per version (see
        :meth:`~glitchflow.signal.conditioner.Conditioner.kept_response`)."""
        key = (version, tuple(names), n)
        response = self._kept_filters.get(key)
        if response is None:
            response = self.cond.kept_response(kept, n, rates)
            if len(self._kept_filters) >= KEPT_FILTERS:
                self._kept_filters.clear()  # older versions are not served again
            self._kept_filters[key] = response
        return response


#: the answer for a request whose data give non-finite figures (the app sends a 422)
NON_FINITE = {
    "error": "the data give non-finite spectrograms (samples far outside the channel's "
    "noise, e.g. a corrupted stretch): no decision",
    "field": "channels",
    "status": 422,
}


def _finite(value) -> bool:
    """Every number in a JSON-ready structure is finite (NaN where no strain was given
    never reaches here: those fields are left out)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return all(_finite(v) for v in value)
    return True


def as_response(d: WindowDecision, has_real: bool) -> dict:
    """JSON-ready decision; denoise fields only when strain was given."""
    out = {
        "window_start": d.gps_start,
        "window_end": d.gps_end,
        "veto": d.veto,
        "max_generated_snr2": d.max_generated_snr2,
        "clusters": [vars(c) for c in d.clusters],
    }
    if has_real:
        out |= {
            "cleaned": d.cleaned,
            "max_real_snr2": d.max_real_snr2,
            "max_residual_snr2": d.max_residual_snr2,
            "residual_area_pixels": d.residual_area_pixels,
            "residual_area_hz_s": d.residual_area_hz_s,
        }
    return out
