"""Ray Train training: MLflow run and registry, TensorBoard, checkpoints, fault tolerance."""

from __future__ import annotations

import json

import mlflow
import pytest
import torch

from glitchflow.config import load_config
from glitchflow.models.checkpoint import build_network, read_checkpoint
from glitchflow.models.glitch_model import GlitchModel
from glitchflow.models.inference import Predictor
from glitchflow.pipelines.train import run_training
from tests.conftest import CONFIGS, TRAIN_OVERRIDES
from tests.multinode import run_on_cluster

pytestmark = pytest.mark.timeout(600)


def _cfg(*extra):
    return load_config(CONFIGS / "demo.yaml", [*TRAIN_OVERRIDES, *extra])


def test_training_is_tracked_registered_and_self_describing(tiny_model):
    summary, tmp_path = tiny_model
    mlflow.set_tracking_uri(summary.tracking_uri)  # other tests point MLflow elsewhere
    mlflow.set_registry_uri(summary.tracking_uri)
    assert summary.epochs_run == 2
    assert set(summary.test) >= {"loss", "l1", "veto_accuracy", "denoise_accuracy"}
    # the weight-free L1 is part of the loss: l1_weight * L1 <= loss (SSIM term >= 0)
    assert 0 < summary.test["l1"] * 0.8 <= summary.test["loss"] + 1e-6
    # MLflow: per-epoch metrics, parameters, the registered model under its alias
    client = mlflow.MlflowClient(summary.tracking_uri)
    history = client.get_metric_history(summary.run_id, "val_loss")
    assert [m.step for m in history] == [0, 1]
    assert len(client.get_metric_history(summary.run_id, "val_l1")) == 2
    run = client.get_run(summary.run_id)
    assert run.data.params["model.name"] == "unet_res_att"
    assert "test_veto_accuracy" in run.data.metrics
    version = client.get_model_version_by_alias("glitchflow-unet", "candidate")
    assert version.run_id == summary.run_id
    loaded = mlflow.pytorch.load_model("models:/glitchflow-unet@candidate")
    assert loaded(torch.zeros(1, 3, 64, 64)).shape == (1, 1, 64, 64)
    assert run.info.artifact_uri.startswith((tmp_path / "mlartifacts").as_uri())
    artifacts = {a.path for a in client.list_artifacts(summary.run_id)}
    assert {"checkpoint", "checkpoints", "loss_curves.png"} <= artifacts
    # the checkpoint alone rebuilds the model and its preprocessing
    ckpt = read_checkpoint(summary.best_checkpoint)
    assert ckpt.strain_channel == "V1:Hrec_hoft_16384Hz" and len(ckpt.channels) == 4
    assert ckpt.signal.qtransform.q == 12 and len(ckpt.normalisation["aux"]) == 3
    network = build_network(ckpt)
    assert network(torch.zeros(1, 3, 64, 64)).shape == (1, 1, 64, 64)
    # the registered MLflow model is the whole model infer and serve run
    assert isinstance(loaded, GlitchModel) and loaded.channels == ckpt.channels
    assert loaded.operating_point == GlitchModel.from_checkpoint(ckpt).operating_point
    crops = torch.rand(4, 3, 64, 64) * 200
    # (the Predictor runs channels-last on CPU: the same sums in another order)
    torch.testing.assert_close(
        loaded(crops)[:, 0], Predictor(ckpt).predict_crops(crops), rtol=1e-5, atol=1e-4
    )
    # the veto's operating point, calibrated on the validation split's glitch-free time
    veto = ckpt.thresholds["veto"]
    assert veto == summary.veto and veto["target_deadtime"] == 0.01
    assert veto["glitch_free_bins"] > 0 and veto["min_area"] >= 1 and veto["snr2"] > 0
    assert veto["val_deadtime"] <= veto["target_deadtime"] or not veto["reached_target"]
    curve = veto["curve"]
    assert veto["snr2"] in curve["snr2"] and curve["snr2"] == sorted(curve["snr2"])
    assert all(b <= a + 1e-12 for a, b in zip(curve["deadtime"], curve["deadtime"][1:]))
    # TensorBoard scalars every epoch and images
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(summary.tensorboard, size_guidance={"images": 0}).Reload()
    assert len(acc.Scalars("val_loss")) == 2
    assert acc.Tags()["images"]
    assert (tmp_path / "loss_curves.png").is_file()
    assert json.loads((tmp_path / "train_summary.json").read_text())["run_id"] == summary.run_id


def test_training_resumes_after_a_worker_dies(tiny_dataset, tiny_model, tmp_path):
    summary = run_training(_cfg("train.epochs=3"), tiny_dataset, tmp_path, crash_after_epoch=1)
    assert (tmp_path / ".crashed").read_text() == "1"
    assert summary.epochs_run == 3
    # same data, config and seed: the epochs before the crash repeat the fixture's run exactly
    reference = tiny_model[0].history
    for key in ("train_loss", "val_loss"):
        assert summary.history[key][:2] == reference[key]
    client = mlflow.MlflowClient(summary.tracking_uri)
    steps = sorted({m.step for m in client.get_metric_history(summary.run_id, "val_loss")})
    assert steps == [0, 1, 2]
    assert "last_worker_failure" in client.get_run(summary.run_id).data.tags


def test_too_many_workers_fail_fast(tiny_dataset, tmp_path):
    with pytest.raises(RuntimeError, match="needs 8 CPU"):
        run_training(_cfg("train.workers=8"), tiny_dataset, tmp_path)


def test_data_too_short_for_three_splits_is_refused_and_nothing_registered(tiny_dataset, tmp_path):
    with pytest.raises(ValueError, match="no crop falls in the"):
        run_training(_cfg("train.split_block=100000"), tiny_dataset, tmp_path)
    assert not (tmp_path / "mlflow.db").exists()  # refused before a run or a model exists


@pytest.mark.slow
def test_ddp_training_on_a_two_node_cluster(tiny_dataset, tmp_path):
    result = run_on_cluster(
        "train",
        CONFIGS / "demo.yaml",
        tiny_dataset,
        tmp_path,
        [*TRAIN_OVERRIDES, "train.workers=2", "train.cpus_per_worker=1"],
        timeout=540,
    )
    assert result["epochs_run"] == 2 and result["workers"] == "2"
    assert 0 <= result["test"]["veto_accuracy"] <= 1


def test_glitch_crops_of_rare_witnesses_are_repeated(tiny_dataset):
    """``train.balance_witnesses``: the training split gains the repeated glitch crops of the
    witnesses that lead fewer crops; validation and test are untouched."""
    import numpy as np

    from glitchflow.io.dataset import leading_channel
    from glitchflow.pipelines.training_data import prepare_training_data

    plain = prepare_training_data(_cfg("train.balance_witnesses=1"), tiny_dataset)
    balanced = prepare_training_data(_cfg("train.balance_witnesses=4"), tiny_dataset)
    assert plain.counts["train_repeats"] == [1] * (len(plain.channels) - 1)
    repeats = np.array(balanced.counts["train_repeats"])
    assert repeats.max() > 1  # the tiny twin's witnesses glitch at different rates

    def leaders(data):
        rows = data.datasets["train"].to_pandas()
        glitch = rows[rows.is_glitch]
        x = np.stack([np.asarray(v) for v in glitch.x])
        return np.bincount(leading_channel(x), minlength=len(repeats))

    np.testing.assert_array_equal(leaders(balanced), leaders(plain) * repeats)
    for split in ("val", "test"):
        assert balanced.datasets[split].count() == plain.datasets[split].count()
