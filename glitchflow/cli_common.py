"""What every Ray subcommand does first: config, model check, Ray, where logs go."""

from __future__ import annotations

import argparse
from pathlib import Path

from glitchflow.config import Config, load_config


def log_file_of(args: argparse.Namespace) -> Path | None:
    """``OUT/logs/glitchflow-<command>.log`` for a command with an output directory."""
    out = getattr(args, "out", None) or getattr(args, "workdir", None)
    return Path(out) / "logs" / f"glitchflow-{args.command}.log" if out else None


def config_on_ray(args: argparse.Namespace, check_model: bool = True) -> Config:
    """The stage's config, with Ray started (or joined at --address / $RAY_ADDRESS).  With
    ``check_model`` a ``--model`` (a U-Net checkpoint or registry URI) that cannot be
    loaded stops the command first; Ray's console logs are routed (``OUT/logs/``)."""
    from glitchflow.pipelines.runtime import init_ray, route_ray_logs

    cfg = load_config(args.config, args.overrides)
    if check_model and getattr(args, "model", None):
        from glitchflow.tracking.model_store import resolve_model

        resolve_model(args.model, getattr(args, "tracking_uri", None))
    init_ray(args.address)
    route_ray_logs(log_file_of(args))
    return cfg
