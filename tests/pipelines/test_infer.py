"""Batch inference on frames: every product, bad input counted, evaluation and generation."""

from __future__ import annotations

import itertools
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from glitchflow.config import load_config
from glitchflow.evaluate.report import run_evaluate
from glitchflow.io.frames import FrameFile, read_frame
from glitchflow.pipelines.generate import run_generate
from glitchflow.pipelines.infer import run_inference
from tests.conftest import CONFIGS

pytestmark = pytest.mark.timeout(600)

STRAIN = "V1:Hrec_hoft_16384Hz"


@pytest.fixture(scope="module")
def inferred(tiny_model, tiny_twin, ray_local, tmp_path_factory):
    """Inference over the tiny twin's frames plus one truncated frame, with a baseline."""
    summary, _ = tiny_model
    frames = tmp_path_factory.mktemp("infer_frames")
    for path in tiny_twin.frames:
        shutil.copy(path, frames / path.name)
    last = tiny_twin.frames[-1]
    start = int(FrameFile.from_path(last).end)
    broken = frames / f"V-V1_GLITCHFLOW_TWIN-{start}-32.gwf"
    broken.write_bytes(last.read_bytes()[:5000])  # truncated: must be reported, not fatal
    hveto = tmp_path_factory.mktemp("hveto") / "hveto.json"
    rounds = [{"channel": "V1:LSC_DARM_CORR", "snr2_threshold": 20.0, "window": 0.5}]
    hveto.write_text(json.dumps({"rounds": rounds}))
    out = tmp_path_factory.mktemp("infer")
    cfg = load_config(CONFIGS / "demo.yaml", ["infer.images=2"])
    result = run_inference(
        cfg,
        frames,
        summary.registered.uri,
        out,
        tracking_uri=summary.tracking_uri,
        hveto=hveto,
    )
    return result, out, cfg


