"""The passes of the subtraction fit, Ray-free: what one block contributes and how the
blocks' contributions become the next pass's couplings.

The fit is linear least squares, so it distributes exactly: each block (frames padded by
their neighbours, whitened with the one Conditioner) gives the normal equations of each
witness's FIR; summed over blocks they are solved once.  Three stages (:data:`STAGES`):

1. ``pass 1``: every witness trigger of the training blocks;
2. ``pass 2``: only triggers whose pass-1 fit has SNR >= ``clean.train_fit_snr`` (witness
   glitches that do not reach strain would pull the gain to zero); the same pass probes
   which witnesses couple as scattered-light arches and measures the prior widths of the
   fits' shape;
3. ``held out``: the final couplings fitted to the held-out blocks' triggers.

:class:`FitState` is what a finished stage leaves for the next one (and what a restarted
Ray Train worker resumes from); :func:`advance` makes it from the stage's block results.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

import numpy as np

from glitchflow.config import Config, validate_config
from glitchflow.models.coupling_fit import prior_widths
from glitchflow.models.subtraction import (
    CouplingEquations,
    Localiser,
    SubtractionModel,
    coupling_equations,
    fir_lags,
    localiser_from_settings,
    segment_at,
)
from glitchflow.pipelines.clean_arches import choose_arches
from glitchflow.pipelines.clean_block import (
    accumulate,
    owned,
    probe_block,
    read_block,
    subtract_block,
    whiten_block,
)
from glitchflow.signal.conditioner import Conditioner

log = logging.getLogger(__name__)

#: the fit's stages, in order
STAGES = ("pass 1", "pass 2", "held out")


def _localiser(cfg: Config) -> Localiser:
    return localiser_from_settings(cfg.clean.model_dump(mode="json"), cfg.signal.sample_rate)


def subtraction_model(
    cfg: Config, witnesses: list[str], firs: dict, meta: dict, arches=(), priors=None
) -> SubtractionModel:
    """The self-describing subtraction model of ``firs`` (taps per witness) under ``cfg``."""
    c = cfg.clean
    return SubtractionModel(
        cfg.signal.strain_channel,
        list(witnesses),
        firs,
        fir_lags(c.fir_before, c.fir_after, cfg.signal.sample_rate),
        float(cfg.signal.sample_rate),
        c.model_dump(mode="json"),
        cfg.signal.model_dump(mode="json"),
        meta,
        list(arches),
        dict(priors or {}),
    )


def block_pass(
    cfg_json: dict,
    paths: list[str],
    frames: list,
    witnesses: list[str],
    model_state=None,
    arches=(),
    probe: bool = False,
    priors=None,
) -> dict:
    """One block: normal equations (first pass, ``model_state`` None) or, with a model,
    the fits of its triggers and the equations of those fitted above ``train_fit_snr``;
    ``arches``: witnesses fitted as arches; ``probe``: also fit each witness's loudest
    windows both ways (:func:`~glitchflow.pipelines.clean_block.probe_block`);
    ``priors``: the fit's prior widths per witness (``shapes`` returns what estimates
    them: :func:`~glitchflow.models.coupling_fit.prior_widths`)."""

    cfg = validate_config(cfg_json)
    c = cfg.clean
    cond = Conditioner(cfg.signal)
    loc = _localiser(cfg)
    settings = c.model_dump(mode="json")
    read = read_block(paths, frames, cfg.signal.strain_channel, witnesses)
    eqs: dict[str, CouplingEquations] = {}
    rows, examples, probes, shapes = [], [], [], []
    min_len = 2 * cfg.signal.conditioning.filter_duration + c.segment
    for seg in read.segments:
        if seg.duration < max(min_len, cfg.signal.conditioning.fftlength):
            continue
        block = whiten_block(cond, seg, cfg.signal.strain_channel, read.witnesses, c)
        block = owned(block, read.start, read.end, c.segment)
        keep = None
        if model_state is not None:
            model = subtraction_model(cfg, witnesses, model_state, {}, arches, priors)
            _, fits = subtract_block(model, block, shapes)
            if probe:
                probes += probe_block(model, block, c.arch.probe_triggers)
            good = {(f["channel"], f["gps"]) for f in fits if f["fit_snr"] >= c.train_fit_snr}
            rows += fits
            examples += _examples(model, block, fits, loc)

            def keep(trig, good=good):
                return (trig.channel, round(trig.time, 4)) in good

        empty = lambda: coupling_equations(settings, cfg.signal.sample_rate)  # noqa: E731
        for name, eq in accumulate(empty, loc, block, keep).items():
            eqs[name] = eqs[name].merge(eq) if name in eqs else eq
    return {
        "eqs": {k: (v.R, v.X, v.count, v.Rs, v.Xs) for k, v in eqs.items()},
        "rows": rows,
        "examples": examples,
        "probes": probes,
        "shapes": shapes,
        "bad": {k: list(v) for k, v in read.bad.items()},
        "errors": read.errors,
        "frames": list(paths),
    }


def _examples(model, block, fits, loc, n: int = 2) -> list[dict]:
    """The ``n`` loudest subtracted fits as waveforms (whitened strain, fitted) for plots."""
    out = []
    linear = (f for f in fits if f["subtracted"] and f["coupling"] == "linear")
    best = sorted(linear, key=lambda f: -f["fit_snr"])[:n]
    for f in best:
        start = round((f["gps"] - block.t0) * block.sample_rate) - loc.n // 2
        u = segment_at(block.witnesses[f["channel"]], start, loc.n)
        m = loc(u, f["duration"], f["frequency"], block.notches.get(f["channel"], ()))
        y = segment_at(block.strain, start, loc.n)
        fit = model.fit(model.predict(f["channel"], m), y, f["frequency"])
        out.append(dict(f, strain=y.astype(np.float32), fitted=fit.fitted.astype(np.float32)))
    return out


def solve_couplings(results: list[dict], cfg: Config, witnesses: list[str]):
    """Sum the blocks' coupling sums per witness and solve: ``(FIR taps, trigger counts,
    fitted pure delays in ms)`` per witness."""
    settings = cfg.clean.model_dump(mode="json")
    lags = fir_lags(cfg.clean.fir_before, cfg.clean.fir_after, cfg.signal.sample_rate)
    total: dict[str, CouplingEquations] = {}
    for res in results:
        for name, (R, X, count, Rs, Xs) in res["eqs"].items():
            eq = coupling_equations(settings, cfg.signal.sample_rate)
            eq = eq.merge(
                CouplingEquations(eq.basis, eq.delays, eq.oversample, R, X, count, Rs, Xs)
            )
            total[name] = total[name].merge(eq) if name in total else eq
    firs, delays = {}, {}
    for w in witnesses:
        if w not in total:
            firs[w] = np.zeros(len(lags))
            continue
        c = cfg.clean
        coef, delay = total[w].solve(c.ridge, c.gain_iterations, c.smoothness)
        firs[w] = total[w].fir(coef, delay, lags)
        delays[w] = round(1e3 * delay / cfg.signal.sample_rate, 3)
    return firs, {w: (total[w].count if w in total else 0) for w in witnesses}, delays


def fit_priors(results: list[dict], witnesses: list[str], min_snr: float, hedge: float) -> dict:
    """Per witness, the prior widths of its fit's shape from the second pass's filter fits
    of SNR >= ``min_snr`` (:func:`~glitchflow.models.coupling_fit.prior_widths`), times
    ``hedge``."""
    shapes = [s for res in results for s in res["shapes"]]
    out = {}
    for w in witnesses:
        mine = [(r, v) for c, snr, r, v in shapes if c == w and snr >= min_snr]
        widths = prior_widths([r for r, _ in mine], [v for _, v in mine])
        if widths is not None:
            out[w] = [round(hedge * x, 4) for x in widths]
    log.info("fit-clean: prior widths of the fits' shape %s", out)
    return out


def probe_indices(n_blocks: int, at_most: int) -> frozenset[int]:
    """Indices of at most ``at_most`` training blocks spread evenly over ``n_blocks``."""
    return frozenset(
        np.linspace(0, n_blocks - 1, min(at_most, n_blocks)).round().astype(int).tolist()
    )


@dataclass
class FitState:
    """What the finished stages of a fit leave: ``done`` stages; ``firs`` (taps per
    witness) of the last solved pass; ``counts`` training triggers and ``delays`` (ms) per
    witness; ``arches``, ``choice`` (probe figures), ``priors`` (prior widths per witness);
    ``errors`` (frame -> reason) of frames no pass could use; ``rows`` and ``examples``:
    the held-out fits and the loudest of them as waveforms; ``resumed_after``: stages a
    restarted worker group found done in its checkpoint (0: never restarted)."""

    done: int = 0
    resumed_after: int = 0
    firs: dict | None = None
    counts: dict = field(default_factory=dict)
    delays: dict = field(default_factory=dict)
    arches: list = field(default_factory=list)
    choice: dict = field(default_factory=dict)
    priors: dict = field(default_factory=dict)
    errors: dict = field(default_factory=dict)
    rows: list = field(default_factory=list)
    examples: list = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.done >= len(STAGES)


def stage_work(state: FitState, cfg: Config, train: list, val: list) -> tuple[list, dict]:
    """The next stage's blocks and the keywords of :func:`block_pass` for each, by block
    index: ``(blocks, {index: kwargs})``."""
    c = cfg.clean
    stage = STAGES[state.done]
    if stage == "pass 1":
        return train, {i: {} for i in range(len(train))}
    if stage == "pass 2":
        auto = c.arch_witnesses == "auto"
        probe = probe_indices(len(train), c.arch.probe_blocks) if auto else frozenset()
        return train, {
            i: {"model_state": state.firs, "probe": i in probe} for i in range(len(train))
        }
    kw = {"model_state": state.firs, "arches": state.arches, "priors": state.priors}
    return val, {i: dict(kw) for i in range(len(val))}


def advance(state: FitState, results: list[dict], cfg: Config, witnesses: list[str]) -> FitState:
    """The state after the next stage, from its blocks' results in block order."""
    c = cfg.clean
    stage = STAGES[state.done]
    errors = dict(state.errors)
    for res in results:
        errors.update(res["errors"])
    if stage == "pass 1":
        firs, _, _ = solve_couplings(results, cfg, witnesses)
        return replace(state, done=1, firs=firs, errors=errors)
    if stage == "pass 2":
        firs, counts, delays = solve_couplings(results, cfg, witnesses)
        if c.arch_witnesses == "auto":
            probes = [p for res in results for p in res["probes"]]
            choice = choose_arches(probes, witnesses, c.arch.min_snr)
            arches = [w for w in witnesses if choice[w]["arch"]]
        else:
            choice, arches = {}, [w for w in witnesses if w in c.arch_witnesses]
        priors = (
            fit_priors(results, witnesses, c.train_fit_snr, c.fit_prior_hedge)
            if c.fit_prior
            else {}
        )
        return replace(
            state, done=2, firs=firs, counts=counts, delays=delays, arches=arches,
            choice=choice, priors=priors, errors=errors,
        )  # fmt: skip
    rows = [r for res in results for r in res["rows"]]
    examples = [e for res in results for e in res["examples"]][:4]
    return replace(state, done=3, rows=rows, examples=examples, errors=errors)
