"""``glitchflow tune``: ASHA over architectures and training settings with Ray Tune.

Every trial is a Tune function trainable that fits the same ``TorchTrainer``
as ``glitchflow train`` (:func:`~glitchflow.pipelines.train.make_trainer`) on
the same prepared datasets, with the sampled values applied to the config as
overrides.  Ray Train's ``TuneReportCallback`` forwards each epoch's metrics
to Tune (ASHA decides on them) and :class:`MlflowTrainCallback` logs them to
the trial's MLflow child run under one parent run for the experiment.

Resources: a trial's driver takes ``tune.trial_cpus`` (default 0.05) and its
training workers take ``train.workers x train.cpus_per_worker`` (and GPUs);
``tune.max_concurrent_trials`` trials run at once, checked against the cluster
before anything starts.  Outputs in OUT: ``trials.csv``, ``search.png``,
``best_config.yaml`` (a config ``glitchflow train`` accepts), ``tune_summary.json``;
the best trial's model is registered.  ``resume=True`` continues an interrupted
experiment with ``Tuner.restore`` (finished trials are not run again).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from glitchflow.config import Config, ConfigError, config_hash, validate_config
from glitchflow.io.atomic import write_json_atomic
from glitchflow.models.registry import list_models
from glitchflow.pipelines.runtime import (
    check_resources,
    check_shared_storage,
    release_orphaned_placement_groups,
    verbose,
)
from glitchflow.pipelines.staging import claim_out
from glitchflow.pipelines.train import loop_config, make_trainer
from glitchflow.pipelines.training_data import prepare_training_data
from glitchflow.pipelines.tune_results import summarise
from glitchflow.pipelines.tune_space import default_point, trial_config
from glitchflow.tracking.mlflow_tracking import (
    MlflowTrainCallback,
    RegisteredModel,
    default_artifact_location,
    default_tracking_uri,
    start_run,
)

log = logging.getLogger(__name__)

EXPERIMENT = "search"
STATE = "tune_state.json"
#: what a search writes under OUT (the MLflow store there is shared, not a product)
TUNE_PRODUCTS = [
    STATE,
    "ray_results",
    "trials",
    "trials.csv",
    "search.png",
    "best_config.yaml",
    "best_model.pt",
    "tune_summary.json",
]


def dimensions(cfg: Config) -> dict:
    """``tune.space``, widened to hold the default point when ``tune.include_default``.

    A model-based searcher (Optuna) only accepts points inside its distributions, and
    the base config's values (batch size 10, say) need not be among the searched ones:
    a missing choice is added, a range is stretched to reach the default.
    """
    dims = dict(cfg.tune.space)
    if not cfg.tune.include_default:
        return dims
    for key, value in default_point(cfg).items():
        dim = dims[key]
        if dim.kind == "choice":
            if value not in dim.values:
                dims[key] = dim.model_copy(update={"values": [*dim.values, value]})
        else:
            top = value + 1 if dim.kind == "randint" else value  # randint: high exclusive
            low, high = min(dim.low, value), max(dim.high, top)
            if (low, high) != (dim.low, dim.high):
                dims[key] = dim.model_copy(update={"low": low, "high": high})
        if dims[key] is not dim:
            log.info("tune.space %s widened to hold the default %r", key, value)
    return dims


def search_space(cfg: Config) -> dict:
    """Ray Tune distributions of :func:`dimensions` (flat dotted keys)."""
    from ray import tune

    space = {}
    for key, dim in dimensions(cfg).items():
        if dim.kind == "choice":
            space[key] = tune.choice(list(dim.values))
        elif dim.kind == "uniform":
            space[key] = tune.uniform(dim.low, dim.high)
        elif dim.kind == "loguniform":
            space[key] = tune.loguniform(dim.low, dim.high)
        else:
            space[key] = tune.randint(int(dim.low), int(dim.high))
    return space


def tune_trial(params: dict, base: dict, data, out: str, tracking_uri: str, parent: str) -> None:
    """One trial: fit the training code with the sampled values (runs in a Tune actor)."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    cfg = trial_config(validate_config(base), params)
    trial_id = tune.get_context().get_trial_id()
    trial_out = Path(out) / "trials" / trial_id
    trial_out.mkdir(parents=True, exist_ok=True)
    loop = loop_config(cfg, data, trial_out)
    run_id = child_run(tracking_uri, parent, trial_id)  # a resumed trial keeps its run
    if run_id is None:
        run_id = start_run(
            tracking_uri,
            cfg.train.mlflow.experiment,
            f"trial-{trial_id}",
            params | {"model": loop["model"]},
            {"trial_id": trial_id, "stage": "tune-trial"},
            parent_run_id=parent,
        )
    callbacks = [TuneReportCallback(), MlflowTrainCallback(tracking_uri, run_id, False)]
    make_trainer(cfg, data, trial_out, loop, callbacks, name=f"trial_{trial_id}").fit()


