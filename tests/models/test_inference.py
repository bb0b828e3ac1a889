"""Predictor (crops stitched back into windows) and the veto / denoise decisions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glitchflow.config import SignalConfig
from glitchflow.models.checkpoint import (
    CheckpointError,
    make_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from glitchflow.models.decisions import decide, predicted_glitch, row_bandwidths
from glitchflow.models.glitch_model import GlitchModel
from glitchflow.models.inference import Predictor
from glitchflow.models.operating_point import OperatingPoint
from glitchflow.models.registry import create_model

N_FREQ, CROP = 16, 8


def _ckpt(model, **kwargs):
    signal = SignalConfig().model_dump(mode="json")
    signal["qtransform"]["n_freq"] = N_FREQ
    spec = {"name": "unet", "kwargs": {"n_aux": 2, "base": 2, "depth": 1} | kwargs}
    return make_checkpoint(
        model,
        spec,
        signal,
        ["V1:STRAIN", "V1:A", "V1:B"],
        {"aux": [2.0, 4.0], "strain": 3.0},
        {"crop": CROP, "clamp": 100.0, "window": 1.0, "stride": 0.5},
        {"snr2": 16.0, "min_area": 2},
        0,
        {},
    )


class Echo(torch.nn.Module):
    """Returns its first input channel: generated = aux0 / norm0 * strain norm."""

    def forward(self, x):
        return x[:, :1]


def test_predictor_stitches_crops_back_in_place():
    torch.manual_seed(0)
    model = create_model("unet", n_aux=2, base=2, depth=1)
    pred = Predictor(_ckpt(model), tiling="crops")
    pred.model.network = Echo()
    aux = torch.rand(3, 2, N_FREQ, 37) * 10  # 37 bins: crops at 0, 4, ..., 28, 29
    assert pred.crop_starts(37)[-1] == 29
    out = pred.generate(aux)
    assert out.shape == (3, CROP, 37)
    expected = aux[:, 0, pred.rows] / 2.0 * 3.0  # clamp 100 not reached
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bins", [37, 40])
def test_window_tiling_predicts_each_bin_in_place(bins):
    """The whole window in one pass (37 bins: edge-padded to the pooling's multiple of 2
    and cut back): a pixel-wise model gives each bin its own value."""
    torch.manual_seed(0)
    pred = Predictor(_ckpt(create_model("unet", n_aux=2, base=2, depth=1)))
    assert pred.tiling == "window"
    pred.model.network = Echo()
    aux = torch.rand(3, 2, N_FREQ, bins) * 10
    out = pred.generate(aux, max_crops=1)  # one window per model call
    assert out.shape == (3, CROP, bins)
    torch.testing.assert_close(out, aux[:, 0, pred.rows] / 2.0 * 3.0, rtol=1e-5, atol=1e-5)


def test_window_tiling_is_the_model_on_the_window():
    """A trained-size window through the window tiling is the GlitchModel itself on it (the
    channels-last layout changes only the order of the sums); wider windows give each
    crop-interior bin nearly what the crops give, and the tiling is checked."""
    torch.manual_seed(3)
    arch = {"base": 4, "depth": 2, "residual": True, "attention": True}
    ckpt = _ckpt(create_model("unet", n_aux=2, **arch), **arch)
    window = Predictor(ckpt)
    aux = torch.rand(4, 2, N_FREQ, CROP) * 40
    with torch.no_grad():
        direct = GlitchModel.from_checkpoint(ckpt)(aux[:, :, window.rows])[:, 0]
    torch.testing.assert_close(window.generate(aux), direct, rtol=1e-4, atol=1e-4)
    wide = torch.rand(2, 2, N_FREQ, 64) * 40
    crops = Predictor(ckpt, tiling="crops", hop_fraction=0.5).generate(wide)
    assert window.generate(wide).shape == crops.shape == (2, CROP, 64)
    with pytest.raises(ValueError, match="tiling"):
        Predictor(ckpt, tiling="tiles")


def test_checkpoint_round_trips_typed_and_names_a_bad_field(tmp_path):
    torch.manual_seed(0)
    ckpt = _ckpt(create_model("unet", n_aux=2, base=2, depth=1))
    path = save_checkpoint(ckpt, tmp_path)
    back = read_checkpoint(tmp_path)
    assert back.channels == ("V1:STRAIN", "V1:A", "V1:B") and back.aux_channels == ["V1:A", "V1:B"]
    assert back.sample.crop == CROP and back.n_freq == N_FREQ and back.signal == ckpt.signal
    # the architecture's own arguments, defaults filled in
    assert back.model.kwargs == {
        "n_aux": 2,
        "base": 2,
        "depth": 1,
        "residual": False,
        "attention": False,
    }
    raw = torch.load(path, weights_only=True)
    for field, change, message in [
        ("channels", ["V1:STRAIN"], "at least one auxiliary"),
        ("normalisation", {"aux": [1.0], "strain": 1.0}, "normalisation.aux"),
        ("model", {"name": "unet", "kwargs": {"n_aux": 2, "width": 3}}, "does not take width"),
        ("sample", {"crop": 8}, "field 'sample'"),
        ("signal", {"qtransform": {"q": -1}}, "field 'signal'"),
    ]:
        torch.save(raw | {field: change}, tmp_path / "bad.pt")
        with pytest.raises(CheckpointError, match=message) as err:
            read_checkpoint(tmp_path / "bad.pt")
        assert "bad.pt" in str(err.value)
    torch.save({k: v for k, v in raw.items() if k != "thresholds"}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="'thresholds' is missing"):
        read_checkpoint(tmp_path / "bad.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"junk\.pt: cannot be read"):
        read_checkpoint(tmp_path / "junk.pt")


def test_glitch_model_is_the_whole_model_that_infer_runs():
    """Scaling, clamp and the operating point live in the module: running it on crops is
    running the Predictor (and a pickled copy, as MLflow stores it, runs the same)."""
    import pickle

    torch.manual_seed(1)
    ckpt = _ckpt(create_model("unet", n_aux=2, base=2, depth=1))
    model = GlitchModel.from_checkpoint(ckpt)
    assert model.crop == CROP and model.clamp == 100.0 and model.n_aux == 2
    assert model.operating_point == Predictor(ckpt).point
    crops = torch.rand(5, 2, CROP, CROP) * 300  # beyond the clamp too
    with torch.no_grad():
        out = model(crops)
    assert out.shape == (5, 1, CROP, CROP) and float(out.max()) <= 100.0
    # the Predictor runs channels-last on CPU: the same sums in another order
    near = {"rtol": 1e-5, "atol": 1e-4}
    torch.testing.assert_close(out[:, 0], Predictor(ckpt).predict_crops(crops), **near)
    copy = pickle.loads(pickle.dumps(model))
    torch.testing.assert_close(copy(crops), out)
    aux = torch.rand(2, 2, N_FREQ, 20) * 50
    torch.testing.assert_close(
        Predictor(ckpt, model=copy).generate(aux), Predictor(ckpt).generate(aux)
    )


def test_predictor_rejects_wrong_shapes():
    pred = Predictor(_ckpt(create_model("unet", n_aux=2, base=2, depth=1)))
    with pytest.raises(ValueError, match="auxiliary"):
        pred.generate(torch.zeros(1, 3, N_FREQ, 16))
    with pytest.raises(ValueError, match="at least 8 bins"):
        pred.generate(torch.zeros(1, 2, N_FREQ, 5))


POINT = OperatingPoint(16.0, 2, 16.0, 2)


def test_decision_finds_the_cluster_at_its_gps_time_and_frequency():
    step, t0 = 0.0234375, 1_400_000_000.0
    freqs = np.geomspace(8, 500, 16)
    gen = torch.ones(2, 16, 64)
    gen[0, 9:11, 40:43] = 50.0  # a glitch predicted in window 0 only
    gen[0, 10, 41] = 80.0
    real = torch.ones(2, 16, 64)
    real[0, 9:11, 40:43] = 52.0
    real[0, 10, 41] = 81.0
    real[1, 3:5, 10:12] = 60.0  # an unwitnessed glitch in window 1
    d = decide(real, gen, np.array([t0, t0 + 1.5]), step, freqs, POINT)
    assert d[0].veto and not d[1].veto
    (c,) = d[0].clusters
    assert c.gps_time == pytest.approx(t0 + 41.5 * step)
    assert c.frequency == pytest.approx(freqs[10])
    assert c.snr2 == 80.0 and c.area_pixels == 6
    assert c.gps_start == pytest.approx(t0 + 40 * step) and c.gps_end == pytest.approx(
        t0 + 43 * step
    )
    assert d[0].cleaned and d[0].max_residual_snr2 < 16
    assert not d[1].cleaned and d[1].residual_area_pixels == 4
    band = row_bandwidths(freqs)
    assert d[1].residual_area_hz_s == pytest.approx((2 * band[3] + 2 * band[4]) * step)
    # without strain: veto only
    v = decide(None, gen, np.array([t0, t0 + 1.5]), step, freqs, POINT)
    assert v[0].veto and np.isnan(v[0].max_residual_snr2)


def test_predicted_glitch_keeps_the_noise_floor():
    gen = torch.full((1, 4, 32), 1.4)
    gen[0, 2, 5] = 30.0
    p = predicted_glitch(gen)
    assert float(p.sum()) == pytest.approx(30.0 - 1.4)


def test_bandwidths_tile_the_log_grid():
    f = np.geomspace(10, 1000, 21)
    band = row_bandwidths(f)
    assert np.all(band > 0)
    assert band.sum() == pytest.approx(f[-1] * np.sqrt(f[1] / f[0]) - f[0] / np.sqrt(f[1] / f[0]))


def test_scaling_round_trips_snr2_through_model_units():
    from glitchflow.models.scaling import Scaling

    for transform in ("log1p", "linear"):
        s = Scaling({"aux": [2.0, 3.0], "strain": 4.0, "transform": transform})
        y = torch.tensor([0.0, 1.0, 50.0, 3000.0]).reshape(1, 1, 2, 2)
        torch.testing.assert_close(s.outputs(s.targets(y)), y, rtol=1e-5, atol=1e-4)
        x = torch.full((1, 2, 2, 2), 100.0)
        expected = (np.log1p(100.0) if transform == "log1p" else 100.0) / 3.0
        assert float(s.inputs(x)[0, 1, 0, 0]) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="unknown transform"):
        Scaling({"aux": [1.0], "strain": 1.0, "transform": "sqrt"})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_predictor_on_gpu_decides_as_on_cpu():
    """The same checkpoint on the GPU: the same generated spectrogram (float32 sums in
    another order), and with a network far from every threshold (the echo of a loud
    witnessed glitch) the same vetoes, clusters and cluster times."""
    torch.manual_seed(5)
    arch = {"base": 4, "depth": 2, "residual": True, "attention": True}
    ckpt = _ckpt(create_model("unet", n_aux=2, **arch), **arch)
    spec = torch.rand(6, 3, N_FREQ, 40) * 8
    spec[::2, :, 4:9, 10:14] += 400.0  # a witnessed glitch in every other window
    freqs = np.geomspace(20.0, 500.0, N_FREQ)
    starts = np.arange(6) * 4.0
    cpu, gpu = Predictor(ckpt), Predictor(ckpt, "cuda")
    torch.testing.assert_close(
        gpu.generate(spec[:, 1:]), cpu.generate(spec[:, 1:]), rtol=1e-3, atol=1e-3
    )
    cpu.model.network, gpu.model.network = Echo(), Echo().cuda()
    a_all = cpu.decide_windows(spec, starts, 0.1, freqs).decisions
    b_all = gpu.decide_windows(spec, starts, 0.1, freqs).decisions
    assert [a.veto for a in a_all] == [True, False] * 3
    for a, b in zip(a_all, b_all):
        assert (a.veto, len(a.clusters)) == (b.veto, len(b.clusters))
        for ca, cb in zip(a.clusters, b.clusters):
            assert ca.gps_time == pytest.approx(cb.gps_time, abs=1e-9)
