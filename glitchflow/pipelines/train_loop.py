"""``train_loop_per_worker``: one DDP worker of the U-Net training (Ray Train V2).

Everything the loop needs arrives in its ``config`` dict (plain values), so
the same function serves ``glitchflow train`` and every Tune trial.  Rank 0
writes TensorBoard events and the self-describing checkpoint; every rank
reports the epoch's metrics.
"""

from __future__ import annotations

import tempfile
import time

import numpy as np
import torch

from glitchflow.io.dataset import COLUMN_DTYPES
from glitchflow.models.checkpoint import make_checkpoint, read_checkpoint, save_checkpoint
from glitchflow.models.clusters import veto_denoise_accuracy
from glitchflow.models.losses import SpectrogramLoss
from glitchflow.models.registry import create_model
from glitchflow.models.scaling import Scaling
from glitchflow.pipelines.runtime import die_once
from glitchflow.tracking.images import log_spectrogram_images


def _batches(shard, batch_size: int, seed: int | None, device):
    kwargs = {"batch_size": batch_size, "dtypes": COLUMN_DTYPES, "device": device}
    if seed is not None:
        kwargs |= {"local_shuffle_buffer_size": 4 * batch_size, "local_shuffle_seed": seed}
    for batch in shard.iter_torch_batches(**kwargs):
        yield batch["x"], batch["y"]


class ShardCache:
    """A worker's dataset shard, read once through Ray Data into the worker's memory when
    it fits in ``limit_mb`` (0: stream every pass, as Ray Data's local shuffle buffer
    allows).

    Ray Data converts batches in a background thread of the training process, which
    takes CPU from the training threads on every epoch (about 10 % of the step rate on
    2 CPUs). A cached shard is put in a canonical order (GPS start, then content) and
    each pass takes a full permutation seeded by its ``seed``, so an epoch's batches do
    not depend on the order Ray Data delivered the rows in, nor on whether the worker
    was restarted (a resumed run repeats an uninterrupted one). Shards from Ray Train
    are split equally, so every DDP rank still takes the same number of steps.
    """

    def __init__(self, shard, batch_size: int, limit_mb: float, device):
        self.shard, self.batch_size, self.device = shard, batch_size, device
        self.limit = limit_mb * 2**20
        self.x: torch.Tensor | None = None
        self.y: torch.Tensor | None = None
        self._read = limit_mb <= 0

    def batches(self, seed: int | None):
        """``(x, y)`` batches of one pass: shuffled by ``seed``, in order if None."""
        if not self._read:
            self._load()
        if self.x is None:
            yield from _batches(self.shard, self.batch_size, seed, self.device)
            return
        n = len(self.x)
        order = (
            torch.arange(n)
            if seed is None
            else torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        )
        for k in range(0, n, self.batch_size):
            idx = order[k : k + self.batch_size].to(self.x.device)
            yield self.x[idx], self.y[idx]

    def _load(self) -> None:
        self._read = True
        xs, ys, keys, size = [], [], [], 0
        batches = self.shard.iter_torch_batches(
            batch_size=max(self.batch_size, 64), dtypes=COLUMN_DTYPES, device=self.device
        )
        for batch in batches:  # read to the end even when over the limit (equal shards)
            x, y = batch["x"], batch["y"]
            size += x.element_size() * x.nelement() + y.element_size() * y.nelement()
            if size <= self.limit:
                xs.append(x)
                ys.append(y)
                keys.append(torch.as_tensor(batch["gps_start"]).double().cpu())
        if not xs or size > self.limit:
            return
        x, y = torch.cat(xs), torch.cat(ys)
        content = x.flatten(1).double().sum(1).cpu().numpy()
        order = torch.from_numpy(np.lexsort((content, torch.cat(keys).numpy()))).to(x.device)
        self.x, self.y = x[order], y[order]


def evaluate(model, batches, loss_fn, scaling, threshold, min_area) -> dict:
    """Over ``batches``: the training loss and the plain L1 error (both in model units,
    the L1 independent of the loss weights, so trials with different weights compare),
    and the seed's veto/denoise accuracies (SNR^2 units)."""
    model.eval()
    losses, l1s, real, generated, sizes = [], [], [], [], []
    with torch.no_grad():
        for x, y in batches:
            pred = model(scaling.inputs(x))
            target = scaling.targets(y)
            losses.append(float(loss_fn(pred, target)) * len(x))
            l1s.append(float(torch.nn.functional.l1_loss(pred, target)) * len(x))
            sizes.append(len(x))
            real.append(y.cpu())
            generated.append(scaling.outputs(pred).cpu())
    if not sizes:
        return {
            "loss": float("nan"),
            "l1": float("nan"),
            "veto_accuracy": float("nan"),
            "denoise_accuracy": float("nan"),
        }
    acc = veto_denoise_accuracy(torch.cat(real), torch.cat(generated), threshold, min_area)
    return {"loss": sum(losses) / sum(sizes), "l1": sum(l1s) / sum(sizes), **acc}


def selection_score(epoch: int, val_loss: float, best_loss: float, tolerance: float) -> float:
    """The score Ray Train keeps checkpoints by (highest wins): ``epoch + 1`` when the
    epoch's validation loss is within ``tolerance`` (relative) of the best so far
    (``best_loss``, the plateau scheduler's), else 0; without validation loss, ``epoch + 1``.

    The kept checkpoint is then the *latest* epoch whose validation loss is within the
    tolerance of the best: on a small validation split (a few glitches of a rare family)
    losses a percent apart are noise, and later epochs have seen the rare families more
    often (the demo's model learns the magnetometer's glitches after epoch 5 of 12 while
    its validation loss moves by < 1 %)."""
    if not np.isfinite(val_loss):
        return float(epoch + 1)
    return float(epoch + 1) if val_loss <= best_loss * (1.0 + tolerance) else 0.0


