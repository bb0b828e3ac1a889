"""Matching pursuit rebuilds a witness glitch from sine-Gaussian atoms, and leaves noise out."""

from __future__ import annotations

import math

import numpy as np
import pytest

from glitchflow.models.witness_atoms import AtomSearch, atom_product, complex_atom

FS = 4096.0
L = 4096


def sine_gaussian(f, q, t0, phase, snr):
    t = (np.arange(L) - L // 2) / FS - t0
    tau = q / (math.sqrt(2) * math.pi * f)
    x = np.exp(-((t / tau) ** 2)) * np.cos(2 * math.pi * f * t + phase)
    return snr * x / np.linalg.norm(x)


@pytest.mark.parametrize(
    "f, q, t0, snr",
    [
        (32.0, 4.0, 0.012, 30.0),
        (90.0, 6.0, -0.004, 60.0),
        (230.0, 11.0, 0.0007, 120.0),
        (420.0, 25.0, -0.02, 45.0),
    ],
)
def test_one_sine_gaussian_is_found_at_its_time_frequency_and_q(f, q, t0, snr):
    rng = np.random.default_rng(int(f))
    glitch = sine_gaussian(f, q, t0, rng.uniform(0, 2 * np.pi), snr)
    rebuilt, atoms = AtomSearch(FS)(glitch + rng.standard_normal(L), 0.05, f * 1.15)
    first = atoms[0]
    assert first.frequency == pytest.approx(f, rel=0.03)
    assert first.q == pytest.approx(q, rel=0.15)
    tau = q / (math.sqrt(2) * math.pi * f)  # the envelope's e-fold (s)
    assert first.time == pytest.approx(t0, abs=0.1 * tau)
    # what is left of the glitch is a few noise units (5 fitted parameters), not the
    # 64 units of noise in the segment
    assert np.linalg.norm(rebuilt - glitch) < 4.5


def test_two_glitches_in_the_window_give_two_atoms():
    rng = np.random.default_rng(7)
    glitch = sine_gaussian(80.0, 5.0, -0.03, 0.3, 50.0) + sine_gaussian(150.0, 8.0, 0.03, 2.0, 40.0)
    rebuilt, atoms = AtomSearch(FS)(glitch + rng.standard_normal(L), 0.06, 110.0)
    assert len(atoms) >= 2
    assert sorted(round(a.frequency / 10) for a in atoms[:2]) == [8, 15]
    assert np.linalg.norm(rebuilt - glitch) < 6


def test_noise_alone_gives_one_weak_atom_and_stops():
    rng = np.random.default_rng(3)
    noise = rng.standard_normal(L)
    rebuilt, atoms = AtomSearch(FS, stop_snr2=20.0)(noise, 0.05, 100.0)
    assert len(atoms) == 1  # the trigger's atom is kept, none after it
    assert atoms[0].snr2 < 25
    assert np.linalg.norm(rebuilt) < 5.5


def test_coarse_search_and_refinement_agree_with_the_direct_product():
    rng = np.random.default_rng(4)
    r = rng.standard_normal(L)
    a = complex_atom(L, FS, 0.0123, 77.0, 7.0)
    direct = np.vdot(a, r)
    assert atom_product(r, FS, 0.0123, 77.0, 7.0) == pytest.approx(direct, rel=1e-6)
    assert np.linalg.norm(a.real) == pytest.approx(1.0, rel=0.02)
