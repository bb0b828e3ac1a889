"""Periodic re-training: promote a better candidate, keep production otherwise."""

from __future__ import annotations

import mlflow
import pytest

from glitchflow.config import load_config
from tests.conftest import CONFIGS, TINY_OVERRIDES, TRAIN_OVERRIDES

pytestmark = pytest.mark.timeout(900)


def test_retrain_promotes_a_first_model_and_keeps_a_no_better_one(ray_local, tmp_path):
    from glitchflow.pipelines.retrain import compare_and_promote, run_retrain
    from glitchflow.synth.twin import generate

    overrides = [
        *TINY_OVERRIDES,
        *TRAIN_OVERRIDES,
        "twin.duration=128",
        "retrain.buffer_hours=1",
        "retrain.holdout_seconds=32",
        "train.mlflow.registered_model=glitchflow-retrain-test",
    ]
    cfg = load_config(CONFIGS / "demo.yaml", overrides)
    twin = generate(cfg, tmp_path / "twin", progress=False)
    summary = run_retrain(cfg, twin.frames[0].parent, tmp_path / "retrain")
    assert summary.training_frames == 3 and summary.holdout_frames == 1
    assert summary.decision == "promote" and summary.production_version is None
    uri = summary.tracking_uri
    client = mlflow.MlflowClient(uri, registry_uri=uri)
    name = "glitchflow-retrain-test"
    production = client.get_model_version_by_alias(name, "production")
    assert str(production.version) == summary.candidate_version
    scores = summary.scores["candidate"]
    assert scores["windows"] > 0 and 0 <= scores["veto_accuracy"] <= 1
    # the same model again is no improvement: production stays where it is
    cfg = cfg.model_copy(
        update={
            "train": cfg.train.model_copy(
                update={"mlflow": cfg.train.mlflow.model_copy(update={"tracking_uri": uri})}
            )
        }
    )
    experiment = client.get_experiment_by_name(cfg.train.mlflow.experiment).experiment_id
    run = client.create_run(experiment, run_name="retrain-keep")
    kept = compare_and_promote(
        cfg, uri, summary.candidate_version, tmp_path / "retrain" / "holdout", run.info.run_id
    )
    assert kept.decision == "keep"
    assert kept.scores["candidate"] == kept.scores["production"]
    assert client.get_run(run.info.run_id).data.tags["decision"] == "keep"
    retrain_runs = client.search_runs([experiment], "tags.stage = 'retrain'")
    assert retrain_runs and retrain_runs[0].data.tags["decision"] == "promote"
    # a held-out slice with too few glitches cannot tell the models apart: production kept
    strict = cfg.model_copy(
        update={"retrain": cfg.retrain.model_copy(update={"min_glitch_windows": 10_000})}
    )
    run = client.create_run(experiment, run_name="retrain-too-few-glitches")
    kept = compare_and_promote(
        strict,
        uri,
        summary.candidate_version,
        tmp_path / "retrain" / "holdout",
        run.info.run_id,
    )
    assert kept.decision == "keep" and "glitch windows" in kept.reason
    held = kept.scores["candidate"]
    assert held["glitch_windows"] + held["background_windows"] == held["windows"]


def test_a_registry_outage_is_not_read_as_no_production(monkeypatch, tmp_path):
    """Only "not found" means there is no production model; any other registry failure
    stops the promotion with a clear error (production untouched)."""
    from glitchflow.tracking.model_store import RegistryError, resolve_model

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.MlflowClient(uri, registry_uri=uri).create_registered_model("exists")
    with pytest.raises(LookupError):
        resolve_model("models:/exists@production", uri)
    with pytest.raises(LookupError):
        resolve_model("models:/missing/3", uri)

    def outage(*args, **kwargs):
        raise mlflow.exceptions.MlflowException(
            "503 Service Unavailable", "TEMPORARILY_UNAVAILABLE"
        )

    monkeypatch.setattr(mlflow.MlflowClient, "get_model_version_by_alias", outage)
    with pytest.raises(RegistryError, match="did not answer"):
        resolve_model("models:/exists@production", uri)
    assert not issubclass(RegistryError, LookupError)


def test_promotion_is_compare_and_set(tmp_path):
    """Two retrains that compared against the same production version race to promote:
    exactly one moves the alias; a promotion against a version that has since moved is
    refused and says where the alias points now."""
    from concurrent.futures import ThreadPoolExecutor

    from glitchflow.tracking.promotion import alias_version, promote_if_unchanged

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri, registry_uri=uri)
    client.create_registered_model("m")
    run = client.create_run(client.create_experiment("e")).info.run_id
    versions = [client.create_model_version("m", "file:///x", run).version for _ in range(4)]
    client.set_registered_model_alias("m", "production", versions[0])

    def promote(version):
        return promote_if_unchanged(uri, "m", "production", str(versions[0]), str(version))

    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(promote, versions[1:]))
    winners = [r for r in results if r.moved]
    assert len(winners) == 1, results
    now = alias_version(client, "m", "production")
    assert now == winners[0].version_now
    for lost in (r for r in results if not r.moved):
        assert lost.version_now == now and "moved from version" in lost.reason
    # no production yet: only the first of two promotions against "none" moves it
    client.create_registered_model("n")
    v = client.create_model_version("n", "file:///x", run).version
    assert promote_if_unchanged(uri, "n", "production", None, str(v)).moved
    assert not promote_if_unchanged(uri, "n", "production", None, str(v)).moved
