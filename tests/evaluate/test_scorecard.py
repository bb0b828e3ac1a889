"""Veto figures against a truth catalogue: efficiency per group, deadtime, use percentage."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from glitchflow.evaluate.scorecard import (
    efficiency_at_deadtime,
    glitch_groups,
    local_bins,
    veto_figures,
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
            "family": "blip",
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


def test_efficiency_interpolated_at_a_deadtime():
    roc = [
        {"deadtime": 0.01, "witnessed_efficiency": 0.5},
        {"deadtime": 0.03, "witnessed_efficiency": 0.9},
    ]
    assert efficiency_at_deadtime(roc, 0.02) == pytest.approx(0.7)
    assert np.isnan(efficiency_at_deadtime(roc, 0.5))


def test_local_bins_clip_to_the_window():
    assert local_bins(10.0, 0.5, 9.8, 0.1, 20) == slice(0, 7)
    assert local_bins(11.5, 0.5, 9.8, 0.1, 20) == slice(12, 20)
