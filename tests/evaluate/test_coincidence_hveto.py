"""Coincidence statistics and hveto rounds on triggers with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import poisson

from glitchflow.evaluate.coincidence import (
    coincidence_stats,
    coincident,
    poisson_significance,
    slide,
    slide_fap,
)
from glitchflow.evaluate.hveto import apply_rounds, efficiency_deadtime, merge_segments, run_hveto
from glitchflow.evaluate.triggers import Triggers, cluster, peak_mask


def test_poisson_significance_matches_scipy():
    assert poisson_significance(0, 3.0) == 0.0
    assert poisson_significance(5, 0.5) == pytest.approx(-np.log10(poisson.sf(4, 0.5)))
    assert poisson_significance(50, 1.0) > 40  # far tail stays finite and large


def test_coincident_and_stats():
    strain = np.array([10.0, 20.0, 30.0])
    aux = np.array([10.05, 29.8, 50.0])
    assert coincident(strain, aux, 0.2).tolist() == [True, False, False]
    assert coincident(strain, aux, 0.5).tolist() == [True, False, True]
    stats = coincidence_stats(strain, aux, 0.5, livetime=100.0)
    assert stats["coincidences"] == 2 and stats["expected"] == pytest.approx(3 * 3 * 0.5 / 100)
    assert stats["use_percentage"] == pytest.approx(200 / 3)


def test_slides_preserve_counts_and_stay_live():
    segs = np.array([[0.0, 100.0], [200.0, 260.0]])
    times = np.sort(np.random.default_rng(0).uniform(0, 100, 30))
    moved = slide(times, 37.0, segs)
    assert len(moved) == 30
    assert np.all(((moved >= 0) & (moved < 100)) | ((moved >= 200) & (moved < 260)))


def test_slide_fap_separates_real_coupling_from_chance():
    rng = np.random.default_rng(1)
    segs = np.array([[0.0, 2000.0]])
    strain = np.sort(rng.uniform(0, 2000, 40))
    witness = np.sort(strain[:25] + rng.normal(0, 0.01, 25))
    decoy = np.sort(rng.uniform(0, 2000, 25))
    n_w = int(coincident(strain, witness, 0.2).sum())
    n_d = int(coincident(strain, decoy, 0.2).sum())
    fap_w, _ = slide_fap(strain, witness, 0.2, segs, 100, 3.7, n_w)
    fap_d, _ = slide_fap(strain, decoy, 0.2, segs, 100, 3.7, n_d)
    assert fap_w <= 0.01 and fap_d > 0.05


def test_peak_mask_and_cluster():
    spec = np.ones((8, 20))
    spec[3, 5] = 50
    spec[3, 6] = 40  # shoulder of the same peak: not a local maximum
    spec[6, 15] = 30
    mask = peak_mask(spec, 20)
    assert mask.sum() == 2 and mask[3, 5] and mask[6, 15]
    trig = Triggers(np.array([1.0, 1.1, 3.0]), np.array([50, 60, 70.0]), np.array([30, 80, 25.0]))
    merged = cluster(trig, 0.25)
    assert merged.time.tolist() == [1.1, 3.0] and merged.snr2.tolist() == [80, 25]


def test_hveto_picks_the_witness_first_and_stops_at_noise():
    rng = np.random.default_rng(2)
    live = np.array([[0.0, 3600.0]])
    glitch_times = np.sort(rng.uniform(0, 3600, 60))
    strain = Triggers(glitch_times, np.full(60, 100.0), np.full(60, 100.0))
    witness_t = glitch_times[:40] + 0.01
    aux = {
        "V1:WITNESS": Triggers(witness_t, np.full(40, 100.0), np.full(40, 200.0)),
        "V1:DECOY": Triggers(
            np.sort(rng.uniform(0, 3600, 80)), np.full(80, 50.0), np.full(80, 90.0)
        ),
        "V1:UNSAFE": Triggers(glitch_times, np.full(60, 100.0), np.full(60, 500.0)),
    }
    rounds = run_hveto(strain, aux, live, [20, 100], [0.1, 0.5], 5.0, 5, {"V1:UNSAFE"})
    assert [r.channel for r in rounds] == ["V1:WITNESS"]
    first = rounds[0]
    assert first.efficiency == pytest.approx(40 / 60) and first.deadtime < 0.01
    segments = apply_rounds(rounds, aux, live)
    eff, dead = efficiency_deadtime(glitch_times, segments, live)
    assert eff == pytest.approx(40 / 60) and dead == pytest.approx(first.deadtime)
    assert len(merge_segments(np.array([[0, 1], [0.5, 2], [3, 4]]))) == 2
