"""Ray Tune search: interrupted and resumed, ASHA stops trials, MLflow parent/children, best
model registered, outputs usable by `glitchflow train`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import mlflow
import pandas as pd
import pytest
import yaml

from glitchflow.config import load_config
from tests.conftest import CONFIGS, REPO, TRAIN_OVERRIDES

pytestmark = pytest.mark.timeout(900)

SPACE = {
    "train.model.name": {"kind": "choice", "values": ["unet", "unet_res_att"]},
    "train.model.base": {"kind": "choice", "values": [4, 8]},
    # a learning rate that cannot learn in three epochs: ASHA must stop those trials
    "train.lr": {"kind": "choice", "values": [1e-7, 0.003]},
}
TUNE_OVERRIDES = [
    *TRAIN_OVERRIDES,
    f"tune.space={json.dumps(SPACE)}",
    "tune.num_samples=4",
    "tune.scheduler.max_t=3",
    "tune.scheduler.grace_period=1",
    "tune.scheduler.reduction_factor=2",
    "train.augment_shifts=1",  # aligned crops only: the search, not the data, is under test
]


def _finished_trials(out) -> set[str]:
    """Trial directories whose result.json reached the last epoch."""
    done = set()
    for result in (out / "ray_results" / "search").glob("*/result.json"):
        lines = result.read_text().splitlines()
        if lines and json.loads(lines[-1]).get("training_iteration") == 3:
            done.add(result.parent.name)
    return done


def test_search_interrupted_resumed_asha_and_registered(tiny_dataset, ray_local, tmp_path):
    from glitchflow.pipelines.tune import run_tune

    out = tmp_path / "tune"
    address = ray_local.get_runtime_context().gcs_address
    cmd = [
        sys.executable,
        "-m",
        "glitchflow.cli",
        "tune",
        "--config",
        str(CONFIGS / "demo.yaml"),
        "--data",
        str(tiny_dataset),
        "--out",
        str(out),
        "--address",
        address,
        *TUNE_OVERRIDES,
    ]
    env = os.environ | {"PYTHONPATH": str(REPO)}
    log = (tmp_path / "tune.log").open("w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log, start_new_session=True)
    deadline = time.monotonic() + 400
    while not _finished_trials(out) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(1)
    tail = (tmp_path / "tune.log").read_text()[-3000:]
    assert proc.poll() is None, f"the search ended before it could be interrupted:\n{tail}"
    assert _finished_trials(out)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver dies mid-search
    proc.wait()
    time.sleep(3)
    done_before = _finished_trials(out)

    cfg = load_config(CONFIGS / "demo.yaml", TUNE_OVERRIDES)
    summary = run_tune(cfg, tiny_dataset, out, resume=True)

    table = pd.read_csv(out / "trials.csv")
    assert len(table) == 4 == summary.trials
    assert summary.stopped_early >= 1, table[["trial_id", "epochs", "stop_reason"]]
    assert summary.failed == 0
    # finished trials were not run again: their history still has one row per epoch
    for trial_dir in (out / "ray_results" / "search").iterdir():
        if trial_dir.name in done_before:
            progress = pd.read_csv(trial_dir / "progress.csv")
            assert len(progress) == 3
    # the default architecture was a trial, and the best config is one train accepts
    assert summary.default is not None
    best = load_config(out / "best_config.yaml")
    assert best.train.epochs == 3
    params = summary.best["params"]
    assert best.train.model.name == params["train.model.name"]
    assert (out / "search.png").is_file()
    # MLflow: one parent, one child per trial with per-epoch metrics and a status
    client = mlflow.MlflowClient(summary.tracking_uri)
    parent = client.get_run(summary.parent_run_id)
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    by_trial = {}
    for run in children:
        by_trial.setdefault(run.data.tags["trial_id"], []).append(run)
    assert set(by_trial) == set(table.trial_id)
    statuses = {run.info.status for runs in by_trial.values() for run in runs}
    assert "KILLED" in statuses and "FINISHED" in statuses
    some = by_trial[summary.best["trial_id"]][0]
    assert len(client.get_metric_history(some.info.run_id, "val_loss")) >= 1
    assert parent.info.status == "FINISHED"
    # the best trial's model is registered under the alias
    reg = summary.registered
    version = client.get_model_version_by_alias(reg.name, reg.alias)
    assert version.run_id in {r.info.run_id for r in by_trial[summary.best["trial_id"]]}
    yaml.safe_load((out / "best_config.yaml").read_text())


def test_search_space_trial_configs_and_searchers():
    from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter

    from glitchflow.config import ConfigError
    from glitchflow.pipelines.tune import (
        _searcher,
        default_point,
        dimensions,
        search_space,
        trial_config,
    )

    cfg = load_config(CONFIGS / "demo.yaml", ["tune.max_concurrent_trials=2"])
    space = search_space(cfg)
    assert set(space) == set(cfg.tune.space)
    trial = trial_config(cfg, {"train.model.name": "unet", "train.loss.ssim_weight": 0.3})
    assert trial.train.model.name == "unet" and trial.train.epochs == cfg.tune.scheduler.max_t
    assert trial.train.loss.l1_weight == pytest.approx(0.7)
    assert default_point(cfg)["train.model.name"] == cfg.train.model.name
    # switches the config leaves unset are the architecture's defaults, not a new choice
    assert cfg.train.model.attention is None and cfg.train.model.name == "unet_res_att"
    assert default_point(cfg)["train.model.attention"] is True
    assert dimensions(cfg)["train.model.attention"].values == [True, False]
    random = _searcher(cfg)
    assert isinstance(random, BasicVariantGenerator) and random.max_concurrent == 2
    optuna_cfg = load_config(CONFIGS / "demo.yaml", ["tune.search=optuna"])
    optuna = _searcher(optuna_cfg)
    assert isinstance(optuna, ConcurrencyLimiter)
    # the default batch size (10) is not among the searched (8, 16): the space takes it in,
    # and Optuna's first suggestion is the default point
    assert cfg.train.batch_size not in cfg.tune.space["train.batch_size"].values
    optuna.set_search_properties("val_l1", "min", search_space(optuna_cfg))
    assert optuna.suggest("t0") == default_point(optuna_cfg)
    assert optuna.suggest("t1") is None  # one trial at a time
    optuna.on_trial_complete("t0", {"val_l1": 0.1, "training_iteration": 1})
    assert optuna.suggest("t1")["train.batch_size"] in (8, 10, 16)
    with pytest.raises(ConfigError, match="train"):
        load_config(
            CONFIGS / "demo.yaml", ['tune.space={"seed": {"kind": "choice", "values": [1]}}']
        )
    with pytest.raises(ConfigError, match="low < high"):
        load_config(
            CONFIGS / "demo.yaml",
            ['tune.space={"train.lr": {"kind": "loguniform", "low": 1, "high": 0.1}}'],
        )
    with pytest.raises(ConfigError, match="use val_l1"):
        load_config(CONFIGS / "demo.yaml", ["tune.metric=val_loss"])  # ssim_weight searched
    with pytest.raises(ConfigError, match="best at its max"):
        load_config(CONFIGS / "demo.yaml", ["tune.metric=val_veto_accuracy"])
    load_config(
        CONFIGS / "demo.yaml",
        ["tune.metric=val_loss", f"tune.space={json.dumps(SPACE)}"],
    )
    from glitchflow.pipelines.tune import check_space

    bad = load_config(
        CONFIGS / "demo.yaml",
        ['tune.space={"train.model.name": {"kind": "choice", "values": ["unet", "transformer"]}}'],
    )
    with pytest.raises(ConfigError, match="transformer"):
        check_space(bad)


def test_an_errored_trial_is_never_the_best():
    """A trial that crashed after its best epoch, or reported only NaN/Inf, is not chosen."""
    from types import SimpleNamespace

    import numpy as np
    import pandas as pd

    from glitchflow.pipelines.tune_results import best_result

    def trial(name, losses, error=None):
        frame = pd.DataFrame({"val_loss": losses})
        return SimpleNamespace(name=name, error=error, metrics_dataframe=frame)

    grid = [
        trial("finished", [0.5, 0.3]),
        trial("crashed", [0.1], error=RuntimeError("worker died")),
        trial("diverged", [np.nan, np.inf]),
    ]
    assert best_result(grid, "val_loss", "min").name == "finished"
    assert best_result(grid, "val_loss", "max").name == "finished"
    with pytest.raises(RuntimeError, match="no trial finished"):
        best_result(grid[1:], "val_loss", "min")
