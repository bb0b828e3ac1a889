"""The subtraction fit on Ray Train: a killed worker resumes from its pass's checkpoint, and
the couplings do not depend on how many workers share the blocks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from glitchflow.config import with_overrides
from glitchflow.models.subtraction import SubtractionModel
from glitchflow.pipelines.clean_fit import run_fit_clean

pytestmark = pytest.mark.timeout(600)


def test_a_worker_killed_after_pass_1_resumes_and_one_worker_fits_what_two_did(
    tiny_subtraction, tiny_twin, ray_local, tmp_path, monkeypatch
):
    fit, cfg = tiny_subtraction
    assert cfg.clean.resources.workers == 2
    channels = Path(fit.model).parent.parent / "channels.json"
    one = with_overrides(cfg, ["clean.resources.workers=1", "clean.resources.cpus_per_worker=1"])
    out = tmp_path / "fit"
    # frames named relative to the driver's directory (the demo does): the workers run
    # elsewhere and still read them
    frames = tiny_twin.frames[0].parent
    monkeypatch.chdir(frames.parent)
    again = run_fit_clean(one, frames.name, str(channels), out, False, crash_after_stage=1)
    assert again.frames_failed == []
    assert (out / ".crashed").read_text() == "1"  # rank 0 died once, after pass 1
    assert again.resumed_after_stage == 1 and fit.resumed_after_stage == 0
    assert list((out / "ray_results").glob("fit-clean-*"))
    assert again.training_triggers == fit.training_triggers
    assert again.arch_witnesses == fit.arch_witnesses
    assert again.frames_in == fit.frames_in
    two, resumed = SubtractionModel.load(fit.model), SubtractionModel.load(again.model)
    for w in fit.witnesses:
        np.testing.assert_allclose(resumed.firs[w], two.firs[w], rtol=1e-9, atol=0)
    assert again.registered is None  # tracking off: nothing logged
