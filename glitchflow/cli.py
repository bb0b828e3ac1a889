"""The ``glitchflow`` command: one subcommand per pipeline stage (the parser and
``main``; the stage commands are in :mod:`glitchflow.cli_stages`).

Every subcommand takes ``--config FILE`` and trailing ``key.sub=value``
overrides, sets up logging, and calls the same library code as the Ray job
entrypoints under ``jobs/``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from glitchflow.cli_clean import add_clean_commands
from glitchflow.cli_common import log_file_of
from glitchflow.cli_stages import (
    cmd_demo,
    cmd_evaluate,
    cmd_generate,
    cmd_infer,
    cmd_online,
    cmd_preprocess,
    cmd_retrain,
    cmd_scan,
    cmd_serve,
    cmd_synth,
    cmd_train,
    cmd_tune,
)
from glitchflow.config import ConfigError
from glitchflow.pipelines.runtime import VERBOSE_ENV

log = logging.getLogger("glitchflow")


def setup_logging(level: str = "INFO", log_file: Path | None = None) -> None:
    """Console logging at ``level``; with ``log_file`` every record (Ray's too, see
    :func:`~glitchflow.pipelines.runtime.route_ray_logs`) also goes there."""
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file))
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        handlers=handlers,
    )


def _add_config_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--config", type=Path, required=required, help="YAML config file")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key.sub=value",
        help="config overrides, e.g. seed=3 twin.duration=128",
    )


#: subcommands that refuse an OUT holding a previous run unless given --overwrite
OVERWRITE_COMMANDS = frozenset(
    {"scan", "preprocess", "train", "tune", "infer", "generate", "fit-clean", "clean"}
)


def cmd_run(args: argparse.Namespace) -> int:
    from glitchflow.workflow import run_pipeline

    overwrite = OVERWRITE_COMMANDS if args.overwrite else frozenset()
    return run_pipeline(
        args.file, main, args.pipeline, args.steps, args.overrides, args.address, overwrite
    )


INPUT_HELP = {
    "frames": "directory of GWF frames",
    "data": "output of `glitchflow preprocess`",
}


def _ray_stage(sub, name: str, func, source: str, summary: str, description: str):
    """A subcommand that runs on Ray: --config, an input, --out, --address, overrides."""
    p = sub.add_parser(name, help=summary, description=description)
    _add_config_args(p)
    p.add_argument(f"--{source}", type=Path, required=True, help=INPUT_HELP[source])
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--address", default=None, help="Ray address (default: $RAY_ADDRESS or local)")
    p.set_defaults(func=func)
    return p


def _add_overwrite_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a previous run's products in OUT (refused otherwise: they would mix)",
    )


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", required=True, help="models:/NAME@ALIAS, models:/NAME/VERSION or a .pt path"
    )
    p.add_argument(
        "--tracking-uri", default=None, help="MLflow URI (default: $MLFLOW_TRACKING_URI)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="glitchflow",
        description=(
            "Digital twin of a gravitational-wave detector's transient noise: "
            "synthetic frames, witness-channel selection, learned veto and denoising on Ray."
        ),
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="Ray's INFO logs and worker output (per-epoch reports, Ray Data plans) on the "
        "console too; without it they go to OUT/logs/ and the Ray session's log directory",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    _add_twin_commands(sub)
    _add_training_commands(sub)
    _add_inference_commands(sub)
    _add_service_commands(sub)
    return parser


def _add_twin_commands(sub) -> None:
    """Subcommands: synth and online: the twin's frames, and following live frames."""
    p = sub.add_parser(
        "synth",
        help="write detector-twin frames and the truth catalogue",
        description="Write the detector twin's GWF frames under OUT/frames/ and OUT/truth.csv.",
    )
    _add_config_args(p)
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--writers", type=int, default=1, help="processes encoding GWF frames (default 1)"
    )
    p.add_argument(
        "--realtime", action="store_true", help="write each frame when its data end (live twin)"
    )
    p.add_argument("--speed", type=float, default=1.0, help="--realtime pace x real time")
    p.add_argument("--frame-duration", type=int, default=None, help="seconds per frame file")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser(
        "online",
        help="follow a live frame directory: veto state frames within seconds",
        description="Watch FRAMES for new OBS-TAG-GPS-DUR.gwf files, decide every window with "
        "MODEL as soon as its data and edges have arrived, and publish OUT/frames/*.gwf "
        "(state channel: 0 not analysed, 1 analysed clean, 3 vetoed), OUT/segments.jsonl, "
        "OUT/vetoes.h5 and a status route. Resumes after its last published frame.",
    )
    _add_config_args(p)
    p.add_argument("--frames", type=Path, required=True, help="live frame directory")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    _add_model_args(p)
    p.add_argument("--address", default=None, help="Ray address (default: $RAY_ADDRESS or local)")
    p.add_argument(
        "--idle-exit", type=float, default=None, help="stop after this many s without a new frame"
    )
    p.add_argument("--start", type=float, default=None, help="first GPS second to publish")
    p.set_defaults(func=cmd_online)


