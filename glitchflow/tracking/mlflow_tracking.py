"""MLflow for Ray Train: a Train V2 ``UserCallback`` plus driver-side run and registry helpers.

Train V2 accepts only ``ray.train.UserCallback`` subclasses, whose hooks run in
the controller actor.  The driver creates the MLflow run (parameters, tags)
and hands its id to :class:`MlflowTrainCallback`, which logs every epoch's
metrics as soon as the workers report them (visible while training runs) and
uploads each reported checkpoint.  After ``fit`` the driver logs the final
model with a signature and registers it under an alias.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

from ray.train import UserCallback

log = logging.getLogger(__name__)


def default_tracking_uri(out: str | Path) -> str:
    """A sqlite store under ``out`` (MLflow 3 refuses the plain file store)."""
    return f"sqlite:///{Path(out).resolve() / 'mlflow.db'}"


def default_artifact_location(out: str | Path) -> str:
    return (Path(out).resolve() / "mlartifacts").as_uri()


def start_run(
    tracking_uri: str,
    experiment: str,
    run_name: str,
    params: dict,
    tags: dict,
    artifact_location: str | None = None,
    parent_run_id: str | None = None,
) -> str:
    """Create the run on the driver (a child run when ``parent_run_id`` is given); returns
    its id.  A new experiment stores artifacts at ``artifact_location``."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        exp_id = client.create_experiment(experiment, artifact_location=artifact_location)
    else:
        exp_id = exp.experiment_id
    if parent_run_id:
        tags = dict(tags) | {"mlflow.parentRunId": parent_run_id}
    run = client.create_run(exp_id, run_name=run_name, tags=tags)
    for key, value in flatten(params).items():
        client.log_param(run.info.run_id, key, str(value)[:500])
    return run.info.run_id


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out |= flatten(v, key + ".")
        else:
            out[key] = v
    return out


class MlflowTrainCallback(UserCallback):
    """Logs rank-0 metrics per report and the reported checkpoints to an existing run."""

    def __init__(self, tracking_uri: str, run_id: str, log_checkpoints: bool = True) -> None:
        self.tracking_uri = tracking_uri
        self.run_id = run_id
        self.log_checkpoints = log_checkpoints

    def after_report(self, run_context, metrics, checkpoint) -> None:
        import mlflow

        client = mlflow.MlflowClient(self.tracking_uri)
        first = metrics[0] if metrics else {}
        step = int(first.get("epoch", 0))
        for key, value in first.items():
            if isinstance(value, int | float) and math.isfinite(float(value)):
                client.log_metric(self.run_id, key, float(value), step=step)
        if checkpoint is not None and self.log_checkpoints:
            try:
                with checkpoint.as_directory() as directory:
                    client.log_artifacts(self.run_id, directory, f"checkpoints/epoch_{step:04d}")
            except Exception as exc:  # never kill training over an upload
                log.warning("could not upload checkpoint of epoch %d: %s", step, exc)

    def after_exception(self, run_context, worker_exceptions) -> None:
        import mlflow

        client = mlflow.MlflowClient(self.tracking_uri)
        text = "; ".join(f"rank {r}: {e!r}" for r, e in worker_exceptions.items())
        client.set_tag(self.run_id, "last_worker_failure", text[:5000])


@dataclass(frozen=True)
class RegisteredModel:
    """A model version in the MLflow registry and the alias that was set on it."""

    name: str
    version: int
    alias: str
    uri: str  # models:/NAME@ALIAS


def log_and_register(
    tracking_uri: str,
    run_id: str,
    checkpoint_file: Path,
    model,
    example,
    registered_model: str,
    alias: str,
    extra_artifacts: list[Path] = (),
) -> RegisteredModel:
    """Log the final model (with signature) and its checkpoint; register it under an alias."""
    import mlflow
    import mlflow.pytorch
    from mlflow.models import infer_signature

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)  # the registry lives in the same store
    client = mlflow.MlflowClient(tracking_uri, registry_uri=tracking_uri)
    with mlflow.start_run(run_id=run_id):
        client.log_artifact(run_id, str(checkpoint_file), "checkpoint")
        for path in extra_artifacts:
            client.log_artifact(run_id, str(path))
        with_output = model(example).detach().numpy()
        info = mlflow.pytorch.log_model(
            model,
            name="model",
            signature=infer_signature(example.numpy(), with_output),
            input_example=example.numpy(),
            serialization_format="pickle",
        )
    version = mlflow.register_model(info.model_uri, registered_model)
    client.set_registered_model_alias(registered_model, alias, version.version)
    client.set_model_version_tag(registered_model, version.version, "run_id", run_id)
    return RegisteredModel(
        registered_model, int(version.version), alias, f"models:/{registered_model}@{alias}"
    )
