"""Command-line subcommands of witness-driven subtraction: ``fit-clean`` and ``clean``."""

from __future__ import annotations

import argparse
from pathlib import Path

from glitchflow.cli_common import config_on_ray


def cmd_fit_clean(args: argparse.Namespace) -> int:
    from glitchflow.pipelines.clean_fit import run_fit_clean

    cfg = config_on_ray(args)
    s = run_fit_clean(
        cfg, args.frames, args.channels, args.out, args.tracking_uri, args.alias, args.overwrite
    )
    print(
        f"fit-clean: {s.frames_in} frames, {len(s.frames_failed)} failed; training "
        f"triggers {s.training_triggers}; group delay 40-250 Hz (ms) {s.group_delay_ms}; "
        f"{s.wall_seconds:.0f} s on Ray Train"
        + (f" (resumed after stage {s.resumed_after_stage})" if s.resumed_after_stage else "")
    )
    for w, v in s.validation.items():
        print(
            f"  held out {w}: {v['subtracted']}/{v['triggers']} triggers subtracted, "
            f"median fit SNR {v['median_fit_snr']}"
        )
    reg = s.registered or {}
    print(f"model: {s.model}" + (f" registered as {reg['uri']} v{reg['version']}" if reg else ""))
    return 0


def cmd_clean(args: argparse.Namespace) -> int:
    from glitchflow.pipelines.clean import run_clean
    from glitchflow.tracking.model_store import resolve_subtraction

    resolve_subtraction(args.model, args.tracking_uri)  # fails fast, before Ray starts
    cfg = config_on_ray(args, check_model=False)
    s = run_clean(cfg, args.frames, args.model, args.out, args.tracking_uri, args.overwrite)
    print(
        f"clean: {s.frames_written}/{s.frames_in} frames written, "
        f"{len(s.frames_failed)} failed, {s.glitches_subtracted} glitches subtracted, "
        f"{s.real_time_factor}x real time"
    )
    for failure in s.frames_failed:
        print(f"  failed: {failure['file']}: {failure['reason']}")
    print(f"outputs: {Path(args.out)} (frames/, glitches.csv, summary.json)")
    return 0 if s.frames_written else 1


def add_clean_commands(sub, ray_stage, add_model_args, add_overwrite_arg) -> None:
    """Register ``fit-clean`` and ``clean`` with the helpers of :mod:`glitchflow.cli`."""
    p = ray_stage(
        sub,
        "fit-clean",
        cmd_fit_clean,
        "frames",
        "fit witness-to-strain couplings for glitch subtraction (Ray tasks, MLflow registry)",
        "Whiten FRAMES with the one Conditioner, find the witness channels' triggers, fit each "
        "witness's coupling FIR to whitened strain by least squares over GPS blocks (held-out "
        "blocks scored), and write model.pt, summary.json, validation.csv and couplings.png "
        "under OUT; the checkpoint is registered as clean.model_name under --alias.",
    )
    p.add_argument("--channels", default=None, help="witnesses: channels.json of `glitchflow scan`")
    p.add_argument("--tracking-uri", default=None, help="MLflow URI (default: sqlite under OUT)")
    p.add_argument("--alias", default="candidate", help="registry alias to set")
    add_overwrite_arg(p)
    p = ray_stage(
        sub,
        "clean",
        cmd_clean,
        "frames",
        "subtract witnessed glitches from strain: cleaned GWF frames (Ray Data)",
        "For every witness trigger in FRAMES, predict the strain glitch it couples with MODEL "
        "(from `glitchflow fit-clean`), fit it to strain and subtract it; writes cleaned "
        "frames (strain under its own name plus the subtracted signal), glitches.csv and "
        "summary.json under OUT.",
    )
    add_model_args(p)
    add_overwrite_arg(p)