def _add_training_commands(sub) -> None:
    """Subcommands: scan, preprocess, train, retrain, tune."""
    p = _ray_stage(
        sub,
        "scan",
        cmd_scan,
        "frames",
        "rank auxiliary channels by coincidence with strain; hveto baseline veto",
        "Q-transform strain and every auxiliary channel, find their peaks, score each channel "
        "(seed ratio/IoU, Poisson significance, time-slide FAP), select witnesses and run "
        "hveto rounds. Writes selected_channels.json, channels.csv, hveto.json, "
        "ranking.png and report.txt under OUT.",
    )
    _add_overwrite_arg(p)
    p = _ray_stage(
        sub,
        "preprocess",
        cmd_preprocess,
        "frames",
        "condition frames into a Parquet spectrogram dataset (Ray Data)",
        "Resample, whiten and Q-transform every channel of the frames in FRAMES, cut "
        "windows and write OUT/shards/*.parquet and OUT/manifest.json.",
    )
    p.add_argument("--channels", default=None, help="selected_channels.json from `scan`")
    _add_overwrite_arg(p)
    p = _ray_stage(
        sub,
        "train",
        cmd_train,
        "data",
        "train the U-Net on a spectrogram dataset (Ray Train, MLflow, TensorBoard)",
        "Split DATA by GPS blocks, crop and normalise, train with Ray Train (DDP over "
        "train.workers), score the best checkpoint on the test split, register it in MLflow.",
    )
    _add_overwrite_arg(p)

    _ray_stage(
        sub,
        "retrain",
        cmd_retrain,
        "frames",
        "re-train on the newest frames and promote the model only when it is better",
        "Take the newest retrain.buffer_hours of FRAMES, hold out the newest "
        "retrain.holdout_seconds, re-run scan, preprocess and train, score the candidate "
        "against the production alias on the held-out slice and move the alias only when the "
        "candidate is better; the decision is recorded in MLflow.",
    )
    p = _ray_stage(
        sub,
        "tune",
        cmd_tune,
        "data",
        "architecture search with Ray Tune (ASHA), tracked in MLflow",
        "Sample tune.space (architectures and training settings), train every trial with the "
        "training code of `glitchflow train`, stop weak trials early with ASHA, register the "
        "best model; writes trials.csv, search.png and best_config.yaml under OUT.",
    )
    p.add_argument("--resume", action="store_true", help="continue an interrupted search in OUT")
    _add_overwrite_arg(p)


