"""``glitchflow fit-clean``: fit the witness-to-strain coupling FIRs over a span (Ray tasks).

The fit is linear least squares, so it distributes exactly: each Ray task reads
one block of frames (padded by its neighbours), whitens it with the one
Conditioner, finds the witness triggers and returns the normal equations of
each witness's FIR; the driver sums and solves them.  Two passes: the second
keeps only triggers whose first-pass fit has SNR >= ``clean.train_fit_snr``
(witness glitches that do not reach strain would pull the gain to zero).

GPS-block split: every ``round(1 / validation_fraction)``-th block is held out
and scored with the final FIRs (fit SNR, excess strain power removed), which
the run logs to MLflow beside the self-describing checkpoint
(:class:`~glitchflow.models.subtraction.SubtractionModel`).

Products in OUT: ``model.pt``, ``summary.json``, ``validation.csv``,
``couplings.png`` (FIRs and held-out fits), ``tensorboard/``, and an MLflow run
whose checkpoint is registered as ``clean.model_name`` under ``--alias``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from glitchflow.config import Config, validate_config
from glitchflow.io.atomic import atomic_path, write_json_atomic
from glitchflow.io.channels import channels_from_file
from glitchflow.io.frames import find_frames, make_blocks
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
from glitchflow.pipelines.clean_report import log_fit, plot_couplings
from glitchflow.pipelines.runtime import check_resources, claim_out
from glitchflow.signal.conditioner import Conditioner

log = logging.getLogger(__name__)

FIT_PRODUCTS = ["model.pt", "summary.json", "validation.csv", "couplings.png", "tensorboard"]


def _localiser(cfg: Config) -> Localiser:
    return localiser_from_settings(cfg.clean.model_dump(mode="json"), cfg.signal.sample_rate)


def _model(
    cfg: Config, witnesses: list[str], firs: dict, meta: dict, arches=(), priors=None
) -> SubtractionModel:
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
            model = _model(cfg, witnesses, model_state, {}, arches, priors)
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


def _solve(results: list[dict], lags, cfg: Config, witnesses: list[str]):
    """Sum the blocks' coupling sums per witness and solve: ``(FIR taps, trigger counts,
    fitted pure delays in ms)`` per witness."""
    settings = cfg.clean.model_dump(mode="json")
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


def validation_metrics(rows: list[dict], witnesses: list[str]) -> dict:
    """Per witness: held-out triggers, how many were subtracted, their median fit SNR."""
    out = {}
    for w in witnesses:
        mine = [r for r in rows if r["channel"] == w]
        done = [r["fit_snr"] for r in mine if r["subtracted"]]
        out[w] = {
            "triggers": len(mine),
            "subtracted": len(done),
            "median_fit_snr": round(float(np.median(done)), 3) if done else 0.0,
        }
    return out


def witness_channels(cfg: Config, channels_file: str | None) -> list[str]:
    """Witnesses from a scan report / channel file, else ``clean.channels``; unsafe refused."""
    if channels_file:
        names = channels_from_file(channels_file)
    elif cfg.clean.channels:
        names = list(cfg.clean.channels)
    else:
        raise ValueError("no witness channels: pass --channels (scan report) or set clean.channels")
    names = [n for n in names if n != cfg.signal.strain_channel]
    unsafe = sorted(set(names) & set(cfg.scan.unsafe_channels))
    if unsafe:
        raise ValueError(
            f"{unsafe}: strain-derived (scan.unsafe_channels); subtracting them would "
            "remove gravitational waves too"
        )
    if not names:
        raise ValueError("no witness channels left to fit")
    return names


@dataclass(frozen=True)
class FitCleanResult:
    """What ``glitchflow fit-clean`` produced (also OUT/summary.json).  ``frames_in``
    readable frames, of which ``frames_failed`` (file, reason) could not be used;
    ``frames_rejected``: files that are not readable frames; ``training_triggers``:
    witness triggers per channel that the fit used; ``validation``: per witness, the
    held-out blocks' subtraction figures; ``coupling_delay_ms`` and ``group_delay_ms``
    (40-250 Hz) per witness; ``arch_witnesses``: those fitted as scattered-light arches,
    ``arch_choice``: the probe figures behind the automatic choice (empty when set);
    ``fit_priors``: per witness, the prior widths of the fit's shape coefficients;
    ``model``: the written model file; ``registered``: its MLflow registry entry (name,
    version, uri, tracking_uri), None when not logged."""

    witnesses: list[str]
    frames_in: int
    frames_failed: list[dict]
    frames_rejected: list[dict]
    training_triggers: dict[str, int]
    validation: dict[str, dict]
    coupling_delay_ms: dict[str, float]
    group_delay_ms: dict[str, float]
    arch_witnesses: list[str]
    arch_choice: dict[str, dict]
    fit_priors: dict[str, list[float]]
    wall_seconds: float
    model: str
    registered: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)


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


def split_blocks(blocks: list, c, frames_dir) -> tuple[list, list]:
    """Training and held-out blocks: every ``round(1 / clean.validation_fraction)``-th
    block is held out (none when the fraction is 0)."""
    every = max(2, round(1 / c.validation_fraction)) if c.validation_fraction > 0 else 0
    val = [b for i, b in enumerate(blocks) if every and i % every == every - 1]
    train = [b for i, b in enumerate(blocks) if not (every and i % every == every - 1)]
    if not train:
        raise ValueError(f"{frames_dir}: every block is held out; lower clean.validation_fraction")
    return train, val


def run_blocks(
    blocks: list, cfg_json: dict, frames: list, witnesses, firs, what: str, cpus, arches=(),
    probe=frozenset(), priors=None,
):  # fmt: skip
    """One pass of :func:`block_pass` over ``blocks`` of frames in Ray tasks of ``cpus``
    CPUs, with a progress bar; returns the blocks' results in block order.  ``firs``: the
    couplings of the previous pass (None in the first); ``probe``: indices of the blocks
    that probe the arch coupling."""
    import ray

    task = ray.remote(num_cpus=cpus)(block_pass)
    refs = [
        task.remote(
            cfg_json, [f.path for f in b], frames, witnesses, firs, arches, i in probe, priors
        )
        for i, b in enumerate(blocks)
    ]
    done = {}
    with tqdm(total=len(refs), desc=f"fit-clean {what}", unit="block") as bar:
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            done[ready[0]] = ray.get(ready[0])
            bar.update(1)
    return [done[r] for r in refs]


def run_fit_clean(
    cfg: Config,
    frames_dir: str | Path,
    channels_file: str | None,
    out: str | Path,
    tracking_uri: str | None = None,
    alias: str = "candidate",
    overwrite: bool = False,
) -> FitCleanResult:
    """Fit the couplings over ``frames_dir``; write the products; return the summary."""

    t0 = time.perf_counter()
    c = cfg.clean
    witnesses = witness_channels(cfg, channels_file)
    unknown = sorted(set(c.arch_witnesses) - set(witnesses)) if c.arch_witnesses != "auto" else []
    if unknown:
        raise ValueError(f"clean.arch_witnesses {unknown} are not among the witnesses {witnesses}")
    found = find_frames(frames_dir)
    if not found.frames:
        raise FileNotFoundError(f"{frames_dir}: no frames to fit the couplings on")
    check_resources(c.resources.cpus_per_worker, 0.0, "fit-clean")
    out = claim_out(out, FIT_PRODUCTS, "fit-clean", overwrite)
    train, val = split_blocks(make_blocks(found.frames, c.frames_per_block), c, frames_dir)
    lags = fir_lags(c.fir_before, c.fir_after, cfg.signal.sample_rate)
    args = (cfg.model_dump(mode="json"), [(f.path, f.start, f.duration) for f in found.frames])

    def run(blocks, what: str, firs=None, arches=(), probe=frozenset(), priors=None):
        cpus = c.resources.cpus_per_worker
        return run_blocks(blocks, *args, witnesses, firs, what, cpus, arches, probe, priors)

    first = run(train, "pass 1")
    firs, _, _ = _solve(first, lags, cfg, witnesses)
    auto = c.arch_witnesses == "auto"
    probe = probe_indices(len(train), c.arch.probe_blocks) if auto else frozenset()
    second = run(train, "pass 2", firs, probe=probe)
    firs, counts, delays = _solve(second, lags, cfg, witnesses)
    if auto:
        probes = [p for res in second for p in res["probes"]]
        choice = choose_arches(probes, witnesses, c.arch.min_snr)
        arches = [w for w in witnesses if choice[w]["arch"]]
    else:
        choice, arches = {}, [w for w in witnesses if w in c.arch_witnesses]
    priors = (
        fit_priors(second, witnesses, c.train_fit_snr, c.fit_prior_hedge) if c.fit_prior else {}
    )
    held = run(val, "held out", firs, arches, priors=priors) if val else []
    rows = [r for res in held for r in res["rows"]]
    failed = {p: why for res in first + held for p, why in res["errors"].items()}
    meta = {
        "frames": len(found.frames),
        "train_blocks": len(train),
        "validation_blocks": len(val),
        "training_triggers": counts,
        "coupling_delay_ms": delays,
        "arch_choice": choice,
        "fit_priors": priors,
        "span": [found.frames[0].start, found.frames[-1].end],
    }
    model = _model(cfg, witnesses, firs, meta, arches, priors)
    model.save(out / "model.pt")
    result = FitCleanResult(
        witnesses=witnesses,
        frames_in=len(found.frames),
        frames_failed=[{"file": p, "reason": why} for p, why in sorted(failed.items())],
        frames_rejected=[{"file": e.path, "reason": e.reason} for e in found.failures],
        training_triggers=counts,
        validation=validation_metrics(rows, witnesses),
        coupling_delay_ms=delays,
        group_delay_ms={w: round(1e3 * model.group_delay(w), 3) for w in witnesses},
        arch_witnesses=arches,
        arch_choice=choice,
        fit_priors=priors,
        wall_seconds=round(time.perf_counter() - t0, 2),
        model=str(out / "model.pt"),
    )
    _write_csv(rows, out / "validation.csv")
    examples = [e for res in held for e in res["examples"]][:4]
    plot_couplings(model, examples, out / "couplings.png", out / "tensorboard")
    if tracking_uri is not False:
        registered = log_fit(cfg, out, result.to_dict(), tracking_uri, alias)
        result = replace(result, registered=registered)
    write_json_atomic(out / "summary.json", result.to_dict(), default=str)
    return result


def _write_csv(rows: list[dict], path: Path) -> None:
    import pandas as pd

    cols = ["channel", "gps", "frequency", "witness_snr2", "duration", "fit_snr", "gain",
            "quadrature", "subtracted", "coupling"]  # fmt: skip
    with atomic_path(path) as tmp:
        pd.DataFrame(rows, columns=cols).to_csv(tmp, index=False)