def child_run(tracking_uri: str, parent: str, trial_id: str) -> str | None:
    """The MLflow child run of ``trial_id`` under ``parent``, if one exists."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    experiment = client.get_run(parent).info.experiment_id
    runs = client.search_runs(
        [experiment],
        f"tags.mlflow.parentRunId = '{parent}' and tags.trial_id = '{trial_id}'",
    )
    return runs[0].info.run_id if runs else None


def _searcher(cfg: Config):
    points = [default_point(cfg)] if cfg.tune.include_default else None
    if cfg.tune.search == "optuna":
        from ray.tune.search import ConcurrencyLimiter
        from ray.tune.search.optuna import OptunaSearch

        return ConcurrencyLimiter(
            OptunaSearch(points_to_evaluate=points, seed=cfg.seed),
            max_concurrent=cfg.tune.max_concurrent_trials,
        )
    from ray.tune.search import BasicVariantGenerator

    # Tune ignores max_concurrent_trials for a generator instance: the limit goes here
    return BasicVariantGenerator(
        points_to_evaluate=points,
        random_state=cfg.seed,
        max_concurrent=cfg.tune.max_concurrent_trials,
    )


def check_trial_resources(cfg: Config) -> None:
    tr, tn = cfg.train, cfg.tune
    per_trial = tn.trial_cpus + tr.workers * tr.cpus_per_worker
    gpus = tr.workers if tr.use_gpu else 0
    check_resources(
        per_trial * tn.max_concurrent_trials, gpus * tn.max_concurrent_trials, "tune trials"
    )


@dataclass(frozen=True)
class TuneResult:
    """What ``glitchflow tune`` produced (also OUT/tune_summary.json).

    Trials by outcome (``completed``, ``stopped_early`` by ASHA, ``failed``); ``best``:
    the best trial's id, parameters and ``best_<metric>``; ``default``: the same for the
    trial at the config's own architecture, when one ran; ``registered``: the best
    model's registry entry (None when its checkpoint was not kept); ``wall_seconds``: s."""

    trials: int
    completed: int
    stopped_early: int
    failed: int
    metric: str
    mode: str
    parent_run_id: str
    tracking_uri: str
    registered: RegisteredModel | None
    best: dict
    wall_seconds: float
    default: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def run_tune(
    cfg: Config, data_dir: str | Path, out: str | Path, resume: bool = False, overwrite=False
) -> TuneResult:
    """Run (or resume) the search; write the outputs; register the best model.  A new
    search refuses a previous one's products in ``out`` unless ``overwrite`` replaces them
    (``resume`` continues it instead)."""
    from ray import tune

    t0 = time.perf_counter()
    out = Path(out).resolve()
    release_orphaned_placement_groups()  # an interrupted search may have left some
    check_trial_resources(cfg)
    if not (resume and (out / STATE).is_file()):  # a new search: never mix with an old one
        out = claim_out(out, TUNE_PRODUCTS, "tune", overwrite)
    check_shared_storage(out)
    check_space(cfg)
    uri = cfg.train.mlflow.tracking_uri or default_tracking_uri(out)
    state, resume = _search_state(cfg, data_dir, out, uri, resume)
    data = prepare_training_data(cfg, data_dir)
    trainable = tune.with_resources(
        tune.with_parameters(
            tune_trial,
            base=cfg.model_dump(mode="json"),
            data=data,
            out=str(out),
            tracking_uri=uri,
            parent=state["parent_run_id"],
        ),
        {"CPU": cfg.tune.trial_cpus},
    )
    experiment = out / "ray_results" / EXPERIMENT
    if resume and tune.Tuner.can_restore(str(experiment)):
        tuner = tune.Tuner.restore(str(experiment), trainable, resume_errored=True)
    else:
        tuner = _new_tuner(cfg, trainable, out)
    if not verbose():  # Tune's new console output prints its start block even at verbose=0
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    grid = tuner.fit()
    summary = summarise(cfg, grid, data, out, uri, state["parent_run_id"])
    result = TuneResult(**summary, wall_seconds=round(time.perf_counter() - t0, 1))
    write_json_atomic(out / "tune_summary.json", result.to_dict(), default=float)
    return result