def _add_inference_commands(sub) -> None:
    """Subcommands: infer, generate, fit-clean, clean."""
    for name, func, source, summary, description in (
        (
            "infer",
            cmd_infer,
            "frames",
            "veto segments, cleaned spectrograms and gated strain for new frames (Ray Data)",
            "Condition FRAMES with the model's own conditioner, generate the strain "
            "spectrogram of every window from the auxiliary channels, decide veto and "
            "cleaning, and write windows.csv, vetoes.csv/.h5, gated GWF frames, spectrogram "
            "shards, TensorBoard images and an MLflow run under OUT.",
        ),
        (
            "generate",
            cmd_generate,
            "data",
            "synthetic strain spectrograms from a spectrogram dataset",
            "Run the model over every window of DATA (from `glitchflow preprocess`) and write "
            "the generated strain spectrograms as Parquet with sample images.",
        ),
    ):
        p = _ray_stage(sub, name, func, source, summary, description)
        _add_model_args(p)
        if name == "infer":
            p.add_argument(
                "--hveto", default=None, help="hveto.json of `glitchflow scan`: baseline vetoes"
            )
        _add_overwrite_arg(p)

    add_clean_commands(sub, _ray_stage, _add_model_args, _add_overwrite_arg)


def _add_service_commands(sub) -> None:
    """Subcommands: serve, evaluate, run, demo."""
    p = sub.add_parser(
        "serve",
        help="veto/denoise HTTP endpoint on Ray Serve",
        description="Serve POST /v1/veto and /v1/denoise for MODEL (binds 127.0.0.1 unless "
        "--host says otherwise; bearer token from $GLITCHFLOW_SERVE_TOKEN when set).",
    )
    _add_config_args(p, required=False)
    _add_model_args(p)
    p.add_argument("--host", default=None, help="bind address (default: serve.host, 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default: serve.port, 8000)")
    p.add_argument(
        "--insecure", action="store_true", help="allow binding off loopback without a token"
    )
    p.add_argument(
        "--clean-model",
        default=None,
        help="subtraction model (fit-clean): /v1/denoise also returns the strain cleaned of "
        "witnessed glitches",
    )
    p.add_argument("--address", default=None, help="Ray address (default: $RAY_ADDRESS or local)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "evaluate",
        help="scorecard of an inference run against a truth catalogue",
        description="Veto efficiency/deadtime, ROC against the hveto baseline, the seed's "
        "accuracy curves and denoising figures; writes report.json, report.md and plots.",
    )
    _add_config_args(p, required=False)
    p.add_argument("--truth", type=Path, required=True, help="truth.csv of the twin")
    p.add_argument("--infer", type=Path, required=True, help="output of `glitchflow infer`")
    p.add_argument(
        "--clean",
        type=Path,
        default=None,
        help="output of `glitchflow clean`: score the subtraction against the truth frames",
    )
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "run",
        help="run a YAML pipeline of stages (choose the pipeline or the steps)",
        description="Run the steps of a pipeline file in order, each one a glitchflow "
        "subcommand; --steps a,b,c picks steps and their order.",
    )
    p.add_argument("file", type=Path, help="pipeline YAML (see configs/pipeline.yaml)")
    p.add_argument("--pipeline", default=None, help="pipeline name (default: the file's)")
    p.add_argument("--steps", default=None, help="comma-separated steps, in order")
    p.add_argument("--address", default=None, help="Ray address for the Ray stages")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="run the steps again over their previous outputs (--overwrite for each step "
        "that takes it)",
    )
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="for every step")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "demo",
        help="run the whole pipeline locally on the twin",
        description="Run every stage on a small synthetic data set and print a summary.",
    )
    _add_config_args(p, required=False)
    p.add_argument("--workdir", type=Path, default=Path("demo-run"), help="output directory")
    p.add_argument("--skip-tune", action="store_true", help="leave out the small Tune search")
    p.set_defaults(func=cmd_demo)


#: errors that name a path, model or setting the user gave: printed as one line
USER_ERRORS = (FileNotFoundError, FileExistsError, LookupError, PermissionError)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verbose:
        os.environ[VERBOSE_ENV] = "1"  # read where Ray starts, also in `run` steps and jobs
    setup_logging(args.log_level, log_file_of(args))
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"glitchflow {args.command}: configuration error\n{exc}", file=sys.stderr)
        return 2
    except USER_ERRORS as exc:  # what the user can fix: one line, no traceback
        print(f"glitchflow {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
