"""Every stage refuses an OUT holding a previous run's products unless --overwrite."""

from __future__ import annotations

import pytest

from glitchflow.config import load_config
from tests.conftest import CONFIGS

pytestmark = pytest.mark.timeout(300)


def _refused(call, out, product):
    """``call()`` must refuse ``out`` naming ``product`` and the flag, touching nothing."""
    with pytest.raises(FileExistsError, match="--overwrite") as refused:
        call()
    assert product in str(refused.value) and str(out) in str(refused.value)
    assert (out / product).read_text() == "previous run"


@pytest.mark.parametrize(
    ("stage", "product"),
    [
        ("scan", "hveto.json"),
        ("train", "train_summary.json"),
        ("tune", "tune_summary.json"),
        ("generate", "manifest.json"),
    ],
)
def test_a_stage_refuses_a_previous_runs_products(
    stage, product, tmp_path, tiny_dataset, tiny_model, ray_local
):
    from glitchflow.pipelines.generate import run_generate
    from glitchflow.pipelines.scan import run_scan
    from glitchflow.pipelines.train import run_training
    from glitchflow.pipelines.tune import run_tune

    cfg = load_config(CONFIGS / "demo.yaml", ["train.workers=1", "train.cpus_per_worker=1"])
    out = tmp_path / "out"
    out.mkdir()
    (out / product).write_text("previous run")
    model = tiny_model[0].best_checkpoint
    calls = {
        "scan": lambda: run_scan(cfg, tmp_path / "no-frames-needed", out),
        "train": lambda: run_training(cfg, tiny_dataset, out),
        "tune": lambda: run_tune(cfg, tiny_dataset, out),
        "generate": lambda: run_generate(cfg, tiny_dataset, model, out),
    }
    _refused(calls[stage], out, product)
