"""Veto figures against a truth catalogue: efficiency per group, deadtime, use percentage."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from glitchflow.evaluate.scorecard import (
    efficiency_at_deadtime,
    glitch_groups,
    ideal_bound,
    local_bins,
    touching,
    veto_figures,
    witness_snr_threshold,
    witnessed_extents,
)


def _truth() -> pd.DataFrame:
    rows = [
        # gps, strain_snr, witnesses
        (10.0, 20.0, "V1:A"),
        (20.0, 12.0, "V1:B"),
        (30.0, 9.0, "V1:A"),
        (40.0, 30.0, ""),  # unwitnessed
        (50.0, 5.0, "V1:A"),  # below the SNR threshold
        (60.0, 0.0, "V1:A"),  # witness only: never in strain
        (500.0, 20.0, "V1:A"),  # outside the live time
    ]
    return pd.DataFrame(
        {
            "id": range(len(rows)),
            "gps_peak": [r[0] for r in rows],
            "strain_snr": [r[1] for r in rows],
            "witnesses": [r[2] for r in rows],
            "duration": 0.1,
            "family": [
                "blip",
                "environmental",
                "blip",
                "unwitnessed",
                "blip",
                "witness_only",
                "blip",
            ],
            "witness_snrs": ["50", "9", "4", "", "30", "20", "40"],
        }
    )


def test_veto_figures_count_each_group():
    live = np.array([[0.0, 100.0]])
    groups = glitch_groups(_truth(), live, 8.0)
    assert [len(groups[k]) for k in ("witnessed", "unwitnessed", "overall")] == [3, 1, 4]
    segments = np.array([[9.5, 10.5], [19.5, 20.5], [59.5, 60.5], [70.0, 71.0]])
    f = veto_figures(groups, segments, live)
    assert f["deadtime"] == pytest.approx(0.04)
    assert f["witnessed_efficiency"] == pytest.approx(2 / 3)
    assert f["unwitnessed_efficiency"] == 0.0
    assert f["overall_efficiency"] == pytest.approx(0.5)
    assert f["efficiency_over_deadtime"] == pytest.approx((2 / 3) / 0.04)
    assert f["use_percentage"] == pytest.approx(50.0)  # 2 of 4 segments hold a strain glitch
    # glitches of 0.1 s: the segments around 10 and 20 s cover them whole, the 30-s one not
    assert f["witnessed_coverage"] == pytest.approx(2 / 3)
    half = veto_figures(groups, np.array([[9.0, 10.0], [19.95, 21.0]]), live)
    assert half["witnessed_coverage"] == pytest.approx((0.5 + 1.0) / 3)
    fam = f["per_family"]
    assert fam["blip"] == {"glitches": 2, "vetoed": 1, "efficiency": 0.5}
    assert fam["environmental"]["efficiency"] == 1.0 and fam["unwitnessed"]["efficiency"] == 0.0


def test_ideal_bound_counts_witnesses_above_the_trigger_threshold():
    # a matched tile of a witness at SNR rho has median-normalised energy (1 + rho^2/2)/ln 2
    rho = witness_snr_threshold(20.0)
    assert (1 + rho**2 / 2) / np.log(2) == pytest.approx(20.0)
    groups = glitch_groups(_truth(), np.array([[0.0, 100.0]]), 8.0)
    bound = ideal_bound(groups["witnessed"], 20.0)
    # witnesses at SNR 50, 9 and 4: the SNR-4 witness (energy 13.0) makes no trigger
    assert bound["witnessed_efficiency"] == pytest.approx(2 / 3)
    assert bound["per_family"]["blip"]["efficiency"] == 0.5
    assert bound["per_family"]["environmental"]["efficiency"] == 1.0


def test_efficiency_interpolated_at_a_deadtime():
    roc = [
        {"deadtime": 0.01, "witnessed_efficiency": 0.5},
        {"deadtime": 0.03, "witnessed_efficiency": 0.9},
    ]
    assert efficiency_at_deadtime(roc, 0.02) == pytest.approx(0.7)
    # past the curve: a veto can always spend more deadtime for the same efficiency
    assert efficiency_at_deadtime(roc, 0.5) == pytest.approx(0.9)
    # below it: towards (0, 0), a veto that removes no time vetoes nothing
    assert efficiency_at_deadtime(roc, 0.005) == pytest.approx(0.25)
    # a point that spends more deadtime for less efficiency never lowers the curve
    worse = [*roc, {"deadtime": 0.05, "witnessed_efficiency": 0.6}]
    assert efficiency_at_deadtime(worse, 0.05) == pytest.approx(0.9)
    per = [
        {"deadtime": 0.01, "witnessed_efficiency": 0.5, "per_family": {"blip": {"efficiency": 1}}}
    ]
    assert efficiency_at_deadtime(per, 0.005, "blip") == pytest.approx(0.5)
    assert np.isnan(efficiency_at_deadtime(per, 0.005, "environmental"))


def test_local_bins_clip_to_the_window():
    assert local_bins(10.0, 0.5, 9.8, 0.1, 20) == slice(0, 7)
    assert local_bins(11.5, 0.5, 9.8, 0.1, 20) == slice(12, 20)


def test_perfect_model_targets_are_the_witnessed_glitches_in_strain():
    """Witnessed glitches reaching strain at any SNR (the 5-SNR one too), not the
    unwitnessed one nor the witness-only one; a cluster counts when it overlaps one."""
    targets = witnessed_extents(_truth())
    np.testing.assert_allclose(targets[:, 0] + 0.05, [10.0, 20.0, 30.0, 50.0, 500.0])
    clusters = np.array([[9.9, 9.96], [9.0, 9.9], [39.0, 41.0], [59.0, 61.0], [49.0, 52.0]])
    assert touching(clusters, targets).tolist() == [True, False, False, False, True]
    assert touching(np.zeros((0, 2)), targets).shape == (0,)
