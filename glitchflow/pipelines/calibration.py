"""Calibrating a trained checkpoint's veto on the validation split (driver side).

The best checkpoint of a training run (or of a Tune search) is run over the
validation crops; :func:`~glitchflow.models.operating_point.calibrate_veto`
picks the veto's SNR^2 threshold and minimum cluster area that keep the veto
on at most ``train.veto.target_deadtime`` of the glitch-free validation time,
and the result is written into the checkpoint's ``thresholds["veto"]``, which
infer and serve read.
"""

from __future__ import annotations

import logging

import torch

from glitchflow.config import Config
from glitchflow.io.dataset import COLUMN_DTYPES
from glitchflow.models.checkpoint import Checkpoint
from glitchflow.models.inference import Predictor
from glitchflow.models.operating_point import calibrate_veto

log = logging.getLogger(__name__)


@torch.no_grad()
def generate_crops(
    ckpt: Checkpoint, dataset, batch_size: int = 64
) -> tuple[torch.Tensor, torch.Tensor]:
    """Real and generated strain SNR^2 ``(n, F, T)`` of every crop of a Ray dataset with
    ``x`` / ``y`` columns (as the training splits), in dataset order, through the same
    :class:`Predictor` that infer and serve use."""
    predictor = Predictor(ckpt)
    real, generated = [], []
    for batch in dataset.iter_torch_batches(batch_size=batch_size, dtypes=COLUMN_DTYPES):
        generated.append(predictor.predict_crops(batch["x"]).cpu())
        real.append(batch["y"][:, 0])
    if not real:
        return torch.zeros(0), torch.zeros(0)
    return torch.cat(real), torch.cat(generated)


def calibrate_checkpoint(ckpt: Checkpoint, dataset, cfg: Config) -> Checkpoint:
    """``ckpt`` with ``thresholds["veto"]`` calibrated on ``dataset`` (the validation split);
    unchanged (with a warning) when calibration is off or the split has no glitch-free crop."""
    veto = cfg.train.veto
    if not veto.calibrate:
        return ckpt
    real, generated = generate_crops(ckpt, dataset)
    step = ckpt.time_step
    padding_bins = round(cfg.infer.veto_padding / step)
    guard_bins = round(veto.guard / step)
    point = (
        calibrate_veto(
            real,
            generated,
            cfg.train.glitch_threshold,
            veto.target_deadtime,
            padding_bins,
            guard_bins,
        )
        if len(real)
        else {}
    )
    if not point:
        log.warning(
            "validation split has no glitch-free crop: the veto keeps SNR^2 %s",
            ckpt.thresholds["snr2"],
        )
        return ckpt
    log.info(
        "veto calibrated on %d glitch-free validation bins: SNR^2 >= %.3g, area >= %d px; "
        "deadtime %.4f (target %.4f), efficiency on %d validation glitches %.3f",
        point["glitch_free_bins"],
        point["snr2"],
        point["min_area"],
        point["val_deadtime"],
        point["target_deadtime"],
        point["glitches"],
        point["val_efficiency"],
    )
    return ckpt.with_thresholds(veto=point)
