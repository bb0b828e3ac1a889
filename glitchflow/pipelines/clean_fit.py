"""``glitchflow fit-clean``: fit the witness-to-strain couplings over a span (Ray Train).

The passes of the fit (:mod:`glitchflow.pipelines.clean_passes`) run on Ray Train
(:mod:`glitchflow.pipelines.clean_train`: workers share the blocks and all-gather their
normal equations, a checkpoint per pass, ``FailureConfig``); this module is the driver.

GPS-block split: every ``round(1 / validation_fraction)``-th block is held out
and scored with the final couplings (fit SNR, excess strain power removed), which
the run logs to MLflow beside the self-describing checkpoint
(:class:`~glitchflow.models.subtraction.SubtractionModel`).

Products in OUT: ``model.pt``, ``summary.json``, ``validation.csv``,
``couplings.png`` (FIRs and held-out fits), ``tensorboard/``, ``ray_results/`` (the Ray
Train run and its checkpoints), and an MLflow run whose checkpoint is registered as
``clean.model_name`` under ``--alias``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from glitchflow.config import Config
from glitchflow.io.atomic import atomic_path, write_json_atomic
from glitchflow.io.channels import channels_from_file
from glitchflow.io.frames import find_frames, make_blocks
from glitchflow.pipelines.clean_passes import subtraction_model
from glitchflow.pipelines.clean_report import log_fit, plot_couplings
from glitchflow.pipelines.clean_train import fit_on_ray_train
from glitchflow.pipelines.runtime import check_stage_resources
from glitchflow.pipelines.staging import claim_out

FIT_PRODUCTS = [
    "model.pt",
    "summary.json",
    "validation.csv",
    "couplings.png",
    "tensorboard",
    "ray_results",
]


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
    ``resumed_after_stage``: stages done before a worker failure restarted the Ray Train
    run (0: none did); ``model``: the written model file; ``registered``: its MLflow
    registry entry (name, version, uri, tracking_uri), None when not logged."""

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
    resumed_after_stage: int
    wall_seconds: float
    model: str
    registered: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def split_blocks(blocks: list, c, frames_dir) -> tuple[list, list]:
    """Training and held-out blocks: every ``round(1 / clean.validation_fraction)``-th
    block is held out (none when the fraction is 0)."""
    every = max(2, round(1 / c.validation_fraction)) if c.validation_fraction > 0 else 0
    val = [b for i, b in enumerate(blocks) if every and i % every == every - 1]
    train = [b for i, b in enumerate(blocks) if not (every and i % every == every - 1)]
    if not train:
        raise ValueError(f"{frames_dir}: every block is held out; lower clean.validation_fraction")
    return train, val


def run_fit_clean(
    cfg: Config,
    frames_dir: str | Path,
    channels_file: str | None,
    out: str | Path,
    tracking_uri: str | None = None,
    alias: str = "candidate",
    overwrite: bool = False,
    crash_after_stage: int | None = None,
) -> FitCleanResult:
    """Fit the couplings over ``frames_dir``; write the products; return the summary.
    ``crash_after_stage``: kill a worker once after that many stages (fault-tolerance
    test: the run resumes from the stage's checkpoint)."""

    t0 = time.perf_counter()
    c = cfg.clean
    witnesses = witness_channels(cfg, channels_file)
    unknown = sorted(set(c.arch_witnesses) - set(witnesses)) if c.arch_witnesses != "auto" else []
    if unknown:
        raise ValueError(f"clean.arch_witnesses {unknown} are not among the witnesses {witnesses}")
    # absolute paths: Ray Train workers run in their run's directory, not the driver's
    found = find_frames(Path(frames_dir).resolve())
    if not found.frames:
        raise FileNotFoundError(f"{frames_dir}: no frames to fit the couplings on")
    check_stage_resources(c.resources, "fit-clean")
    out = claim_out(out, FIT_PRODUCTS, "fit-clean", overwrite)
    train, val = split_blocks(make_blocks(found.frames, c.frames_per_block), c, frames_dir)
    frames = [(f.path, f.start, f.duration) for f in found.frames]
    state = fit_on_ray_train(
        cfg, frames, witnesses, [[f.path for f in b] for b in train],
        [[f.path for f in b] for b in val], out, crash_after_stage,
    )  # fmt: skip
    if len(state.errors) >= len(found.frames):
        first = "; ".join(f"{p}: {why}" for p, why in sorted(state.errors.items())[:3])
        raise RuntimeError(
            f"fit-clean: none of the {len(found.frames)} frames could be used ({first})"
        )
    rows, counts, delays, priors = state.rows, state.counts, state.delays, state.priors
    meta = {
        "frames": len(found.frames),
        "train_blocks": len(train),
        "validation_blocks": len(val),
        "training_triggers": counts,
        "coupling_delay_ms": delays,
        "arch_choice": state.choice,
        "fit_priors": priors,
        "span": [found.frames[0].start, found.frames[-1].end],
    }
    model = subtraction_model(cfg, witnesses, state.firs, meta, state.arches, priors)
    model.save(out / "model.pt")
    result = FitCleanResult(
        witnesses=witnesses,
        frames_in=len(found.frames),
        frames_failed=[{"file": p, "reason": why} for p, why in sorted(state.errors.items())],
        frames_rejected=[{"file": e.path, "reason": e.reason} for e in found.failures],
        training_triggers=counts,
        validation=validation_metrics(rows, witnesses),
        coupling_delay_ms=delays,
        group_delay_ms={w: round(1e3 * model.group_delay(w), 3) for w in witnesses},
        arch_witnesses=state.arches,
        arch_choice=state.choice,
        fit_priors=priors,
        resumed_after_stage=state.resumed_after,
        wall_seconds=round(time.perf_counter() - t0, 2),
        model=str(out / "model.pt"),
    )
    _write_csv(rows, out / "validation.csv")
    plot_couplings(model, state.examples, out / "couplings.png", out / "tensorboard")
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
