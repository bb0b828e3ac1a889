"""Architectures, losses and per-sample cluster finding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import label

from glitchflow.models.clusters import has_cluster, label_clusters, veto_denoise_accuracy
from glitchflow.models.losses import SpectrogramLoss, ssim
from glitchflow.models.registry import (
    Architecture,
    UNetConfig,
    arguments_from_settings,
    create_model,
    list_models,
    register,
)
from glitchflow.models.unet import UNet, count_parameters


@pytest.mark.parametrize("name", ["unet_res_att", "unet", "dilated_resnet"])
@pytest.mark.parametrize("shape", [(64, 64), (64, 128)])
def test_every_model_maps_aux_to_one_non_negative_strain_channel(name, shape):
    kwargs = arguments_from_settings(name, n_aux=5, base=8, depth=3)
    model = create_model(name, **kwargs).eval()
    out = model(torch.randn(2, 5, *shape))
    assert out.shape == (2, 1, *shape) and torch.all(out >= 0)


def test_each_architecture_takes_its_own_arguments():
    # the config's one train.model section, read by each architecture its own way
    assert arguments_from_settings("dilated_resnet", 4, base=8, depth=2, attention=True) == {
        "n_aux": 4,
        "width": 8,
        "depth": 2,
    }
    plain = arguments_from_settings("unet", 4, base=8, depth=2)
    assert plain["residual"] is False and plain["attention"] is False
    gated = arguments_from_settings("unet_res_att", 4, base=8, depth=2, attention=False)
    assert gated["residual"] is True and gated["attention"] is False
    # an argument the architecture does not take is refused by name, not dropped
    with pytest.raises(ValueError, match="does not take attention; its arguments: n_aux, width"):
        create_model("dilated_resnet", n_aux=4, width=8, depth=2, attention=True)
    with pytest.raises(ValueError, match="already registered"):
        register(Architecture("unet", UNetConfig, UNet, {}, "a second U-Net under the name"))
    assert create_model("unet", n_aux=2, base=2, depth=1).gates[0].__class__.__name__ == (
        "OpenSkip"
    )  # the first registration is kept


def test_registry_lists_and_rejects_unknown_names():
    assert {"unet_res_att", "unet", "dilated_resnet"} <= set(list_models())
    with pytest.raises(ValueError, match="known: "):
        create_model("transformer9000", n_aux=3)


def test_size_must_divide_by_two_to_the_depth():
    with pytest.raises(ValueError, match="divisible"):
        create_model("unet", n_aux=2, base=4, depth=3)(torch.zeros(1, 2, 60, 64))


def test_initialisation_really_runs():
    torch.manual_seed(0)
    model = create_model("unet_res_att", n_aux=4, base=16, depth=2)
    conv = model.encoders[1].body[0]  # 3x3, 16 -> 32 channels
    fan_in = conv.weight[0].numel()
    expected = np.sqrt(2 / (1 + 0.1**2) / fan_in)  # Kaiming normal, LeakyReLU slope 0.1
    assert conv.weight.std().item() == pytest.approx(expected, rel=0.1)
    assert count_parameters(model) > 0


def test_attention_and_residual_switches_change_the_network():
    full = count_parameters(create_model("unet_res_att", n_aux=4, base=8, depth=2))
    no_att = count_parameters(
        create_model("unet_res_att", n_aux=4, base=8, depth=2, attention=False)
    )
    plain = count_parameters(create_model("unet", n_aux=4, base=8, depth=2))
    assert full > no_att > plain


def test_losses():
    a = torch.rand(2, 1, 32, 32)
    assert ssim(a, a).item() == pytest.approx(1.0, abs=1e-5)
    assert SpectrogramLoss()(a, a).item() == pytest.approx(0.0, abs=1e-5)
    b = a + 0.5
    assert SpectrogramLoss("l1")(a, b).item() == pytest.approx(0.5, rel=1e-5)
    assert SpectrogramLoss("mse")(a, b).item() == pytest.approx(0.25, rel=1e-5)
    with pytest.raises(ValueError):
        SpectrogramLoss("l1_ssim", 0.5, 0.2)


@pytest.mark.parametrize("method", ["scipy", "pool"])
def test_cluster_labels_match_scipy_and_never_cross_samples(method):
    rng = np.random.default_rng(0)
    masks = rng.uniform(size=(3, 40, 50)) > 0.7
    labels = label_clusters(torch.from_numpy(masks), method).numpy()
    for k in range(3):
        ref, n = label(masks[k], structure=np.ones((3, 3)))
        assert len(np.unique(labels[k][labels[k] > 0])) == n
        # same partition: every reference component has exactly one label
        for comp in range(1, n + 1):
            assert len(np.unique(labels[k][ref == comp])) == 1
    # a 2-pixel cluster in sample 0 and a lone pixel at the same place in sample 1
    spec = torch.zeros(2, 8, 8)
    spec[0, 3, 3] = spec[0, 3, 4] = 50
    spec[1, 3, 3] = 50
    assert has_cluster(spec, 16, min_area=2).tolist() == [True, False]


def test_veto_and_denoise_accuracy_per_sample():
    real = torch.zeros(4, 1, 16, 16)
    real[:2, 0, 5:8, 5:8] = 40  # two samples with a glitch
    generated = real.clone()
    generated[1] = 0  # missed glitch: veto wrong, residual remains
    generated[2, 0, 1:3, 1:3] = 40  # false alarm: veto wrong, residual added
    acc = veto_denoise_accuracy(real, generated, 16, 2)
    assert acc == {"veto_accuracy": 0.5, "denoise_accuracy": 0.5}


def test_glitch_pixels_weigh_more_in_the_loss():
    target = torch.zeros(1, 1, 16, 16)
    target[0, 0, 8, 8] = 5.0  # one glitch pixel
    missed = torch.zeros_like(target)  # the floor everywhere: misses the glitch
    noisy = target.clone()
    noisy[0, 0, :2] = 5.0 / 32  # the glitch right, the floor off by as much in total
    plain = SpectrogramLoss("l1")
    assert plain(missed, target).item() == pytest.approx(plain(noisy, target).item())
    weighted = SpectrogramLoss("l1", glitch_weight=10.0, glitch_level=1.0)
    assert weighted(missed, target).item() > 5 * weighted(noisy, target).item()
    # an invented glitch (prediction above the level) weighs as much as a missed one
    invented = torch.zeros_like(target)
    invented[0, 0, 3, 3] = 5.0
    assert weighted(invented, torch.zeros_like(target)).item() == pytest.approx(
        weighted(missed, target).item()
    )
    with pytest.raises(ValueError, match="glitch_weight"):
        SpectrogramLoss("l1", glitch_weight=0.5)


def test_target_only_weights_predict_a_pixel_that_glitches_in_a_fifth_of_the_cases():
    """Five inputs alike, one of whose targets glitches at a pixel: with weights on missed
    and invented glitches alike the L1 optimum there stops at the glitch level (above it
    every case weighs the same and the median, the floor, wins); with weights on the
    target's glitch pixels only it is the glitch (1/5 > 1 / (1 + weight))."""
    target = torch.zeros(5, 1, 8, 8)
    target[0, 0, 4, 4] = 5.0
    levels = torch.linspace(0.0, 5.0, 51)

    def best(on: str) -> float:
        loss = SpectrogramLoss("l1", glitch_weight=10.0, glitch_level=1.0, weight_on=on)
        costs = []
        for v in levels:
            pred = torch.zeros_like(target)
            pred[:, 0, 4, 4] = v
            costs.append(loss(pred, target).item())
        return float(levels[int(np.argmin(costs))])

    assert best("either") == pytest.approx(1.0)
    assert best("target") == pytest.approx(5.0)
    with pytest.raises(ValueError, match="weight_on"):
        SpectrogramLoss("l1", weight_on="both")


def test_the_profile_term_rewards_the_right_time_at_any_frequency():
    """A glitch whose time is known but whose frequency is not: a prediction at the right
    time and the wrong row pays the pixel loss but not the profile term."""
    target = torch.zeros(1, 1, 8, 8)
    target[0, 0, 2, 4] = 5.0
    elsewhere = torch.zeros_like(target)
    elsewhere[0, 0, 6, 4] = 5.0  # same time bin, another row
    pixels = SpectrogramLoss("l1")
    both = SpectrogramLoss("l1", profile_weight=1.0)
    assert both(elsewhere, target).item() == pytest.approx(pixels(elsewhere, target).item())
    missed = torch.zeros_like(target)
    assert both(missed, target).item() == pytest.approx(pixels(missed, target).item() + 5.0 / 8)
