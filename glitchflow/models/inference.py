"""A trained model applied to conditioned windows: generated strain spectrograms.

:class:`Predictor` is rebuilt from a self-describing checkpoint alone.  It
takes whole windows of auxiliary spectrograms ``(batch, n_aux, n_freq, bins)``
(the Conditioner's output, SNR^2) on the model's ``crop`` rows (centred in
frequency) and returns the generated strain spectrogram ``(batch, crop, bins)``
in SNR^2 on the rows :attr:`Predictor.rows`, in one of two tilings:

* ``window`` (the default): the network is convolutional, so it runs once over
  each whole window, the windows of a call batched together.  Every bin is
  predicted once, with the context of the whole window; the window's edges see
  the same zero padding as a training crop's.
* ``crops``: the training crops (``crop`` bins) every ``hop_fraction`` of a
  crop, stitched back with triangular weights so that every bin is predicted
  mostly from crops where it is far from an edge (hop 0.5: each bin twice).

On CPU the network runs in channels-last memory layout (oneDNN's fast path,
about twice as fast for the U-Net on 2 cores; the same sums in another order).

The same object serves batch inference (``glitchflow infer``) and the HTTP
endpoint, so both give the same decision on the same window.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from glitchflow.models.checkpoint import Checkpoint
from glitchflow.models.decisions import WindowDecision, decide, predicted_glitch
from glitchflow.models.geometry import model_rows
from glitchflow.models.glitch_model import GlitchModel

#: how a window is cut for the network (see the module docstring)
TILINGS = ("window", "crops")
#: time bins per model call in the window tiling: calls of ~8 six-second windows keep the
#: activations in cache (85 windows on 2 cores: 0.66 s in calls of 8, 1.8 s in one call)
WINDOW_BINS_PER_CALL = 2048


@dataclass
class DecidedWindows:
    """Decisions for a batch of windows and the spectrograms behind them, each
    ``(batch, crop, bins)`` SNR^2 on :attr:`Predictor.rows` (CPU, float32)."""

    decisions: list[WindowDecision]
    real: Tensor | None
    generated: Tensor
    cleaned: Tensor | None


@contextmanager
def ieee_float32(device: torch.device):
    """cuDNN convolutions in IEEE float32 on a GPU, for decisions.

    cuDNN's default TF32 (10-bit mantissa) moved the U-Net's generated SNR^2 by up to 2.6%
    against the CPU on an H200: enough to move a cluster across a threshold.  Training
    keeps TF32 (its speed matters more there than the last percent)."""
    conv = torch.backends.cudnn.conv
    if device.type != "cuda":
        yield
        return
    before = conv.fp32_precision
    conv.fp32_precision = "ieee"
    try:
        yield
    finally:
        conv.fp32_precision = before


class Predictor:
    """Checkpoint -> generated strain spectrograms for whole windows.

    Args:
        ckpt: a checkpoint (:func:`~glitchflow.models.checkpoint.read_checkpoint`).
        device: torch device for the model.
        hop_fraction: crop hop as a fraction of the crop (0.5: every bin seen by two
            crops; 1: crops side by side as in training, half the model calls).
        snr2_threshold, min_area: override the checkpoint's veto and denoise thresholds
            (SNR^2, pixels); None: the checkpoint's calibrated operating point.
        model: the :class:`GlitchModel` to run (for example one loaded back from MLflow);
            None builds it from ``ckpt``.
        tiling: ``window`` (each bin predicted once, the whole window in one pass) or
            ``crops`` (training-size crops every ``hop_fraction``, stitched).
    """

    def __init__(
        self,
        ckpt: Checkpoint,
        device: str | torch.device = "cpu",
        hop_fraction: float = 0.5,
        snr2_threshold: float | None = None,
        min_area: int | None = None,
        model: GlitchModel | None = None,
        tiling: str = "window",
    ) -> None:
        self.ckpt = ckpt
        self.device = torch.device(device)
        if model is None:
            model = GlitchModel.from_checkpoint(ckpt, snr2_threshold, min_area)
        self.model = model.to(self.device).eval()
        if tiling not in TILINGS:
            raise ValueError(f"tiling must be one of {TILINGS}, got {tiling!r}")
        self.tiling = tiling
        #: channels-last on CPU (see the module docstring)
        self.memory_format = (
            torch.channels_last if self.device.type == "cpu" else torch.contiguous_format
        )
        self.model.to(memory_format=self.memory_format)
        self.crop = self.model.crop
        self.channels: list[str] = list(ckpt.channels)
        self.n_freq = ckpt.n_freq
        #: row slice of the Conditioner's output that the model predicts
        self.rows = model_rows(self.n_freq, self.crop)
        #: the thresholds every decision made with this model uses
        self.point = self.model.operating_point
        if not 0 < hop_fraction <= 1:
            raise ValueError(f"hop_fraction must be in (0, 1], got {hop_fraction}")
        self.hop = max(1, round(self.crop * hop_fraction))

    @property
    def strain_channel(self) -> str:
        return self.channels[0]

    @property
    def aux_channels(self) -> list[str]:
        return self.channels[1:]

    def crop_starts(self, bins: int) -> list[int]:
        """Start bins of the crops covering ``bins`` bins (every ``hop`` bins, last flush)."""
        if bins < self.crop:
            raise ValueError(f"a window needs at least {self.crop} bins, got {bins}")
        starts = list(range(0, bins - self.crop + 1, self.hop))
        if starts[-1] != bins - self.crop:
            starts.append(bins - self.crop)
        return starts

    def _weights(self) -> Tensor:
        """Triangular weight over a crop's bins (never zero), shape ``(crop,)``."""
        pos = (torch.arange(self.crop, dtype=torch.float32) + 0.5) / self.crop
        return torch.clamp(1.0 - (2 * pos - 1).abs(), min=1e-3)

    @torch.no_grad()
    def predict_crops(self, crops: Tensor) -> Tensor:
        """Generated strain SNR^2 ``(n, crop, crop)`` of auxiliary crops ``(n, n_aux, crop,
        crop)`` (SNR^2, the model's rows), on the model's device (see :class:`GlitchModel`)."""
        return self._run(crops)

    def _run(self, x: Tensor) -> Tensor:
        """The model on ``x`` ``(n, n_aux, rows, bins)`` -> ``(n, rows, bins)``, on its device."""
        x = x.to(self.device, torch.float32).contiguous(memory_format=self.memory_format)
        with ieee_float32(self.device):
            return self.model(x)[:, 0].contiguous()

    @torch.no_grad()
    def generate(self, aux: Tensor, max_crops: int = 256) -> Tensor:
        """Generated strain SNR^2 ``(batch, crop, bins)`` from ``aux`` ``(batch, n_aux,
        n_freq, bins)`` (SNR^2, all ``n_freq`` rows; only :attr:`rows` are used).

        The model sees at most ``max_crops`` crops' worth of pixels per call.
        """
        if aux.ndim != 4 or aux.shape[1] != len(self.aux_channels):
            raise ValueError(
                f"expected (batch, {len(self.aux_channels)}, freq, bins) auxiliary "
                f"spectrograms, got {tuple(aux.shape)}"
            )
        if aux.shape[2] != self.n_freq:
            raise ValueError(f"expected {self.n_freq} frequency rows, got {aux.shape[2]}")
        batch, n_aux, _, bins = aux.shape
        if bins < self.crop:  # less context than a training crop
            raise ValueError(f"a window needs at least {self.crop} bins, got {bins}")
        x = aux[:, :, self.rows].to(self.device, torch.float32)
        if self.tiling == "window":
            return self._generate_windows(x, max_crops)
        starts = self.crop_starts(bins)
        crops = torch.stack([x[..., s : s + self.crop] for s in starts], dim=1)
        flat = crops.reshape(batch * len(starts), n_aux, self.crop, self.crop)
        outputs = [self.predict_crops(chunk) for chunk in flat.split(max_crops)]
        pred = torch.cat(outputs).reshape(batch, len(starts), self.crop, self.crop)
        weight = self._weights().to(pred.device)
        total = torch.zeros(batch, self.crop, bins, device=pred.device)
        norm = torch.zeros(bins, device=pred.device)
        for k, s in enumerate(starts):
            total[..., s : s + self.crop] += pred[:, k] * weight
            norm[s : s + self.crop] += weight
        return (total / norm).cpu()

    def _generate_windows(self, x: Tensor, max_crops: int) -> Tensor:
        """Whole windows ``x`` ``(batch, n_aux, crop, bins)`` through the model at once,
        ``bins`` edge-padded (replicated) to a multiple of the network's pooling."""
        bins = x.shape[-1]
        pad = -bins % self.model.size_multiple
        left = pad // 2
        if pad:
            x = torch.nn.functional.pad(x, (left, pad - left), mode="replicate")
        per_call = max(1, min(max_crops * self.crop, WINDOW_BINS_PER_CALL) // x.shape[-1])
        out = torch.cat([self._run(chunk) for chunk in x.split(per_call)])
        return out[..., left : left + bins].cpu()

    @torch.no_grad()
    def decide_windows(
        self, spectrograms: Tensor, gps_starts, time_step: float, frequencies: np.ndarray
    ) -> DecidedWindows:
        """Generate, decide and clean whole windows ``(batch, channel, n_freq, bins)``
        (strain first, then the auxiliary channels, SNR^2) whose bin 0 starts at
        ``gps_starts`` (batch,) GPS s; ``frequencies`` are all ``n_freq`` rows (Hz).

        Batch and online inference call this; see :meth:`decide_conditioned`."""
        return self.decide_conditioned(
            spectrograms[:, 1:], spectrograms[:, 0], gps_starts, time_step, frequencies
        )

    @torch.no_grad()
    def decide_conditioned(
        self,
        aux: Tensor,
        strain: Tensor | None,
        gps_starts,
        time_step: float,
        frequencies: np.ndarray,
    ) -> DecidedWindows:
        """The one decision path (batch, online and the endpoint): generate the strain
        spectrogram from ``aux`` ``(batch, n_aux, n_freq, bins)``, decide the veto and,
        where ``strain`` ``(batch, n_freq, bins)`` is given (NaN rows for windows without
        strain, or None for none), the denoising; returns the decisions and the
        spectrograms on :attr:`rows` (``real`` and ``cleaned`` None without strain)."""
        generated = self.generate(aux)
        real = None if strain is None else strain[:, self.rows].float().cpu()
        freqs = np.asarray(frequencies)[self.rows]
        decisions = decide(real, generated, np.asarray(gps_starts), time_step, freqs, self.point)
        cleaned = None
        if real is not None:
            cleaned = torch.clamp(real - predicted_glitch(generated), min=0.0)
        return DecidedWindows(decisions, real, generated, cleaned)