def _search_state(cfg: Config, data_dir, out: Path, uri: str, resume: bool):
    """The search's state (its MLflow parent run), read back when resuming, else started
    and written; and whether this is a resume."""
    state_file = out / STATE
    if resume and state_file.is_file():
        return json.loads(state_file.read_text()), True
    if resume:
        log.warning("%s not found: starting a new search", state_file)
    parent = start_run(
        uri,
        cfg.train.mlflow.experiment,
        f"tune-{config_hash(cfg)}",
        {"tune": cfg.tune.model_dump(mode="json"), "data": str(data_dir)},
        {"stage": "tune", "config_hash": config_hash(cfg)},
        artifact_location=default_artifact_location(out),
    )
    state = {"parent_run_id": parent, "config": cfg.model_dump(mode="json")}
    write_json_atomic(state_file, state)
    return state, False


def _new_tuner(cfg: Config, trainable, out: Path):
    """A Tuner over the configured space with ASHA and the configured searcher."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    tn = cfg.tune
    return tune.Tuner(
        trainable,
        param_space=search_space(cfg),
        tune_config=tune.TuneConfig(
            metric=tn.metric,
            mode=tn.mode,
            num_samples=tn.num_samples,
            search_alg=_searcher(cfg),
            # one more than the epochs a trial runs: a trial that reaches the last
            # epoch ends by itself instead of being stopped while Ray Train shuts
            # its run down (a stop in that moment can strand the run's workers)
            scheduler=ASHAScheduler(
                time_attr="training_iteration",
                max_t=tn.scheduler.max_t + 1,
                grace_period=tn.scheduler.grace_period,
                reduction_factor=tn.scheduler.reduction_factor,
            ),
        ),
        run_config=tune.RunConfig(
            name=EXPERIMENT,
            storage_path=str(out / "ray_results"),
            # Tune's status tables only with --verbose; a progress bar otherwise
            verbose=1 if verbose() else 0,
            callbacks=[] if verbose() else [trial_progress(tn.num_samples, tn.metric, tn.mode)],
        ),
    )


def trial_progress(total: int, metric: str, mode: str = "min"):
    """A Tune callback drawing one tqdm bar over the trials (finished or stopped early,
    errored), with the best ``metric`` so far (``mode`` min or max)."""
    from ray.tune import Callback
    from tqdm.auto import tqdm

    class TrialProgress(Callback):
        def __init__(self) -> None:
            self.bar = None
            self.best: float | None = None

        def _step(self, trial) -> None:
            if self.bar is None:
                self.bar = tqdm(total=total, desc="tune", unit="trial")
            value = (trial.last_result or {}).get(metric)
            sign = 1.0 if mode == "min" else -1.0
            if value is not None and (self.best is None or sign * (value - self.best) < 0):
                self.best = float(value)
            if self.best is not None:
                self.bar.set_postfix({metric: f"{self.best:.4g}"})
            self.bar.update(1)

        def on_trial_complete(self, iteration, trials, trial, **info) -> None:
            self._step(trial)

        def on_trial_error(self, iteration, trials, trial, **info) -> None:
            self._step(trial)

        def on_experiment_end(self, trials, **info) -> None:
            if self.bar is not None:
                self.bar.close()

    return TrialProgress()


def check_space(cfg: Config) -> None:
    """Fail before any trial: every architecture name exists, and the lowest and highest
    value of every dimension give a valid config."""

    dim = cfg.tune.space.get("train.model.name")
    names = list(dim.values) if dim is not None and dim.kind == "choice" else []
    unknown = [n for n in names if n not in list_models()]
    if unknown:
        raise ConfigError(
            f"tune.space: unknown architectures {unknown}; known: {', '.join(list_models())}"
        )
    for params in _corner_samples(cfg):
        trial_config(cfg, params)


def _corner_samples(cfg: Config) -> list[dict]:
    """The lowest and highest value of every searched dimension (a config check before
    Ray)."""
    low, high = {}, {}
    for key, dim in dimensions(cfg).items():
        if dim.kind == "choice":
            low[key], high[key] = dim.values[0], dim.values[-1]
        elif dim.kind == "randint":
            low[key], high[key] = int(dim.low), int(dim.high) - 1
        else:
            low[key], high[key] = dim.low, dim.high
    return [low, high]