def test_inference_writes_every_product_and_counts_everything(inferred, tiny_twin):
    s, out, cfg = inferred
    assert s.frames_in == 3 and s.frames_written == 2
    (failure,) = s.frames_failed
    assert failure["file"].endswith("-1400000064-32.gwf") and "truncated" in failure["reason"]
    assert s.windows_expected == s.windows_written + len(s.windows_skipped)
    windows = pd.read_csv(out / "windows.csv")
    assert len(windows) == s.windows_written > 0
    # GPS times on the stride grid, real GPS seconds, every window 6 s long
    assert np.allclose(windows.gps_start % cfg.infer.stride, 0)
    assert windows.gps_start.min() >= 1_400_000_000
    assert np.allclose(windows.gps_end - windows.gps_start, cfg.infer.window)
    for col in ("veto", "cleaned", "max_residual_snr2", "residual_area_hz_s", "cluster_times"):
        assert col in windows
    assert (out / "windows.parquet").is_file()
    # veto segments: CSV and a DataQualityFlag that gwpy reads back
    vetoes = pd.read_csv(out / "vetoes.csv")
    assert list(vetoes.columns) == ["start", "end"]
    from gwpy.segments import DataQualityFlag

    flag = DataQualityFlag.read(str(out / "vetoes.h5"))
    assert len(flag.active) == len(vetoes)
    assert abs(flag.known) == pytest.approx(s.figures["livetime_s"])
    # gated strain frames: zero inside veto segments, untouched far from them, plus state
    gated = sorted((out / "gated").glob("*.gwf"))
    assert len(gated) == 2
    frame = FrameFile.from_path(gated[0])
    data = read_frame(frame, [STRAIN, "V1:DQ_GLITCHFLOW_STATE"])
    strain, rate, t0 = data[STRAIN]
    raw = read_frame(FrameFile.from_path(tiny_twin.frames[0]), [STRAIN])[STRAIN][0]
    state = data["V1:DQ_GLITCHFLOW_STATE"][0]
    t = t0 + np.arange(len(strain)) / rate
    in_veto = np.zeros(len(t), dtype=bool)
    far = np.ones(len(t), dtype=bool)
    for a, b in vetoes.to_numpy():
        in_veto |= (t >= a) & (t < b)
        far &= (t < a - cfg.infer.gate_taper) | (t >= b + cfg.infer.gate_taper)
    assert np.all(strain[in_veto] == 0)
    np.testing.assert_array_equal(strain[far], raw[far])
    # state: 0 = not analysed, 1 = analysed and clean, 3 = vetoed (never "clean" by default)
    live = pd.read_csv(out / "live.csv").to_numpy()
    lo = frame.start + np.arange(len(state)) / cfg.infer.state_channel_rate
    hi = lo + 1 / cfg.infer.state_channel_rate
    analysed = np.zeros(len(state), dtype=bool)
    for a, b in live:
        analysed |= (lo >= a) & (hi <= b)
    vetoed = np.zeros(len(state), dtype=bool)
    for a, b in vetoes.to_numpy():
        vetoed |= (hi > a) & (lo < b)
    assert set(np.unique(state)) <= {0, 1, 3} and (state == 0).any()  # the first window's pad
    np.testing.assert_array_equal(state, np.where(analysed, 1 + 2 * vetoed, 0))
    # spectrogram shards, TensorBoard, MLflow, baseline
    assert any((out / "spectrograms").glob("*.parquet"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(s.tensorboard, size_guidance={"images": 0}).Reload()
    assert acc.Tags()["images"]
    import mlflow

    run = mlflow.MlflowClient(s.tracking_uri).get_run(s.run_id)
    assert run.data.metrics["windows"] == len(windows)
    assert s.baseline["channels"] == ["V1:LSC_DARM_CORR"]
    assert (out / "baseline" / "vetoes.csv").is_file()


def test_the_mlflow_model_gives_what_infer_wrote(inferred, tiny_twin, tiny_model):
    """``mlflow.pytorch.load_model`` of the registered model, run on the same conditioned
    windows, reproduces the generated spectrograms ``glitchflow infer`` wrote."""
    import mlflow
    import torch

    from glitchflow.io.frames import make_blocks
    from glitchflow.io.spectrograms import read_columns, tensor_column
    from glitchflow.io.windows import FrameWindowCutter
    from glitchflow.models.glitch_model import GlitchModel
    from glitchflow.models.inference import Predictor
    from glitchflow.signal.conditioner import Conditioner
    from glitchflow.tracking.model_store import resolve_model

    _, out, cfg = inferred
    summary, _ = tiny_model
    mlflow.set_tracking_uri(summary.tracking_uri)  # other tests point MLflow elsewhere
    mlflow.set_registry_uri(summary.tracking_uri)
    loaded = mlflow.pytorch.load_model(summary.registered.uri)
    assert isinstance(loaded, GlitchModel)
    ckpt = resolve_model(summary.registered.uri, summary.tracking_uri).ckpt
    predictor = Predictor(ckpt, hop_fraction=cfg.infer.crop_hop, model=loaded)
    frames = sorted(FrameFile.from_path(p) for p in tiny_twin.frames)
    cutter = FrameWindowCutter(
        Conditioner(ckpt.signal), frames, ckpt.channels, cfg.infer.window, cfg.infer.stride
    )
    # the first block exactly as infer cut it (its PSD is estimated over the whole block)
    windows, _ = cutter.process(make_blocks(frames, cfg.infer.frames_per_block)[0])
    starts = [w["gps_start"] for w in windows][:3]
    spec = torch.from_numpy(np.stack([w["spectrogram"] for w in windows[:3]]))
    ours = predictor.generate(spec[:, 1:]).numpy()
    table = read_columns(out / "spectrograms", ["generated"], starts)
    assert table.column("gps_start").to_pylist() == starts
    written = tensor_column(table, "generated", ours.shape[1:])
    np.testing.assert_allclose(ours, written, rtol=1e-4, atol=1e-4)


def test_a_second_inference_into_the_same_out_is_refused(inferred, tiny_twin, tiny_model):
    _, out, cfg = inferred
    summary, _ = tiny_model
    shards = sorted((out / "spectrograms").glob("*.parquet"))
    with pytest.raises(FileExistsError, match="--overwrite"):
        run_inference(
            cfg,
            tiny_twin.frames[0].parent,
            summary.registered.uri,
            out,
            tracking_uri=summary.tracking_uri,
        )
    assert sorted((out / "spectrograms").glob("*.parquet")) == shards  # untouched


def test_an_actor_of_a_discarded_infer_run_stops_without_writing(
    tiny_model, tiny_twin, ray_local, tmp_path
):
    """infer's actors write into the run's staging directory: once a later run discarded
    a killed run's staging, its actor's next block raises, naming the directory, and
    writes nothing (no spectrograms or reports land anywhere)."""
    from glitchflow.pipelines.infer_windows import WindowPredictor
    from glitchflow.pipelines.staging import RunAbandonedError, discard, staging_dir
    from glitchflow.tracking.model_store import resolve_model

    summary, _ = tiny_model
    ckpt = resolve_model(summary.registered.uri, summary.tracking_uri).ckpt
    frames = [FrameFile.from_path(p) for p in tiny_twin.frames]
    staging = staging_dir(tmp_path / "out", "infer")
    (staging / "reports").mkdir()
    actor = WindowPredictor(
        ckpt=ckpt,
        infer=load_config(CONFIGS / "demo.yaml").infer.model_dump(mode="json"),
        frames=[(f.path, f.start, f.duration) for f in frames],
        report_dir=str(staging / "reports"),
        shard_dir=str(staging / "spectrograms"),
        use_gpu=False,
        threads=1,
    )
    written = actor({"blocks": [json.dumps([[frames[0].path]])]})
    assert written["windows"][0] > 0 and len(list((staging / "spectrograms").iterdir())) > 0
    assert discard(staging)
    with pytest.raises(RunAbandonedError, match=str(staging / "reports")):
        actor({"blocks": [json.dumps([[frames[1].path]])]})
    assert list((tmp_path / "out").iterdir()) == []


def test_evaluate_scores_against_the_truth(inferred, tiny_twin, tmp_path):
    _, out, cfg = inferred
    report = run_evaluate(cfg, tiny_twin.truth_path, out, tmp_path)
    learned = report.learned
    assert 0 <= learned["deadtime"] <= 1
    assert learned["witnessed_glitches"] > 0
    assert 0 <= learned["witnessed_efficiency"] <= 1
    assert report.baseline is not None and len(report.baseline["roc"]) == len(
        cfg.evaluate.roc_thresholds
    )
    # the model's calibrated operating point is a point of its ROC, and the veto used it
    op = report.operating_point
    assert op["calibrated"] and op["veto_snr2"] in [p["snr2_threshold"] for p in report.learned_roc]
    at_op = next(p for p in report.learned_roc if p["snr2_threshold"] == op["veto_snr2"])
    assert at_op["deadtime"] == pytest.approx(learned["deadtime"], abs=1e-9)
    # per family, at fixed deadtimes, the ideal bound and the glitch time covered
    assert set(learned["at_deadtime"]) == {"0.001", "0.005", "0.01"}
    eff = list(learned["at_deadtime"].values())
    assert all(b >= a for a, b in itertools.pairwise(eff))
    for family, row in report.per_family.items():
        assert row["learned"]["glitches"] >= row["learned"]["vetoed"] >= 0
        assert row["baseline"] is not None
        assert 0 <= row["learned_efficiency_at_baseline_deadtime"] <= 1
        assert 0 <= row["perfect_model_efficiency_at_baseline_deadtime"] <= 1
        assert family == "unwitnessed" or 0 <= row["ideal_efficiency"] <= 1
    assert 0 <= report.ideal["witnessed_efficiency"] <= 1
    assert 0 <= learned["witnessed_coverage"] <= 1
    assert "Per family" in (tmp_path / "report.md").read_text()
    # a higher threshold never vetoes more time
    dead = [p["deadtime"] for p in report.learned_roc]
    assert all(b <= a + 1e-12 for a, b in itertools.pairwise(dead))
    # the perfect model vetoes only where witnessed glitches reach strain: it catches the
    # loud witnessed ones at a low threshold, unwitnessed ones only beside them
    perfect = report.perfect_model["roc"]
    assert len(perfect) == len(report.learned_roc)
    assert perfect[0]["witnessed_efficiency"] >= 0.9
    assert all(p["unwitnessed_efficiency"] < p["witnessed_efficiency"] for p in perfect[:-1])
    assert "perfect model" in (tmp_path / "report.md").read_text()
    curves = report.accuracy_curves
    assert len(curves["veto_accuracy"]) == 50
    assert all(0 <= v <= 1 for v in curves["denoise_accuracy"])
    for name in ("report.json", "report.md", "roc.png", "accuracy.png", "denoise.png"):
        assert (tmp_path / name).is_file()


def test_generate_writes_spectrograms_for_every_window(tiny_model, tiny_dataset, tmp_path):
    summary, _ = tiny_model
    cfg = load_config(CONFIGS / "demo.yaml")
    res = run_generate(cfg, tiny_dataset, summary.best_checkpoint, tmp_path)
    manifest = json.loads((tiny_dataset / "manifest.json").read_text())
    assert res.windows_in == manifest["windows_written"]
    assert res.windows_generated + res.windows_skipped_bad_data == res.windows_in
    assert (tmp_path / "samples.png").is_file()


def test_unknown_model_uri_is_a_clear_error(tiny_model, tmp_path):
    summary, _ = tiny_model
    cfg = load_config(CONFIGS / "demo.yaml")
    with pytest.raises(LookupError, match="models:/nope@candidate"):
        run_inference(cfg, tmp_path, "models:/nope@candidate", tmp_path, summary.tracking_uri)
    with pytest.raises(FileNotFoundError, match="neither a checkpoint"):
        run_inference(cfg, tmp_path, str(tmp_path / "missing.pt"), tmp_path)
