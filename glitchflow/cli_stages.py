"""What each ``glitchflow`` subcommand does: run its stage and print its summary lines.

Each command loads its stage only when it runs (``glitchflow --help`` imports no
torch, Ray or MLflow) and reads the stage's typed result by attribute.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from glitchflow.cli_common import config_on_ray
from glitchflow.config import Config, load_config

REPO_CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def default_config(name: str) -> Path | None:
    """``configs/NAME.yaml`` of the source checkout, if present."""
    path = REPO_CONFIGS / f"{name}.yaml"
    return path if path.is_file() else None


def _config(args: argparse.Namespace) -> Config:
    """The command's config file with its overrides (:func:`command_overrides`)."""
    return load_config(args.config, command_overrides(args))


def command_overrides(args: argparse.Namespace) -> list[str]:
    """The config overrides a command runs with: its trailing ``key=value`` arguments
    and the ones its own flags stand for (``synth --frame-duration``)."""
    overrides = list(getattr(args, "overrides", []))
    if getattr(args, "frame_duration", None) is not None:
        overrides.append(f"twin.frame_duration={args.frame_duration}")
    return overrides


def _print_accounting(stage: str, counts, extra: str) -> None:
    """Frames and windows in = written + failed/skipped, then each failed frame
    (``counts``: a stage's result with the accounting fields, e.g. a Manifest)."""
    print(
        f"{stage}: {counts.frames_written}/{counts.frames_in} frames, "
        f"{counts.windows_written}/{counts.windows_expected} windows "
        f"({len(counts.windows_skipped)} skipped), "
        f"{len(counts.frames_failed)} failed frames, {extra}"
    )
    for failure in counts.frames_failed:
        print(f"  failed: {failure['file']}: {failure['reason']}")


def cmd_synth(args: argparse.Namespace) -> int:
    from glitchflow.synth.live import stream
    from glitchflow.synth.twin import generate

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
    _print_accounting("preprocess", manifest, f"{manifest.wall_seconds:.1f} s")
    print(f"manifest: {Path(args.out) / 'manifest.json'}")
    return 0 if manifest.frames_written else 1


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
        s,
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
        f"online: {s.frames_in} frames in = {s.frames_analysed} analysed + "
        f"{s.frames_failed} failed + {s.frames_skipped} skipped + "
        f"{s.frames_pending} pending; latency p50 {s.latency_p50_s} s, "
        f"p99 {s.latency_p99_s} s; model version {s.model_version}"
    )
    for failure in s.failed:
        print(f"  failed: {failure['file']}: {failure['reason']}")
    for skipped in s.skipped:
        print(f"  skipped: {skipped['file']}: {skipped['reason']}")
    print(f"outputs: {s.out} (frames/, segments.jsonl, vetoes.h5, status.json)")
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


def _stop_on_sigterm(signum, frame):
    raise KeyboardInterrupt


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
    signal.signal(signal.SIGTERM, _stop_on_sigterm)  # `kill` shuts Serve down as Ctrl-C does
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
    print(retrain_summary(run_retrain(cfg, args.frames, args.out)))
    return 0


def retrain_summary(s) -> str:
    """The console line of a :class:`~glitchflow.pipelines.retrain.RetrainResult`."""
    scores = s.scores
    line = (
        f"retrain: {s.training_frames} training frames, {s.holdout_frames} held out; "
        f"candidate version {s.candidate_version} {s.metric} "
        f"{scores['candidate'][s.metric]:.4f}"
    )
    if "production" in scores:
        line += f" vs production version {s.production_version} "
        line += f"{scores['production'][s.metric]:.4f}"
    else:
        line += " (no production model yet)"
    return line + f" -> {s.decision}: {s.reason} ({s.wall_seconds} s)"


def cmd_demo(args: argparse.Namespace) -> int:
    from glitchflow.demo import run_demo

    config = args.config or default_config("demo")
    return run_demo(config, args.workdir, args.overrides, skip_tune=args.skip_tune)


# ------------------------------------------------------------------------- parser
