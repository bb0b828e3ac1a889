"""Resolve a model URI to a self-describing checkpoint.

Accepted URIs:

* ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``: the MLflow registry;
  the checkpoint is the ``checkpoint/*.pt`` artifact that ``glitchflow
  train`` logs beside the MLflow model of the same run;
* a path to a ``model.pt`` file or to a directory holding one.

The tracking URI comes from the argument, else ``$MLFLOW_TRACKING_URI``.
Checkpoints load with ``torch.load(weights_only=True)``: nothing is unpickled.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from glitchflow.models.checkpoint import Checkpoint, read_checkpoint
from glitchflow.models.subtraction import SubtractionModel

MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


@dataclass
class ResolvedModel:
    """A checkpoint and where it came from."""

    ckpt: Checkpoint
    uri: str
    name: str
    version: str
    run_id: str | None
    tracking_uri: str | None

    @property
    def pinned_uri(self) -> str:
        """The URI of exactly this checkpoint: ``models:/NAME/VERSION`` for a registry
        model (whatever alias found it), the path otherwise."""
        return f"models:/{self.name}/{self.version}" if self.run_id else self.uri

    def describe(self) -> dict:
        return {
            "uri": self.uri,
            "name": self.name,
            "version": self.version,
            "run_id": self.run_id,
        }


class RegistryError(RuntimeError):
    """The registry could not be asked (outage, timeout, permissions): unlike
    :class:`LookupError` (the model or alias does not exist), this says nothing about
    which model is in production, so callers must not act as if there were none."""


def is_not_found(exc: Exception) -> bool:
    """An MLflow answer that the name, version or alias does not exist."""
    code = getattr(exc, "error_code", None)
    return code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE") and (
        "not found" in str(exc).lower() or "does not exist" in str(exc).lower()
    )


def resolve_model(uri: str, tracking_uri: str | None = None) -> ResolvedModel:
    """Load the checkpoint behind ``uri``; errors name the URI and what is missing."""
    match = MODEL_URI.match(uri)
    if match is None:
        path = Path(uri)
        if not path.exists():
            raise FileNotFoundError(
                f"{uri}: neither a checkpoint path nor a models:/NAME@ALIAS or "
                "models:/NAME/VERSION URI"
            )
        ckpt = read_checkpoint(path)
        return ResolvedModel(ckpt, uri, path.stem, str(ckpt.epoch), None, None)
    import mlflow

    tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not tracking_uri:
        raise ValueError(f"{uri}: a registry URI needs --tracking-uri or $MLFLOW_TRACKING_URI")
    client = mlflow.MlflowClient(tracking_uri, registry_uri=tracking_uri)
    name = match["name"]
    try:
        if match["alias"]:
            version = client.get_model_version_by_alias(name, match["alias"])
        else:
            version = client.get_model_version(name, match["version"])
    except Exception as exc:
        if is_not_found(exc):
            raise LookupError(f"{uri}: not in the registry at {tracking_uri} ({exc})") from None
        raise RegistryError(
            f"{uri}: the registry at {tracking_uri} did not answer ({type(exc).__name__}: "
            f"{str(exc)[:300]}); nothing was changed"
        ) from exc
    files = [a.path for a in client.list_artifacts(version.run_id, "checkpoint")]
    files = [f for f in files if f.endswith(".pt")]
    if not files:
        raise LookupError(f"{uri}: run {version.run_id} has no checkpoint/*.pt artifact")
    with tempfile.TemporaryDirectory() as tmp:
        local = client.download_artifacts(version.run_id, files[0], tmp)
        ckpt = read_checkpoint(local)
    return ResolvedModel(ckpt, uri, name, str(version.version), version.run_id, tracking_uri)


def current_version(uri: str, tracking_uri: str | None = None) -> str | None:
    """Registry version an alias URI points at now (None for paths and fixed versions)."""
    match = MODEL_URI.match(uri)
    if match is None or not match["alias"]:
        return None
    import mlflow

    tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    client = mlflow.MlflowClient(tracking_uri, registry_uri=tracking_uri)
    return str(client.get_model_version_by_alias(match["name"], match["alias"]).version)


def resolve_subtraction(uri: str, tracking_uri: str | None = None):
    """Load the :class:`~glitchflow.models.subtraction.SubtractionModel` behind ``uri``
    (a ``model.pt`` path, its directory, or ``models:/NAME@ALIAS`` / ``models:/NAME/VERSION``)
    and return ``(model, description)``; errors name the URI."""

    match = MODEL_URI.match(uri)
    if match is None:
        path = Path(uri)
        path = path / "model.pt" if path.is_dir() else path
        if not path.is_file():
            raise FileNotFoundError(
                f"{uri}: neither a subtraction checkpoint (model.pt) nor a models:/NAME@ALIAS "
                "or models:/NAME/VERSION URI"
            )
        model = SubtractionModel.load(path)
        return model, {"uri": uri, "name": path.stem, "version": "", "run_id": None}
    import mlflow

    tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not tracking_uri:
        raise ValueError(f"{uri}: a registry URI needs --tracking-uri or $MLFLOW_TRACKING_URI")
    client = mlflow.MlflowClient(tracking_uri, registry_uri=tracking_uri)
    try:
        if match["alias"]:
            version = client.get_model_version_by_alias(match["name"], match["alias"])
        else:
            version = client.get_model_version(match["name"], match["version"])
    except Exception as exc:
        if is_not_found(exc):
            raise LookupError(f"{uri}: not in the registry at {tracking_uri} ({exc})") from None
        raise RegistryError(
            f"{uri}: the registry at {tracking_uri} did not answer ({exc})"
        ) from exc
    with tempfile.TemporaryDirectory() as tmp:
        local = client.download_artifacts(version.run_id, "checkpoint/model.pt", tmp)
        model = SubtractionModel.load(local)
    return model, {
        "uri": uri,
        "name": match["name"],
        "version": str(version.version),
        "run_id": version.run_id,
    }
