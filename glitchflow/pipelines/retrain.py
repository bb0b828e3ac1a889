"""``glitchflow retrain``: keep the model fresh as the detector changes.

From a directory of frames that keeps growing (a rolling buffer):

1. take the frames of the most recent ``retrain.buffer_hours``; hold out the
   newest ``retrain.holdout_seconds`` for scoring, train on the rest;
2. re-run channel selection, preprocessing and training (the candidate is
   registered under ``train.mlflow.alias``);
3. condition the held-out slice with the union of the candidate's and the
   production model's channels and score both models on it: the real strain
   spectrogram is the label, so no truth is needed (``log_l1`` = mean
   ``|log1p(real) - log1p(generated)|``, veto and denoise accuracies);
4. move ``retrain.production_alias`` to the candidate only when it is better by
   ``retrain.min_improvement``; record both scores and the decision in MLflow
   and ``OUT/retrain_summary.json``.

Schedule it with cron or a scheduled RayJob (see the README).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from glitchflow.config import Config, with_overrides
from glitchflow.io.atomic import write_json_atomic
from glitchflow.io.frames import FrameFile, find_frames
from glitchflow.io.manifest import load_manifest
from glitchflow.models.checkpoint import Checkpoint
from glitchflow.models.clusters import has_cluster
from glitchflow.models.decisions import residual
from glitchflow.models.inference import Predictor
from glitchflow.pipelines.generate import channel_order
from glitchflow.pipelines.preprocess import run_preprocess
from glitchflow.pipelines.scan import run_scan
from glitchflow.pipelines.train import run_training
from glitchflow.tracking.mlflow_tracking import (
    default_artifact_location,
    default_tracking_uri,
    start_run,
)
from glitchflow.tracking.model_store import resolve_model
from glitchflow.tracking.promotion import promote_if_unchanged

log = logging.getLogger(__name__)


def split_buffer(frames: list[FrameFile], hours: float, holdout: float):
    """(training frames, held-out frames) of the newest ``hours``; the held-out ones are
    the frames starting in the newest ``holdout`` seconds."""
    if not frames:
        raise ValueError("no frames in the buffer")
    newest = max(f.end for f in frames)
    buffer = [f for f in frames if f.end > newest - hours * 3600]
    held = [f for f in buffer if f.start >= newest - holdout - 1e-6]
    train = [f for f in buffer if f not in held]
    if not held or not train:
        raise ValueError(
            f"the buffer ({len(buffer)} frames) cannot be split into training frames and a "
            f"held-out slice of {holdout} s; adjust retrain.holdout_seconds"
        )
    return train, held


def link_frames(frames: list[FrameFile], directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("*.gwf"):
        old.unlink()
    for f in frames:
        os.symlink(Path(f.path).resolve(), directory / Path(f.path).name)
    return directory


def score_on_windows(ckpt: Checkpoint, shards: str, channels: list[str], threshold: float) -> dict:
    """Held-out figures of one model on conditioned windows holding its channels."""
    import ray

    pred = Predictor(ckpt)
    order = channel_order(pred.channels, channels)
    n, log_l1, veto, denoise, glitchy = 0, 0.0, 0.0, 0.0, 0
    for batch in ray.data.read_parquet(shards).iter_batches(batch_size=16, batch_format="numpy"):
        keep = ~np.asarray(batch["bad"], dtype=bool)
        spec = torch.from_numpy(np.asarray(batch["spectrogram"], np.float32)[keep][:, order])
        if not len(spec):
            continue
        gen = pred.generate(spec[:, 1:])
        real = torch.clamp(spec[:, 0, pred.rows], 0, pred.model.clamp)
        log_l1 += float((torch.log1p(real) - torch.log1p(gen)).abs().mean((1, 2)).sum())
        veto += float((has_cluster(real, threshold) == has_cluster(gen, threshold)).sum())
        denoise += float((~has_cluster(residual(real, gen).abs(), threshold)).sum())
        glitchy += int(has_cluster(real, threshold).sum())
        n += len(spec)
    if n == 0:
        raise ValueError(f"{shards}: no usable held-out window")
    return {
        "log_l1": log_l1 / n,
        "veto_accuracy": veto / n,
        "denoise_accuracy": denoise / n,
        "windows": n,
        "glitch_windows": glitchy,
        "background_windows": n - glitchy,
    }


def holdout_problems(cfg: Config, scores: dict, has_production: bool) -> list[str]:
    """Why the held-out comparison cannot be trusted (empty: it can).  A slice without
    glitches lets a model that never fires score a perfect veto accuracy."""
    rt = cfg.retrain
    held = scores["candidate"]
    problems = [
        f"{who} {key} is not finite"
        for who, figures in scores.items()
        for key, value in figures.items()
        if not np.isfinite(value)
    ]
    if has_production and held["glitch_windows"] < rt.min_glitch_windows:
        problems.append(
            f"the held-out slice has {held['glitch_windows']} glitch windows "
            f"(retrain.min_glitch_windows = {rt.min_glitch_windows})"
        )
    if has_production and held["background_windows"] == 0:
        problems.append("the held-out slice has no glitch-free window")
    return problems


def better(cfg: Config, candidate: dict, production: dict | None) -> bool:
    if production is None:
        return True
    rt = cfg.retrain
    c, p = candidate[rt.metric], production[rt.metric]
    if rt.metric == "log_l1":
        return c < p - rt.min_improvement
    return c > p + rt.min_improvement


@dataclass(frozen=True)
class Decision:
    """Promote or keep, and why: both models' held-out ``scores`` (``metric`` decides)."""

    decision: str  # "promote" | "keep"
    reason: str
    candidate_version: str
    production_version: str | None
    metric: str
    scores: dict[str, dict]


