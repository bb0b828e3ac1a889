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


def test_tile_triggers_cluster_tiles_with_their_extent():
    from glitchflow.evaluate.triggers import tile_triggers

    tiles = np.array(
        [
            [1.00, 100.0, 30.0, 0.002],
            [1.01, 120.0, 90.0, 0.002],
            [1.03, 150.0, 40.0, 0.004],
            [5.00, 40.0, 25.0, 0.02],
        ]
    )
    trig = tile_triggers(tiles, 1000.0, window=0.25)
    assert len(trig) == 2
    np.testing.assert_allclose(trig.time, [1001.01, 1005.0])
    np.testing.assert_allclose(trig.frequency, [120.0, 40.0])
    np.testing.assert_allclose(trig.snr2, [90.0, 25.0])
    np.testing.assert_allclose(trig.duration, [1.032 - 0.999, 0.02])


def test_best_threshold_is_trials_corrected():
    from glitchflow.evaluate.selection import best_coincidence, trials_corrected

    assert trials_corrected(0.0, 16) == 0.0
    assert abs(trials_corrected(10.0, 16) - (10 - np.log10(16))) < 1e-6
    rng = np.random.default_rng(0)
    strain = np.sort(rng.uniform(0, 1000, 40))
    # a witness whose loud triggers (SNR^2 >= 80) all coincide; quiet ones are chance
    loud = strain[:30] + 0.01
    quiet = rng.uniform(0, 1000, 200)
    aux = Triggers(
        np.concatenate([loud, quiet]),
        np.full(230, 50.0),
        np.concatenate([np.full(30, 100.0), np.full(200, 25.0)]),
    )
    aux = Triggers.concat([aux])
    strain = Triggers(strain, np.full(40, 100.0), np.full(40, 100.0))
    best = best_coincidence(strain, aux, [20.0, 40.0, 80.0], [0.1, 0.5], 1000.0)
    assert best["best_snr2_threshold"] in (40.0, 80.0) and best["best_window"] == 0.1
    assert best["coincidences"] == 30 and best["trials"] == 6
    assert best["significance"] < best["raw_significance"]


def test_durations_extend_coincidence():
    # a 2-s arch whose loudest tile is 0.8 s from the motion trigger that made it
    assert not coincident(np.array([10.0]), np.array([10.8]), 0.5).any()
    assert coincident(np.array([10.0]), np.array([10.8]), 0.5, np.array([2.0]), np.array([0.1]))[0]
    stats = coincidence_stats(np.array([10.0]), np.array([10.8]), 0.5, 100.0, np.array([2.0]))
    assert stats["coincidences"] == 1 and abs(stats["expected"] - 2.5 / 100.0) < 1e-12
