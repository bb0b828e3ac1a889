"""Figures and MLflow records of the subtraction model (``fit-clean``) and its use (``clean``)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from glitchflow.config import Config
from glitchflow.models.subtraction import SubtractionModel
from glitchflow.tracking.mlflow_tracking import default_artifact_location, default_tracking_uri
from glitchflow.tracking.mlflow_tracking import start_run as start

log = logging.getLogger(__name__)


def plot_couplings(
    model: SubtractionModel, examples: list[dict], png: Path, tensorboard: Path | None
) -> None:
    """Coupling FIRs (whitened strain per whitened witness, against lag in ms) and held-out
    fits (whitened strain, fitted glitch, residual) as a PNG and a TensorBoard figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_ex = len(examples)
    fig, axes = plt.subplots(1 + n_ex, 1, figsize=(9, 2.6 * (1 + n_ex)), squeeze=False)
    lag_ms = model.lags / model.sample_rate * 1e3
    ax = axes[0, 0]
    for name in model.channels:
        ax.plot(lag_ms, model.firs[name], label=name)
    ax.set_xlabel("lag (ms): strain after witness")
    ax.set_ylabel("coupling FIR")
    ax.legend(fontsize=8)
    for ax, ex in zip(axes[1:, 0], examples):
        t = (np.arange(len(ex["strain"])) - len(ex["strain"]) // 2) / model.sample_rate
        ax.plot(t, ex["strain"], lw=0.6, color="0.5", label="whitened strain")
        ax.plot(t, ex["fitted"], lw=0.9, label="subtracted")
        ax.plot(t, ex["strain"] - ex["fitted"], lw=0.6, label="residual")
        ax.set_xlim(-0.3, 0.3)
        ax.set_title(
            f"{ex['channel']} GPS {ex['gps']:.3f}, {ex['frequency']:.0f} Hz, "
            f"fit SNR {ex['fit_snr']:.1f}",
            fontsize=9,
        )
        ax.legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("time from witness trigger (s)")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    if tensorboard is not None:
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(str(tensorboard)) as writer:
            writer.add_figure("subtraction/couplings_and_fits", fig, 0)
            for name in model.channels:
                for k, value in enumerate(model.firs[name]):
                    writer.add_scalar(f"subtraction/fir/{name}", float(value), int(model.lags[k]))
    plt.close(fig)


def log_fit(cfg: Config, out: Path, summary: dict, tracking_uri: str | None, alias: str) -> dict:
    """An MLflow run (settings, held-out metrics, checkpoint, figure) and a registry version
    of ``clean.model_name`` under ``alias``; returns the registered URI and version."""
    import mlflow

    uri = tracking_uri or default_tracking_uri(out)
    name = cfg.clean.model_name
    run_id = start(
        uri,
        cfg.train.mlflow.experiment,
        f"fit-clean-{Path(out).name}",
        {"clean": cfg.clean.model_dump(mode="json"), "witnesses": summary["witnesses"]},
        {"glitchflow.stage": "fit-clean"},
        default_artifact_location(out),
    )
    client = mlflow.MlflowClient(uri, registry_uri=uri)
    for w, v in summary["validation"].items():
        short = w.split(":")[-1]
        for key in ("triggers", "subtracted", "median_fit_snr"):
            client.log_metric(run_id, f"val_{key}.{short}", float(v[key]))
    for w, n in summary["training_triggers"].items():
        client.log_metric(run_id, f"train_triggers.{w.split(':')[-1]}", float(n))
    client.log_artifact(run_id, str(out / "model.pt"), "checkpoint")
    for extra in ("couplings.png", "validation.csv"):
        if (out / extra).exists():
            client.log_artifact(run_id, str(out / extra))
    client.set_terminated(run_id)
    try:
        client.get_registered_model(name)
    except Exception:
        client.create_registered_model(name)
    run = client.get_run(run_id)
    version = client.create_model_version(
        name, f"{run.info.artifact_uri}/checkpoint", run_id=run_id
    )
    client.set_registered_model_alias(name, alias, version.version)
    log.info("fit-clean: registered %s version %s as @%s", name, version.version, alias)
    return {
        "name": name,
        "version": int(version.version),
        "alias": alias,
        "uri": f"models:/{name}@{alias}",
        "run_id": run_id,
        "tracking_uri": uri,
    }