def train_loop_per_worker(config: dict) -> None:
    """One DDP worker: build the model, resume from Ray Train's checkpoint if any, then per
    epoch train, validate, log (rank 0) and report metrics with a checkpoint (rank 0)."""
    import ray.train
    import ray.train.torch
    from torch.utils.tensorboard import SummaryWriter

    rank = ray.train.get_context().get_world_rank()
    torch.manual_seed(config["seed"] + rank)
    torch.set_num_threads(max(1, int(config.get("threads", 1))))
    device = ray.train.torch.get_device()
    spec = config["model"]
    model = ray.train.torch.prepare_model(create_model(spec["name"], **spec["kwargs"]))
    opt = torch.optim.AdamW(
        model.parameters(), lr=config["lr"], weight_decay=config["weight_decay"]
    )
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode="min", factor=config["plateau_factor"], patience=config["plateau_patience"]
    )
    loss_fn = SpectrogramLoss(**config["loss"])
    scaling = Scaling(config["normalisation"], device)
    start_epoch = _resume(model, opt, sched)
    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val")
    cache_mb = config.get("shard_cache_mb", 0)
    train_data = ShardCache(train_shard, config["batch_size"], cache_mb, device)
    val_data = ShardCache(val_shard, config["batch_size"], cache_mb, device)
    writer = SummaryWriter(config["tensorboard_dir"]) if rank == 0 else None
    t_start, first_step = time.perf_counter(), None
    for epoch in range(start_epoch, config["epochs"]):
        t_epoch = time.perf_counter()
        batches = train_data.batches(config["seed"] + epoch)
        train_loss, n_train, first = _train_epoch(
            model, batches, loss_fn, scaling, opt, config["grad_clip"]
        )
        train_seconds = time.perf_counter() - t_epoch
        if first_step is None and first is not None:
            first_step = first - t_start
        val = evaluate(
            model,
            val_data.batches(None),
            loss_fn,
            scaling,
            config["snr2_threshold"],
            config["min_area"],
        )
        sched.step(val["loss"] if np.isfinite(val["loss"]) else train_loss)
        metrics = {
            "val_select": selection_score(
                epoch, val["loss"], sched.best, config["select_tolerance"]
            ),
            "epoch": epoch,
            "train_loss": train_loss,
            "val_loss": val["loss"],
            "val_l1": val["l1"],
            "val_veto_accuracy": val["veto_accuracy"],
            "val_denoise_accuracy": val["denoise_accuracy"],
            "lr": opt.param_groups[0]["lr"],
            "samples_per_second": n_train / max(train_seconds, 1e-9),  # the training pass
            "epoch_seconds": time.perf_counter() - t_epoch,  # with validation
            "time_to_first_step_s": first_step or 0.0,
        }
        if writer is not None:
            _log_epoch(writer, model, val_shard, scaling, metrics, config)
        _report(config, model, opt, sched, metrics, rank)
        _crash_if_asked(config, epoch, rank)
    if writer is not None:
        writer.close()


def _resume(model, opt, sched) -> int:
    """Load Ray Train's latest checkpoint (after a worker failure) into the model,
    optimiser and scheduler; the epoch to start from (0 without one)."""
    import ray.train

    resumed = ray.train.get_checkpoint()
    if not resumed:
        return 0
    with resumed.as_directory() as directory:
        state = read_checkpoint(directory)
    getattr(model, "module", model).load_state_dict(state.state_dict)
    if state.optimizer is not None:
        opt.load_state_dict(state.optimizer)
    if state.scheduler is not None:
        sched.load_state_dict(state.scheduler)
    return state.epoch + 1


def _train_epoch(model, batches, loss_fn, scaling, opt, grad_clip: float):
    """One pass over ``batches``: (mean loss, samples, perf_counter of the first step)."""
    model.train()
    total, n, first = 0.0, 0, None
    for x, y in batches:
        loss = loss_fn(model(scaling.inputs(x)), scaling.targets(y))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        first = first or time.perf_counter()
        total += loss.item() * len(x)
        n += len(x)
    return total / max(n, 1), n, first


def _log_epoch(writer, model, val_shard, scaling, metrics: dict, config: dict) -> None:
    """TensorBoard scalars every epoch, spectrogram images every ``image_every``."""
    epoch = metrics["epoch"]
    for key, value in metrics.items():
        if key != "epoch":
            writer.add_scalar(key, value, epoch)
    if epoch % config["image_every"] == 0 or epoch == config["epochs"] - 1:
        log_spectrogram_images(writer, model, val_shard, scaling, epoch)
    writer.flush()


def _report(config: dict, model, opt, sched, metrics: dict, rank: int) -> None:
    """Report the epoch's metrics; rank 0 attaches the self-describing checkpoint."""
    import ray.train

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if rank == 0:
            ckpt = make_checkpoint(
                model,
                config["model"],
                config["signal"],
                config["channels"],
                config["normalisation"],
                config["sample"],
                {"snr2": config["snr2_threshold"], "min_area": config["min_area"]},
                metrics["epoch"],
                metrics,
                opt.state_dict(),
                sched.state_dict(),
            )
            save_checkpoint(ckpt, tmp)
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=checkpoint)


def _crash_if_asked(config: dict, epoch: int, rank: int) -> None:
    """A real worker death after ``crash_after_epoch``, once, for the fault-tolerance test."""
    if config.get("crash_after_epoch") == epoch and rank == 0:
        die_once(config["crash_marker"], str(epoch))
