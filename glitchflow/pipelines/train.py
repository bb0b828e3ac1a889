"""``glitchflow train``: Ray Train (DDP) on the spectrogram dataset, tracked in MLflow.

The driver prepares the datasets, creates the MLflow run, fits a
``TorchTrainer`` whose workers run :func:`train_loop_per_worker`, then scores
the best checkpoint on the test split, writes plots and a summary, logs the
final model with a signature and registers it under the configured alias.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from glitchflow.config import Config, config_hash
from glitchflow.io.atomic import write_json_atomic
from glitchflow.io.dataset import COLUMN_DTYPES
from glitchflow.models.checkpoint import (
    Checkpoint,
    build_network,
    read_checkpoint,
    save_checkpoint,
)
from glitchflow.models.glitch_model import GlitchModel
from glitchflow.models.losses import SpectrogramLoss
from glitchflow.models.registry import arguments_from_settings
from glitchflow.models.scaling import Scaling
from glitchflow.models.unet import count_parameters
from glitchflow.pipelines.calibration import calibrate_checkpoint
from glitchflow.pipelines.runtime import (
    check_resources,
    check_shared_storage,
    fit_releasing_controller,
)
from glitchflow.pipelines.staging import claim_out
from glitchflow.pipelines.train_loop import evaluate, train_loop_per_worker
from glitchflow.pipelines.training_data import TrainingData, prepare_training_data
from glitchflow.tracking.mlflow_tracking import (
    MlflowTrainCallback,
    RegisteredModel,
    default_artifact_location,
    default_tracking_uri,
    log_and_register,
    start_run,
)

log = logging.getLogger(__name__)

#: per-epoch metrics kept in the summary and plotted
HISTORY_KEYS = (
    "train_loss",
    "val_loss",
    "val_l1",
    "val_veto_accuracy",
    "val_denoise_accuracy",
    "lr",
)


def loop_config(cfg: Config, data: TrainingData, out: Path) -> dict:
    """The plain-value config every training worker receives."""
    tr = cfg.train
    n_aux = len(data.channels) - 1
    m = tr.model
    kwargs = arguments_from_settings(m.name, n_aux, m.base, m.depth, m.residual, m.attention)
    return {
        "seed": cfg.seed,
        "model": {"name": tr.model.name, "kwargs": kwargs},
        "loss": loss_kwargs(cfg, data.normalisation),
        "lr": tr.lr,
        "weight_decay": tr.weight_decay,
        "plateau_factor": tr.plateau_factor,
        "plateau_patience": tr.plateau_patience,
        "select_tolerance": tr.select_tolerance,
        "grad_clip": tr.grad_clip,
        "epochs": tr.epochs,
        "batch_size": tr.batch_size,
        "shard_cache_mb": tr.shard_cache_mb,
        "snr2_threshold": tr.snr2_threshold,
        "min_area": tr.min_area,
        "image_every": tr.image_every,
        "threads": max(1, int(tr.cpus_per_worker)),
        "normalisation": data.normalisation,
        "signal": data.manifest.config["signal"],
        "channels": data.channels,
        "sample": {
            "crop": tr.crop,
            "clamp": tr.clamp,
            "window": data.manifest.window_seconds,
            "stride": data.manifest.stride_seconds,
            "rates": data.manifest.sample_rates,
        },
        "tensorboard_dir": str((out / "tensorboard").resolve()),
    }


def loss_kwargs(cfg: Config, normalisation: dict) -> dict:
    """:class:`SpectrogramLoss` arguments: the configured loss, glitch pixels from
    ``train.glitch_threshold`` SNR^2 in model units."""
    level = Scaling(normalisation).target_level(cfg.train.glitch_threshold)
    return cfg.train.loss.model_dump() | {"glitch_level": level}


def make_trainer(
    cfg: Config, data: TrainingData, out: Path, loop: dict, callbacks=(), name="train"
):
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    tr = cfg.train
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop,
        scaling_config=ScalingConfig(
            num_workers=tr.workers,
            use_gpu=tr.use_gpu,
            resources_per_worker={"CPU": tr.cpus_per_worker} | ({"GPU": 1} if tr.use_gpu else {}),
        ),
        run_config=RunConfig(
            name=name,
            storage_path=str((out / "ray_results").resolve()),
            checkpoint_config=CheckpointConfig(
                num_to_keep=tr.checkpoints_to_keep,
                checkpoint_score_attribute="val_select",
                checkpoint_score_order="max",
            ),
            failure_config=FailureConfig(max_failures=tr.max_failures),
            callbacks=list(callbacks),
        ),
        datasets={"train": data.datasets["train"], "val": data.datasets["val"]},
        dataset_config=DataConfig(datasets_to_split=["train"]),
    )


#: what a training run writes under OUT (the MLflow store there is shared, not a product)
TRAIN_PRODUCTS = [
    "ray_results",
    "tensorboard",
    "best_model.pt",
    "loss_curves.png",
    "config.yaml",
    "train_summary.json",
]


@dataclass(frozen=True)
class TrainResult:
    """What ``glitchflow train`` produced (also written to OUT/train_summary.json).

    ``registered``: the MLflow registry entry; ``best_checkpoint``: path of the calibrated
    best checkpoint; ``samples``: crops per split; ``test``: test-split figures;
    ``veto``: the calibrated operating point (None when calibration was off or had no
    glitch-free time); ``history``: per-epoch metrics by name; ``wall_seconds``: s."""

    config_hash: str
    run_id: str
    tracking_uri: str
    registered: RegisteredModel
    best_checkpoint: str
    best_epoch: int
    epochs_run: int
    parameters: int
    samples: dict[str, int]
    normalisation: dict
    test: dict[str, float]
    veto: dict | None
    history: dict[str, list]
    tensorboard: str
    wall_seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def run_training(
    cfg: Config,
    data_dir: str | Path,
    out: str | Path,
    crash_after_epoch=None,
    overwrite: bool = False,
) -> TrainResult:
    """Train, score on the test split and register the model; returns the result
    (also written to OUT/train_summary.json).  A previous run's products in ``out`` are
    refused (its TensorBoard events and checkpoints would mix with this run's) unless
    ``overwrite`` replaces them."""
    t0 = time.perf_counter()
    tr = cfg.train
    check_resources(tr.workers * tr.cpus_per_worker, tr.workers if tr.use_gpu else 0, "train")
    out = claim_out(out, TRAIN_PRODUCTS, "train", overwrite)
    check_shared_storage(out)
    data = prepare_training_data(cfg, data_dir)
    loop = loop_config(cfg, data, out)
    if crash_after_epoch is not None:
        loop |= {"crash_after_epoch": crash_after_epoch, "crash_marker": str(out / ".crashed")}
    uri = tr.mlflow.tracking_uri or default_tracking_uri(out)
    run_id = _start_mlflow_run(cfg, data, loop, uri, data_dir, out)
    # one Ray run per training run: a second `train` into the same OUT must not restore
    # the first one's checkpoints (Ray Train resumes a run of the same name and storage)
    trainer = make_trainer(
        cfg, data, out, loop, [MlflowTrainCallback(uri, run_id)], name=f"train-{run_id[:12]}"
    )
    fitted = fit_releasing_controller(trainer)
    history = metric_history(uri, run_id)
    best = max(fitted.best_checkpoints, key=lambda cm: cm[1]["val_select"])[0]
    with best.as_directory() as directory:
        ckpt = calibrate_checkpoint(read_checkpoint(directory), data.datasets["val"], cfg)
    best_file = save_checkpoint(ckpt, out / "best_model.pt")
    test = score_checkpoint(ckpt, data.datasets["test"], cfg)
    refuse_non_finite(test, ckpt.metrics.get("val_loss", float("nan")))
    plot_history(history, out / "loss_curves.png")
    model = GlitchModel.from_checkpoint(ckpt)  # what MLflow registers: infer and serve run it
    registered = _register(cfg, model, test, uri, run_id, best_file, out)
    result = TrainResult(
        config_hash=config_hash(cfg),
        run_id=run_id,
        tracking_uri=uri,
        registered=registered,
        best_checkpoint=str(best_file),
        best_epoch=ckpt.epoch,
        epochs_run=int(fitted.metrics["epoch"]) + 1,
        parameters=count_parameters(model),
        samples=data.counts,
        normalisation=data.normalisation,
        test=test,
        veto=ckpt.thresholds.get("veto"),
        history=history[["epoch", *HISTORY_KEYS]].to_dict(orient="list"),
        tensorboard=loop["tensorboard_dir"],
        wall_seconds=round(time.perf_counter() - t0, 1),
    )
    write_json_atomic(out / "train_summary.json", result.to_dict(), default=float)
    return result


def _start_mlflow_run(cfg: Config, data, loop: dict, uri: str, data_dir, out: Path) -> str:
    """The run's MLflow run (parameters, config hash, data path); its id."""
    tr = cfg.train
    params = {
        "model": loop["model"],
        "loss": loop["loss"],
        "lr": tr.lr,
        "batch_size": tr.batch_size,
        "epochs": tr.epochs,
        "workers": tr.workers,
        "channels": ";".join(data.channels),
        "normalisation": data.normalisation,
        "counts": data.counts,
    }
    return start_run(
        uri,
        tr.mlflow.experiment,
        f"train-{config_hash(cfg)}",
        params,
        {"config_hash": config_hash(cfg), "data": str(Path(data_dir).resolve())},
        artifact_location=default_artifact_location(out),
    )


def refuse_non_finite(test: dict, val_loss: float) -> None:
    """A model with a non-finite test figure or best validation loss is not registered."""
    bad = {k: v for k, v in test.items() if not np.isfinite(v)}
    if bad or not np.isfinite(val_loss):
        raise ValueError(
            f"non-finite figures (test {bad}, best val_loss {val_loss}): "
            "the model is not registered"
        )


def _register(cfg: Config, model, test: dict, uri: str, run_id: str, best_file, out: Path):
    """Log the model, its checkpoint, figures and config to the run; register it under the
    configured alias; log the test figures."""
    import mlflow

    tr = cfg.train
    config_file = out / "config.yaml"
    config_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    registered = log_and_register(
        uri,
        run_id,
        best_file,
        model,
        torch.zeros(1, model.n_aux, model.crop, model.crop),
        tr.mlflow.registered_model,
        tr.mlflow.alias,
        [out / "loss_curves.png", config_file],
    )
    client = mlflow.MlflowClient(uri)
    for key, value in test.items():
        client.log_metric(run_id, f"test_{key}", value)
    return registered


def score_checkpoint(ckpt: Checkpoint, dataset, cfg: Config) -> dict:
    """Test-split loss and veto / denoise accuracies of a checkpoint, in the driver."""
    model = build_network(ckpt)
    scaling = Scaling(ckpt.normalisation)
    batches = (
        (b["x"], b["y"]) for b in dataset.iter_torch_batches(batch_size=32, dtypes=COLUMN_DTYPES)
    )
    loss_fn = SpectrogramLoss(**loss_kwargs(cfg, ckpt.normalisation))
    res = evaluate(
        model,
        batches,
        loss_fn,
        scaling,
        ckpt.thresholds["snr2"],
        ckpt.thresholds["min_area"],
    )
    return {k: float(v) for k, v in res.items()} | {"samples": int(dataset.count())}


def metric_history(tracking_uri: str, run_id: str):
    """Per-epoch metrics as logged to MLflow (one row per epoch; a resumed epoch keeps its
    latest value).  Ray's ``metrics_dataframe`` only holds the kept checkpoints."""
    import mlflow
    import pandas as pd

    client = mlflow.MlflowClient(tracking_uri)
    columns = {}
    for key in HISTORY_KEYS:
        points = sorted(client.get_metric_history(run_id, key), key=lambda m: m.timestamp)
        columns[key] = {m.step: m.value for m in points}
    frame = pd.DataFrame(columns).sort_index()
    frame.insert(0, "epoch", frame.index.astype(int))
    return frame.reset_index(drop=True)


def plot_history(history, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.plot(history["epoch"], history["train_loss"], label="train")
    a.plot(history["epoch"], history["val_loss"], label="validation")
    a.set_xlabel("epoch")
    a.set_ylabel("loss")
    a.legend()
    b.plot(history["epoch"], history["val_veto_accuracy"], label="veto accuracy")
    b.plot(history["epoch"], history["val_denoise_accuracy"], label="denoise accuracy")
    b.set_xlabel("epoch")
    b.set_ylim(0, 1.02)
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
