"""The trained model as infer, online and serve run it, and as MLflow registers it.

:class:`GlitchModel` holds the network and everything that used to live beside it:
the input/output scaling (buffers), the crop size, the SNR^2 clamp, the channels and
the veto's calibrated operating point.  Its ``forward`` takes auxiliary crops in the
Conditioner's units and returns generated strain in the same units, so
``mlflow.pytorch.load_model("models:/glitchflow-unet@candidate")`` gives exactly
what ``glitchflow infer`` and the endpoint compute.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from glitchflow.models.checkpoint import Checkpoint, build_network
from glitchflow.models.operating_point import OperatingPoint
from glitchflow.models.scaling import Scaling


class GlitchModel(nn.Module):
    """Auxiliary spectrogram crops -> generated strain spectrogram crops.

    ``forward(x)``: ``x`` ``(n, n_aux, crop, crop)`` auxiliary SNR^2 (the Conditioner's
    output on the model's rows) -> ``(n, 1, crop, crop)`` generated strain SNR^2.  Inputs
    are clamped to ``[0, clamp]`` (the training range) and so are outputs (beyond it is
    extrapolation, ``expm1`` of a large log).

    Attributes: ``network`` (model units in and out), ``scaling``, ``crop`` (pixels),
    ``clamp`` (SNR^2), ``channels`` (strain first), ``operating_point``.
    """

    def __init__(
        self,
        network: nn.Module,
        normalisation: dict,
        crop: int,
        clamp: float,
        channels: tuple[str, ...],
        operating_point: OperatingPoint,
    ) -> None:
        super().__init__()
        self.network = network
        self.scaling = Scaling(normalisation)
        self.crop = int(crop)
        self.clamp = float(clamp)
        self.channels = tuple(channels)
        self.operating_point = operating_point

    @classmethod
    def from_checkpoint(
        cls, ckpt: Checkpoint, snr2_threshold: float | None = None, min_area: int | None = None
    ) -> GlitchModel:
        """The checkpoint's model in eval mode; ``snr2_threshold`` / ``min_area`` override its
        operating point (None: the calibrated one)."""
        point = OperatingPoint.from_thresholds(ckpt.thresholds, snr2_threshold, min_area)
        model = cls(
            build_network(ckpt),
            ckpt.normalisation,
            ckpt.sample.crop,
            ckpt.sample.clamp,
            ckpt.channels,
            point,
        )
        return model.eval()

    @property
    def n_aux(self) -> int:
        return len(self.channels) - 1

    @property
    def size_multiple(self) -> int:
        """Input freq and time sizes the network takes must be multiples of this."""
        return int(getattr(self.network, "size_multiple", 1))

    def forward(self, x: Tensor) -> Tensor:
        x = self.scaling.inputs(torch.clamp(x.float(), 0.0, self.clamp))
        pred = self.network(x).float()
        return torch.clamp(self.scaling.outputs(pred), 0.0, self.clamp)
