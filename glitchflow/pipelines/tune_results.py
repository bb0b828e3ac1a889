"""After a search: results table, plot, best config, MLflow run statuses, registration."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from glitchflow.config import Config
from glitchflow.io.atomic import atomic_path
from glitchflow.models.checkpoint import read_checkpoint, save_checkpoint
from glitchflow.models.glitch_model import GlitchModel
from glitchflow.pipelines.calibration import calibrate_checkpoint
from glitchflow.pipelines.tune_space import default_point, write_best_config
from glitchflow.tracking.mlflow_tracking import log_and_register

log = logging.getLogger(__name__)


def _stop_reason(result, max_t: int) -> str:
    if result.error is not None:
        return f"error: {str(result.error).splitlines()[0][:200]}"
    epochs = int(result.metrics.get("training_iteration", 0)) if result.metrics else 0
    return "completed" if epochs >= max_t else "stopped early (ASHA)"


def trial_table(cfg: Config, grid) -> pd.DataFrame:
    """One row per trial: parameters, final and best metric, epochs run, stop reason."""
    tn = cfg.tune
    rows = []
    for result in grid:
        metrics = result.metrics or {}
        history = result.metrics_dataframe
        best = float("nan")
        if history is not None and tn.metric in history:
            series = history[tn.metric].dropna()
            if len(series):
                best = float(series.min() if tn.mode == "min" else series.max())
        row = {"trial_id": metrics.get("trial_id", Path(result.path).name)}
        row |= {k: v for k, v in (result.config or {}).items()}
        row |= {
            f"final_{tn.metric}": metrics.get(tn.metric, float("nan")),
            f"best_{tn.metric}": best,
            "epochs": int(metrics.get("training_iteration", 0)),
            "stop_reason": _stop_reason(result, tn.scheduler.max_t),
            "path": result.path,
        }
        rows.append(row)
    table = pd.DataFrame(rows)
    if len(table):
        table = table.sort_values(f"best_{tn.metric}", ascending=tn.mode == "min")
    return table


def best_result(grid, metric: str, mode: str):
    """The trial with the best finite ``metric`` over its epochs, among trials that did not
    error (a trial that crashed after a good epoch is never the best); raises if none."""
    ranked = []
    for k in range(len(grid)):
        result = grid[k]
        frame = result.metrics_dataframe
        if result.error is not None or frame is None or metric not in frame:
            continue
        series = pd.to_numeric(frame[metric], errors="coerce").replace([np.inf, -np.inf], np.nan)
        series = series.dropna()
        if len(series):
            ranked.append((float(series.min() if mode == "min" else -series.max()), k))
    if not ranked:
        raise RuntimeError(f"no trial finished without error with a finite {metric}")
    return grid[min(ranked)[1]]


def best_checkpoint(cfg: Config, result) -> str | None:
    """Checkpoint path of the best epoch of a trial that still exists on disk."""
    history = result.metrics_dataframe
    if history is None or "checkpoint_path" not in history:
        return None
    kept = history.dropna(subset=["checkpoint_path"])
    kept = kept[[Path(p).exists() for p in kept["checkpoint_path"]]]
    if not len(kept):
        return None
    kept = kept.sort_values(cfg.tune.metric, ascending=cfg.tune.mode == "min")
    return str(kept.iloc[0]["checkpoint_path"])


def finish_runs(uri: str, parent: str, table: pd.DataFrame) -> dict[str, str]:
    """Set each child run's MLflow status from the trial's fate; returns trial -> run id."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    parent_run = client.get_run(parent)
    runs = client.search_runs(
        [parent_run.info.experiment_id], f"tags.mlflow.parentRunId = '{parent}'"
    )
    by_trial = {r.data.tags.get("trial_id"): r for r in runs}
    ids = {}
    for row in table.itertuples():
        run = by_trial.get(row.trial_id)
        if run is None:
            continue
        ids[row.trial_id] = run.info.run_id
        status = {"completed": "FINISHED", "stopped early (ASHA)": "KILLED"}.get(
            row.stop_reason, "FAILED"
        )
        client.set_tag(run.info.run_id, "stop_reason", row.stop_reason)
        client.set_terminated(run.info.run_id, status)
    return ids