@dataclass(frozen=True)
class RetrainResult:
    """One retrain cycle (also OUT/retrain_summary.json): the buffer's ``span`` (GPS s),
    frames trained on and held out, the scan's selection, the training run and the
    promotion :class:`Decision`'s fields; ``wall_seconds``: s."""

    span: list
    training_frames: int
    holdout_frames: int
    selected: list[str]
    train_run_id: str
    tracking_uri: str
    decision: str
    reason: str
    candidate_version: str
    production_version: str | None
    metric: str
    scores: dict[str, dict]
    wall_seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def compare_and_promote(
    cfg: Config, uri: str, candidate_version: str, holdout_dir: Path, run_id: str
) -> Decision:
    """Score the candidate and the production model on the held-out windows; move the
    production alias when the candidate is better; log everything to ``run_id``."""
    import mlflow

    rt = cfg.retrain
    name = cfg.train.mlflow.registered_model
    client = mlflow.MlflowClient(uri, registry_uri=uri)
    manifest = load_manifest(holdout_dir)
    shards = str(manifest.shard_dir(holdout_dir))
    threshold = cfg.train.snr2_threshold
    candidate = resolve_model(f"models:/{name}/{candidate_version}", uri)
    scores = {"candidate": score_on_windows(candidate.ckpt, shards, manifest.channels, threshold)}
    try:
        production = resolve_model(f"models:/{name}@{rt.production_alias}", uri)
    except LookupError:
        production = None
    if production is not None:
        scores["production"] = score_on_windows(
            production.ckpt, shards, manifest.channels, threshold
        )
    problems = holdout_problems(cfg, scores, production is not None)
    promote = not problems and better(cfg, scores["candidate"], scores.get("production"))
    if promote:  # compare-and-set: a concurrent retrain may have promoted meanwhile
        moved = promote_if_unchanged(
            uri,
            name,
            rt.production_alias,
            production.version if production else None,
            candidate_version,
        )
        if not moved.moved:
            problems.append(moved.reason)
            promote = False
    reason = "; ".join(problems) or (
        "better on the held-out slice" if promote else f"not better by {rt.min_improvement}"
    )
    if problems:
        log.warning("retrain: production kept: %s", reason)
    decision = Decision(
        decision="promote" if promote else "keep",
        reason=reason,
        candidate_version=candidate_version,
        production_version=production.version if production else None,
        metric=rt.metric,
        scores=scores,
    )
    for who, figures in scores.items():
        for key, value in figures.items():
            client.log_metric(run_id, f"{who}_{key}", float(value))
    client.set_tag(run_id, "decision", decision.decision)
    client.set_tag(
        run_id,
        "production_version_after",
        candidate_version if promote else str(decision.production_version),
    )
    return decision


def run_retrain(cfg: Config, frames_dir: str | Path, out: str | Path) -> RetrainResult:
    """The whole cycle; returns (and writes) the summary with the decision."""
    import mlflow

    t0 = time.perf_counter()
    out = Path(out).resolve()
    rt = cfg.retrain
    train_frames, held = split_buffer(
        find_frames(frames_dir).frames, rt.buffer_hours, rt.holdout_seconds
    )
    train_dir = link_frames(train_frames, out / "buffer" / "train")
    held_dir = link_frames(held, out / "buffer" / "holdout")
    uri = cfg.train.mlflow.tracking_uri or default_tracking_uri(out)
    cfg = with_overrides(cfg, [f"train.mlflow.tracking_uri={json.dumps(uri)}"], "retrain")
    span = [min(f.start for f in train_frames), max(f.end for f in held)]
    run_id = start_run(
        uri,
        cfg.train.mlflow.experiment,
        f"retrain-{int(span[1])}",
        {"buffer_hours": rt.buffer_hours, "holdout_seconds": rt.holdout_seconds, "span": span},
        {"stage": "retrain"},
        artifact_location=default_artifact_location(out),
    )
    scan = run_scan(cfg, train_dir, out / "scan", overwrite=True)
    selected = str(out / "scan" / "selected_channels.json")
    run_preprocess(cfg, train_dir, out / "dataset", selected, overwrite=True)
    trained = run_training(cfg, out / "dataset", out / "train", overwrite=True)
    version = str(trained.registered.version)
    channels = list(resolve_model(trained.registered.uri, uri).ckpt.channels)
    try:
        prod = resolve_model(
            f"models:/{cfg.train.mlflow.registered_model}@{rt.production_alias}", uri
        )
        channels += [c for c in prod.ckpt.channels if c not in channels]
    except LookupError:
        pass
    holdout_channels = out / "holdout_channels.json"
    holdout_channels.write_text(json.dumps({"channels": channels[1:]}))
    run_preprocess(cfg, held_dir, out / "holdout", str(holdout_channels), overwrite=True)
    decision = compare_and_promote(cfg, uri, version, out / "holdout", run_id)
    result = RetrainResult(
        span=span,
        training_frames=len(train_frames),
        holdout_frames=len(held),
        selected=scan.selected,
        train_run_id=trained.run_id,
        tracking_uri=uri,
        **asdict(decision),
        wall_seconds=round(time.perf_counter() - t0, 1),
    )
    write_json_atomic(out / "retrain_summary.json", result.to_dict(), default=float)
    mlflow.MlflowClient(uri).set_terminated(run_id, "FINISHED")
    return result
