"""The ``glitchflow`` command: one subcommand per pipeline stage.

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
from glitchflow.cli_common import config_on_ray, log_file_of
from glitchflow.config import Config, ConfigError, load_config
from glitchflow.pipelines.runtime import VERBOSE_ENV

log = logging.getLogger("glitchflow")

REPO_CONFIGS = Path(__file__).resolve().parent.parent / "configs"


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


def default_config(name: str) -> Path | None:
    """``configs/NAME.yaml`` of the source checkout, if present."""
    path = REPO_CONFIGS / f"{name}.yaml"
    return path if path.is_file() else None


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config, args.overrides)


def _add_config_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--config", type=Path, required=required, help="YAML config file")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key.sub=value",
        help="config overrides, e.g. seed=3 twin.duration=128",
    )


def _print_accounting(stage: str, counts: dict, extra: str) -> None:
    """Frames and windows in = written + failed/skipped, then each failed frame."""
    print(
        f"{stage}: {counts['frames_written']}/{counts['frames_in']} frames, "
        f"{counts['windows_written']}/{counts['windows_expected']} windows "
        f"({len(counts['windows_skipped'])} skipped), "
        f"{len(counts['frames_failed'])} failed frames, {extra}"
    )
    for failure in counts["frames_failed"]:
        print(f"  failed: {failure['file']}: {failure['reason']}")


# ------------------------------------------------------------------------- commands
def cmd_synth(args: argparse.Namespace) -> int:
    from glitchflow.synth.live import stream
    from glitchflow.synth.twin import generate

    if args.frame_duration is not None:
        args.overrides = [*args.overrides, f"twin.frame_duration={args.frame_duration}"]
    cfg = _config(args)
    if args.realtime:
        result = stream(cfg, args.out, speed=args.speed, progress=not args.quiet)
    else:
        result = generate(cfg, args.out, progress=not args.quiet, writers=args.writers)
    print(f"synth: {result.summary()}")
    print(f"frames: {Path(args.out) / 'frames'}")
    return 0


def cmd_preprocess(args: argparse.Namespace) -> int:
    from glitchflow.pipelines.preprocess import run_preprocess

    cfg = config_on_ray(args)
    manifest = run_preprocess(cfg, args.frames, args.out, args.channels, args.overwrite)
    _print_accounting("preprocess", manifest, f"{manifest['wall_seconds']:.1f} s")
    print(f"manifest: {Path(args.out) / 'manifest.json'}")
    return 0 if manifest["frames_written"] else 1


def cmd_scan(args: argparse.Namespace) -> int:
    from glitchflow.pipelines.scan import run_scan

    cfg = config_on_ray(args)
    summary = run_scan(cfg, args.frames, args.out, args.overwrite)
    print((Path(args.out) / "report.txt").read_text())
    print(f"selected channels: {Path(args.out) / 'selected_channels.json'}")
    return 0 if summary.channels_scanned else 1


def cmd_train(args: argparse.Namespace) -> int:
    from glitchflow.pipelines.train import run_training

    cfg = config_on_ray(args)
    s = run_training(cfg, args.data, args.out, overwrite=args.overwrite)
    test = s.test
    print(
        f"train: {s.epochs_run} epochs, best epoch {s.best_epoch}, "
        f"{s.parameters / 1e6:.2f} M parameters, {s.wall_seconds} s\n"
        f"test ({test['samples']} crops): loss {test['loss']:.4f}, veto accuracy "
        f"{test['veto_accuracy']:.3f}, denoise accuracy {test['denoise_accuracy']:.3f} "
        f"at SNR^2 {cfg.train.snr2_threshold:g}\n"
        f"registered: {s.registered.uri} (version {s.registered.version})\n"
        f"mlflow ui --backend-store-uri {s.tracking_uri}\n"
        f"tensorboard --logdir {s.tensorboard}"
    )
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from glitchflow.pipelines.tune import run_tune

    cfg = config_on_ray(args)
    s = run_tune(cfg, args.data, args.out, resume=args.resume, overwrite=args.overwrite)
    best = s.best
    metric = f"best_{s.metric}"
    print(
        f"tune: {s.trials} trials ({s.completed} completed, {s.stopped_early} stopped "
        f"early by ASHA, {s.failed} failed) in {s.wall_seconds} s"
    )
    print(f"best trial {best['trial_id']}: {metric} {best[metric]:.4f} with {best['params']}")
    if s.default:
        print(f"default architecture: {metric} {s.default[metric]:.4f}")
    if s.registered:
        print(f"registered: {s.registered.uri} (version {s.registered.version})")
    out = Path(args.out)
    print(f"best config: {out / 'best_config.yaml'}; table: {out / 'trials.csv'}")
    return 0


def cmd_infer(args: argparse.Namespace) -> int:
    from glitchflow.pipelines.infer import run_inference

    cfg = config_on_ray(args)
    s = run_inference(
        cfg, args.frames, args.model, args.out, args.tracking_uri, args.hveto, args.overwrite
    )
    f = s.figures
    _print_accounting(
        "infer",
        s.to_dict(),
        f"{f['veto_segments']} veto segments, deadtime {100 * f['deadtime']:.2f}%, "
        f"{f['cleaned_windows']}/{f['windows']} windows cleaned, "
        f"{f['data_seconds_per_wall_second']:.0f} s of data per wall s",
    )
    print(f"outputs: {Path(args.out)} (windows.csv, vetoes.csv, vetoes.h5, gated/, summary.json)")
    return 0 if s.windows_written else 1


def cmd_online(args: argparse.Namespace) -> int:
    from glitchflow.pipelines.online import run_online

    cfg = config_on_ray(args)
    s = run_online(
        cfg, args.frames, args.model, args.out, args.tracking_uri, args.idle_exit, args.start
    )
    print(
        f"online: {s['frames_in']} frames in = {s['frames_analysed']} analysed + "
        f"{s['frames_failed']} failed + {s['frames_skipped']} skipped + "
        f"{s['frames_pending']} pending; latency p50 {s['latency_p50_s']} s, "
        f"p99 {s['latency_p99_s']} s; model version {s['model_version']}"
    )
    for failure in s["failed"]:
        print(f"  failed: {failure['file']}: {failure['reason']}")
    for skipped in s["skipped"]:
        print(f"  skipped: {skipped['file']}: {skipped['reason']}")
    print(f"outputs: {s['out']} (frames/, segments.jsonl, vetoes.h5, status.json)")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from glitchflow.evaluate.report import run_evaluate

    run_evaluate(_config(args), args.truth, args.infer, args.out, args.clean)
    print((Path(args.out) / "report.md").read_text())
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from glitchflow.pipelines.generate import run_generate

    cfg = config_on_ray(args)
    s = run_generate(cfg, args.data, args.model, args.out, args.tracking_uri, args.overwrite)
    print(
        f"generate: {s.windows_generated}/{s.windows_in} windows "
        f"({s.windows_skipped_bad_data} with bad data skipped) in {s.wall_seconds} s; "
        f"{Path(args.out) / 'generated'}, {Path(args.out) / 'samples.png'}"
    )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import time

    from glitchflow.serve.runner import start_endpoint

    overrides = list(args.overrides)
    if args.host:
        overrides.append(f"serve.host={args.host}")
    if args.port:
        overrides.append(f"serve.port={args.port}")
    if args.clean_model:
        from glitchflow.tracking.model_store import resolve_subtraction

        resolve_subtraction(args.clean_model, args.tracking_uri)  # fails fast, before Serve
        overrides.append(f"serve.clean_model={args.clean_model}")
    from glitchflow.serve.runner import check_exposure

    try:
        check_exposure(load_config(args.config, overrides), insecure=args.insecure)
    except PermissionError as exc:
        print(f"glitchflow serve: {exc}", file=sys.stderr)
        return 2
    cfg = config_on_ray(argparse.Namespace(**vars(args) | {"overrides": overrides}))
    url = start_endpoint(
        cfg, args.model, args.tracking_uri, args.config, overrides, insecure=args.insecure
    )
    print(f"serving {args.model} at {url} (OpenAPI docs: {url}/docs); Ctrl-C stops")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        from ray import serve

        serve.shutdown()
    return 0


def cmd_retrain(args: argparse.Namespace) -> int:
    from glitchflow.pipelines.retrain import run_retrain

    cfg = config_on_ray(args)
    s = run_retrain(cfg, args.frames, args.out)
    scores = s.scores
    print(
        f"retrain: {s.training_frames} training frames, {s.holdout_frames} held out; "
        f"candidate version {s.candidate_version} {s.metric} "
        f"{scores['candidate'][s.metric]:.4f}"
        + (
            f" vs production version {s.production_version} {scores['production'][s.metric]:.4f}"
            if "production" in scores
            else " (no production model yet)"
        )
        + f" -> {s.decision} ({s.wall_seconds} s)"
    )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from glitchflow.workflow import run_pipeline

    return run_pipeline(args.file, main, args.pipeline, args.steps, args.overrides, args.address)


def cmd_demo(args: argparse.Namespace) -> int:
    from glitchflow.demo import run_demo

    config = args.config or default_config("demo")
    return run_demo(config, args.workdir, args.overrides, skip_tune=args.skip_tune)


# ------------------------------------------------------------------------- parser
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