def plot_search(cfg: Config, table: pd.DataFrame, path: Path) -> None:
    """Best metric of each trial against every searched parameter."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(cfg.tune.space)
    metric = f"best_{cfg.tune.metric}"
    cols = 4
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.8 * rows), squeeze=False)
    colours = table["stop_reason"].map(
        lambda r: "tab:green" if r == "completed" else "tab:orange" if "early" in r else "tab:red"
    )
    for ax, key in zip(axes.flat, keys):
        dim = cfg.tune.space[key]
        values = table[key] if key in table else pd.Series([None] * len(table))
        if dim.kind == "choice":
            labels = [str(v) for v in dim.values]
            x = [labels.index(str(v)) if str(v) in labels else -1 for v in values]
            ax.set_xticks(range(len(labels)), labels, rotation=20, fontsize=7)
        else:
            x = values
            if dim.kind == "loguniform":
                ax.set_xscale("log")
        ax.scatter(x, table[metric], c=colours, s=25)
        ax.set_title(key.removeprefix("train."), fontsize=9)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    axes[0, 0].set_ylabel(metric)
    fig.suptitle("glitchflow tune: green completed, orange stopped by ASHA, red failed")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def summarise(cfg: Config, grid, data, out: Path, uri: str, parent: str) -> dict:
    """Write trials.csv, search.png, best_config.yaml; statuses; register the best model."""
    import mlflow

    tn = cfg.tune
    table = trial_table(cfg, grid)
    with atomic_path(out / "trials.csv") as tmp:
        table.to_csv(tmp, index=False)
    plot_search(cfg, table, out / "search.png")
    run_ids = finish_runs(uri, parent, table)
    client = mlflow.MlflowClient(uri)
    summary: dict = {
        "trials": len(table),
        "completed": int((table["stop_reason"] == "completed").sum()) if len(table) else 0,
        "stopped_early": int(table["stop_reason"].str.startswith("stopped").sum())
        if len(table)
        else 0,
        "failed": int(table["stop_reason"].str.startswith("error").sum()) if len(table) else 0,
        "metric": tn.metric,
        "mode": tn.mode,
        "parent_run_id": parent,
        "tracking_uri": uri,
        "registered": None,
    }
    best = best_result(grid, tn.metric, tn.mode)
    params = {k: v for k, v in (best.config or {}).items()}
    best_id = best.metrics.get("trial_id")
    summary["best"] = {
        "trial_id": best_id,
        "params": params,
        f"best_{tn.metric}": float(table.set_index("trial_id").loc[best_id, f"best_{tn.metric}"]),
    }
    default = default_point(cfg)
    same = table[
        [all(str(r.get(k)) == str(v) for k, v in default.items()) for _, r in table.iterrows()]
    ]
    if len(same):
        summary["default"] = {
            "params": default,
            f"best_{tn.metric}": float(same.iloc[0][f"best_{tn.metric}"]),
            "stop_reason": same.iloc[0]["stop_reason"],
        }
    write_best_config(cfg, params, out / "best_config.yaml")
    ckpt_path = best_checkpoint(cfg, best)
    if ckpt_path and best_id in run_ids:
        ckpt = calibrate_checkpoint(read_checkpoint(ckpt_path), data.datasets["val"], cfg)
        best_file = save_checkpoint(ckpt, out / "best_model.pt")
        model = GlitchModel.from_checkpoint(ckpt)
        example = torch.zeros(1, model.n_aux, model.crop, model.crop)
        summary["registered"] = log_and_register(
            uri,
            run_ids[best_id],
            best_file,
            model,
            example,
            cfg.train.mlflow.registered_model,
            cfg.train.mlflow.alias,
            [out / "trials.csv", out / "search.png", out / "best_config.yaml"],
        )
    else:
        log.warning("no checkpoint of the best trial %s is left: nothing registered", best_id)
    value = summary["best"][f"best_{tn.metric}"]
    if math.isfinite(value):
        client.log_metric(parent, f"best_{tn.metric}", value)
    client.log_artifact(parent, str(out / "trials.csv"))
    client.log_artifact(parent, str(out / "search.png"))
    client.set_terminated(parent, "FINISHED")
    return summary
