"""Arch witnesses in the subtraction: fragments merged, the arch subtracted, noise left alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glitchflow.config import CleanConfig
from glitchflow.models.scatter_arches import FirWhitener
from glitchflow.models.subtraction import SubtractionModel, fir_lags
from glitchflow.pipelines.clean_arches import arch_windows, block_fir, choose_arches
from glitchflow.pipelines.clean_block import (
    WhitenedBlock,
    WitnessTrigger,
    probe_block,
    subtract_block,
)
from glitchflow.synth.waveforms import Component, render

FS = 4096.0
SA = "V1:Sa_NE_F0_Z_500Hz"
DARM = "V1:LSC_DARM_CORR"


def _block(arch_snr: float, seed: int = 0) -> tuple[WhitenedBlock, np.ndarray]:
    """A 40-s whitened block (detector-like PSD) with one twin arch centred at GPS 1012.0,
    its witness triggering in three pieces, and a lone witness trigger on noise at 1030."""
    n = int(40 * FS)
    df = 0.5
    f = np.maximum(np.arange(0, FS / 2 + df, df), 0.5)
    psd = torch.from_numpy(1.0 + (20.0 / f) ** 8)
    rng = np.random.default_rng(seed)
    block = WhitenedBlock(
        t0=1000.0, sample_rate=FS, strain=rng.standard_normal(n),
        witnesses={SA: rng.standard_normal(n), DARM: rng.standard_normal(n)},
        triggers=[
            WitnessTrigger(SA, 1011.7, 0.2, 20.0, 120.0),
            WitnessTrigger(SA, 1012.05, 0.3, 30.0, 400.0),
            WitnessTrigger(SA, 1012.6, 0.1, 15.0, 60.0),
            WitnessTrigger(SA, 1030.0, 0.1, 25.0, 40.0),
        ],
        psd=psd, psd_df=df, n_input=n + int(2 * FS), start=999.0, filter_duration=2.0,
        highpass=None,
    )  # fmt: skip
    comp = Component(SA, "scatter_fringe", 1.0, 1012.0, (33.0, 2.2, 1.6, 1.0, 1.064e-6, 0))
    first, samples = render(comp, block.t0, FS)
    x = np.zeros(n)
    x[first : first + len(samples)] = samples
    a, b = first - int(4 * FS), first + len(samples) + int(4 * FS)
    white = np.zeros(n)
    white[a:b] = FirWhitener(block_fir(block), FS, b - a, FS)(x[a:b])
    arch = white * arch_snr / np.linalg.norm(white)
    block.strain = block.strain + arch
    return block, arch


def _model(arches: list[str]) -> SubtractionModel:
    c = CleanConfig()
    lags = fir_lags(c.fir_before, c.fir_after, FS)
    firs = {SA: np.zeros(len(lags)), DARM: np.zeros(len(lags))}
    return SubtractionModel(
        "V1:Hrec_hoft_16384Hz", [DARM, SA], firs, lags, FS, c.model_dump(mode="json"), {},
        arches=arches,
    )  # fmt: skip


def test_fragments_of_one_motion_transient_are_one_window():
    block, _ = _block(20.0)
    windows = arch_windows(block.triggers, SA, gap=0.5)
    assert [(round(w.start, 2), round(w.end, 2)) for w in windows] == [
        (1011.6, 1012.65),
        (1029.95, 1030.05),
    ]
    assert windows[0].time == 1012.05 and windows[0].snr2 == 400.0  # the loudest piece
    assert arch_windows(block.triggers, DARM, gap=0.5) == []


def test_the_arch_is_subtracted_and_the_lone_noise_trigger_left_alone():
    block, arch = _block(20.0)
    raw = block.strain.copy()
    sub, rows = subtract_block(_model([SA]), block)
    assert [r["coupling"] for r in rows] == ["arch", "arch"]
    assert [r["subtracted"] for r in rows] == [True, False]
    assert rows[0]["frequency"] == pytest.approx(33.0, abs=2.5)
    np.testing.assert_array_equal(block.strain, raw)  # the block is not modified
    k = int((1012.0 - block.t0) * FS)
    span = slice(k - int(1.5 * FS), k + int(1.5 * FS))
    assert np.linalg.norm(arch[span]) > 19
    assert np.linalg.norm((arch - sub)[span]) < 5.0
    assert not sub[int(25 * FS) :].any()  # nothing taken where only noise triggered


def test_a_filter_witness_model_gives_linear_rows_and_leaves_the_arch():
    block, _ = _block(20.0)
    sub, rows = subtract_block(_model([]), block)
    assert {r["coupling"] for r in rows} == {"linear"}
    assert not any(r["subtracted"] for r in rows)  # a zero filter predicts nothing
    assert not sub.any()


def test_the_probe_prefers_arches_where_they_explain_the_strain():
    block, _ = _block(25.0, seed=1)
    probes = probe_block(_model([]), block, per_witness=2)
    sa = [p for p in probes if p["channel"] == SA]
    assert len(sa) == 2 and max(p["arch_snr"] for p in sa) > 20
    choice = choose_arches(probes + probes, [SA, DARM], min_snr=6.5)
    assert choice[SA]["arch"] and choice[SA]["probes"] == 4
    assert not choice[DARM]["arch"] and choice[DARM]["probes"] == 0


def test_auto_choice_needs_enough_probes_and_twice_the_linear_power():
    few = [{"channel": SA, "linear_snr": 1.0, "arch_snr": 20.0}] * 2
    assert not choose_arches(few, [SA], 6.5)[SA]["arch"]
    linear_wins = [{"channel": SA, "linear_snr": 18.0, "arch_snr": 20.0}] * 5
    assert not choose_arches(linear_wins, [SA], 6.5)[SA]["arch"]
    faint = [{"channel": SA, "linear_snr": 1.0, "arch_snr": 5.0}] * 5
    assert not choose_arches(faint, [SA], 6.5)[SA]["arch"]
    arches = [{"channel": SA, "linear_snr": 10.0, "arch_snr": 15.0}] * 5
    assert choose_arches(arches, [SA], 6.5)[SA]["arch"]
