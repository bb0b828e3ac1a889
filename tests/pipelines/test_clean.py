"""Witness-driven subtraction end to end: fit-clean, clean, and the figures against truth."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from glitchflow.evaluate.subtraction import evaluate_subtraction
from glitchflow.io.frames import FrameFile, find_frames, read_frame
from glitchflow.models.subtraction import SUBTRACTED
from glitchflow.pipelines.clean import run_clean

pytestmark = pytest.mark.timeout(900)

STRAIN = "V1:Hrec_hoft_16384Hz"
WITNESSES = ["V1:LSC_DARM_CORR", "V1:ENV_CEB_MAG_N", "V1:Sa_NE_F0_Z_500Hz"]


@pytest.fixture(scope="module")
def cleaned(tiny_subtraction, tiny_twin, ray_local, tmp_path_factory):
    """The tiny twin cleaned (plus one truncated frame) with the couplings fitted on it."""
    fit, cfg = tiny_subtraction
    root = tmp_path_factory.mktemp("clean")
    frames = root / "frames"
    frames.mkdir()
    for path in tiny_twin.frames:
        shutil.copy(path, frames / path.name)
    last = tiny_twin.frames[-1]
    broken = frames / f"V-V1_GLITCHFLOW_TWIN-{int(FrameFile.from_path(last).end)}-32.gwf"
    broken.write_bytes(last.read_bytes()[:5000])
    tracking = fit.registered["tracking_uri"]
    summary = run_clean(cfg, frames, fit.registered["uri"], root / "out", tracking)
    return cfg, fit, summary, root


def test_fit_registers_a_model_whose_blip_coupling_has_the_twin_delay(cleaned):
    cfg, fit, _, _ = cleaned
    root = Path(fit.model).parent.parent
    assert fit.registered["uri"] == f"models:/{cfg.clean.model_name}@candidate"
    assert fit.training_triggers["V1:LSC_DARM_CORR"] >= 3
    # the twin's blips reach strain 5 ms after their witness
    assert fit.group_delay_ms["V1:LSC_DARM_CORR"] == pytest.approx(
        1e3 * cfg.twin.families.blip.delay, abs=0.5
    )
    assert (root / "fit" / "couplings.png").stat().st_size > 0
    assert list((root / "fit" / "tensorboard").glob("events.out.tfevents.*"))


def test_clean_accounts_for_every_frame_and_splits_strain_exactly(cleaned, tiny_twin):
    cfg, _, summary, root = cleaned
    assert summary.frames_in == summary.frames_written + len(summary.frames_failed)
    assert summary.frames_written == len(tiny_twin.frames)
    assert [f["file"].split("/")[-1] for f in summary.frames_failed] == [
        f"V-V1_GLITCHFLOW_TWIN-{int(FrameFile.from_path(tiny_twin.frames[-1]).end)}-32.gwf"
    ]
    out = find_frames(root / "out" / "frames").frames
    assert [f.tag for f in out] == ["GLITCHFLOW_CLEAN"] * len(tiny_twin.frames)
    for raw_path, clean in zip(tiny_twin.frames, out):
        raw = read_frame(FrameFile.from_path(raw_path), [STRAIN])[STRAIN][0]
        got = read_frame(clean, [STRAIN, f"V1:{SUBTRACTED}"])
        rebuilt = got[STRAIN][0] + got[f"V1:{SUBTRACTED}"][0]
        # float32 frames: rounding at 2^-24 of the largest strain values
        np.testing.assert_allclose(rebuilt, raw, rtol=0, atol=2**-23 * np.abs(raw).max())
    table = pd.read_csv(root / "out" / "glitches.csv")
    assert set(table.channel) <= set(WITNESSES)
    assert table.subtracted.sum() == summary.glitches_subtracted > 0
    # witness triggers sit on the witness glitches (strain's blips lag them by the delay)
    truth = pd.read_csv(tiny_twin.truth_path)
    blips = truth[truth.family == "blip"].gps_peak.to_numpy() - cfg.twin.families.blip.delay
    darm = table[table.channel == "V1:LSC_DARM_CORR"].gps.to_numpy()
    offsets = np.array([np.min(np.abs(blips - t)) for t in darm])
    assert (offsets < 0.05).any() and np.median(offsets[offsets < 0.05]) < 0.003


def test_subtraction_removes_witnessed_glitches_and_leaves_glitch_free_noise(
    cleaned, tiny_twin, tiny_config
):
    _, _, _, root = cleaned
    report = evaluate_subtraction(
        tiny_twin.truth_path.parent, root / "out", STRAIN, tiny_config.signal
    )
    glitches = pd.DataFrame(report["glitches"])
    linear = glitches[glitches.family.isin(["blip", "environmental"])]
    assert len(linear) >= 4
    # in-sample on a 64 s twin: most of each linear glitch is gone
    assert linear.reduction.median() > 0.6
    assert (linear.injected_snr / linear.strain_snr).between(0.85, 1.15).all()
    # the spectrogram view: every glitch of SNR >= 8 makes a loud Q-tile in raw strain,
    # and the loudest tile left in cleaned strain is fainter for most of them
    assert (linear.raw_max_snr2 > 9).all() and linear.raw_max_snr2.median() > 25
    assert (linear.cleaned_max_snr2 < linear.raw_max_snr2).mean() >= 0.75
    assert 0 <= report["spectrogram_cleaned_fraction"] <= 1
    assert report["psd_ratio_max_deviation"] is None or report["psd_ratio_max_deviation"] < 0.02


def test_clean_refuses_a_used_out_and_names_a_missing_model(cleaned, tmp_path):
    cfg, fit, _, root = cleaned
    with pytest.raises(FileExistsError):
        run_clean(cfg, root / "frames", fit.model, root / "out")
    with pytest.raises(FileNotFoundError, match=r"nowhere\.pt"):
        run_clean(cfg, root / "frames", str(tmp_path / "nowhere.pt"), tmp_path / "o")


def test_an_actor_of_a_discarded_clean_run_stops_without_writing(
    tiny_subtraction, tiny_twin, ray_local, tmp_path
):
    """clean's actors write frames into the run's staging directory: once a later run
    discarded a killed run's staging, its actor's next block raises, naming the
    directory, and no cleaned frame lands anywhere."""
    from glitchflow.pipelines.clean import BlockCleaner
    from glitchflow.pipelines.staging import RunAbandonedError, discard, staging_dir

    fit, cfg = tiny_subtraction
    frames = [FrameFile.from_path(p) for p in tiny_twin.frames]
    staging = staging_dir(tmp_path / "out", "clean")
    (staging / "frames").mkdir()
    actor = BlockCleaner(
        model_state=fit.model,
        frames=[(f.path, f.start, f.duration) for f in frames],
        out=str(staging),
        tag=cfg.clean.frame_tag,
        dtype=cfg.clean.output_dtype,
    )
    actor({"blocks": [json.dumps([[frames[0].path]])]})
    assert len(list((staging / "frames").glob("*.gwf"))) == 1
    assert discard(staging)
    with pytest.raises(RunAbandonedError, match=str(staging / "frames")):
        actor({"blocks": [json.dumps([[frames[1].path]])]})
    assert list((tmp_path / "out").iterdir()) == []
