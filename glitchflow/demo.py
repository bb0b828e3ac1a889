"""``glitchflow demo``: the whole chain on a small twin, locally, with a printed summary.

Each stage appends a section to the summary; the demo stops at the first
stage that fails and says which.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from glitchflow.config import load_config

if TYPE_CHECKING:
    from glitchflow.pipelines.train import TrainResult

log = logging.getLogger(__name__)


#: the held-out span: another realisation, after a gap, that no stage before infer saw
HELD_OUT_SECONDS = 256
HELD_OUT_SEED_OFFSET = 1000


def held_out_overrides(cfg) -> list[str]:
    """Overrides for a twin span the model never saw (new seed, later GPS)."""
    tw = cfg.twin
    start = tw.gps_end + 2 * tw.frame_duration
    duration = max(tw.frame_duration, HELD_OUT_SECONDS // tw.frame_duration * tw.frame_duration)
    return [
        f"seed={cfg.seed + HELD_OUT_SEED_OFFSET}",
        f"twin.gps_start={start}",
        f"twin.duration={duration}",
    ]


def run_demo(
    config: str | Path | None, workdir: str | Path, overrides=(), skip_tune: bool = False
) -> int:
    """Run the demo stages into ``workdir``; returns a process exit code."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = load_config(config, overrides)
    t0 = time.perf_counter()
    lines = [f"glitchflow demo in {workdir.resolve()}"]

    from glitchflow.io.truth import read_truth
    from glitchflow.synth.twin import generate

    twin = generate(cfg, workdir / "twin", writers=2)
    truth = read_truth(twin.truth_path)
    counts = truth["family"].value_counts().to_dict()
    lines.append(f"[synth]  {twin.summary()}")
    lines.append("         glitches by family: " + ", ".join(f"{k}={v}" for k, v in counts.items()))

    from glitchflow.pipelines.runtime import init_ray, route_ray_logs

    init_ray()
    route_ray_logs(workdir / "logs" / "glitchflow-demo.log")  # Ray's INFO lines go there
    lines.append(f"         logs: {workdir / 'logs'} (glitchflow --verbose demo: on the console)")
    frames = twin.frames[0].parent
    lines += scan_and_preprocess(cfg, frames, truth, workdir)

    from glitchflow.pipelines.train import run_training

    trained = run_training(cfg, workdir / "dataset", workdir / "train", overwrite=True)
    lines += training_lines(cfg, trained)
    if not skip_tune:
        lines += small_search(config, overrides, workdir, trained)
    lines += held_out_scorecard(config, overrides, cfg, workdir, trained)
    lines += served_request(cfg, workdir, trained)
    lines.append(f"         MLflow:      mlflow ui --backend-store-uri {trained.tracking_uri}")
    lines.append(f"         TensorBoard: tensorboard --logdir {trained.tensorboard}")
    lines.append(f"done in {time.perf_counter() - t0:.1f} s")
    print("\n".join(lines))
    return 0


def scan_and_preprocess(cfg, frames: Path, truth, workdir: Path) -> list[str]:
    """Select the witnesses (scored against the twin's truth) and preprocess the twin
    with them; returns the summary lines."""
    from glitchflow.io.truth import true_witness_channels
    from glitchflow.pipelines.preprocess import run_preprocess
    from glitchflow.pipelines.scan import run_scan

    lines = []
    scan = run_scan(cfg, frames, workdir / "scan", overwrite=True)
    truth_set = true_witness_channels(truth)
    for rule, chosen in (("significance", scan.selected), ("seed", scan.seed_rule_selected)):
        hits = len(truth_set & set(chosen))
        lines.append(
            f"[scan]   {rule} rule selects {len(chosen)}: recall {hits}/{len(truth_set)}, "
            f"precision {hits}/{len(chosen) or 1} against the twin's true witnesses"
        )
    lines.append(
        f"         {', '.join(scan.selected)}; {scan.hveto_rounds} hveto rounds "
        f"({workdir / 'scan' / 'report.txt'})"
    )
    manifest = run_preprocess(
        cfg,
        frames,
        workdir / "dataset",
        str(workdir / "scan" / "selected_channels.json"),
        overwrite=True,  # the demo owns its workdir: a re-run replaces the last one
    )
    lines.append(
        f"[preprocess] {manifest.frames_written}/{manifest.frames_in} frames -> "
        f"{manifest.windows_written} windows of {manifest.window_seconds} s x "
        f"{len(manifest.channels)} channels in {manifest.wall_seconds:.1f} s "
        f"({workdir / 'dataset'})"
    )
    return lines


def training_lines(cfg, trained: TrainResult) -> list[str]:
    """The training run's summary lines: epochs, test-split figures, the calibrated veto
    and the registered model."""
    lines = []
    test = trained.test
    lines.append(
        f"[train]  {trained.epochs_run} epochs of {cfg.train.model.name} "
        f"({trained.parameters / 1e6:.2f} M parameters) in {trained.wall_seconds:.0f} s; "
        f"test split ({test['samples']} crops): veto accuracy {test['veto_accuracy']:.2f}, "
        f"denoise accuracy {test['denoise_accuracy']:.2f} at SNR^2 {cfg.train.snr2_threshold:g}"
    )
    veto = trained.veto
    if veto:
        lines.append(
            f"         veto calibrated on validation glitch-free time: generated SNR^2 >= "
            f"{veto['snr2']:.3g}, clusters >= {veto['min_area']} px, deadtime "
            f"{100 * veto['val_deadtime']:.2f}% (target {100 * veto['target_deadtime']:g}%), "
            f"{veto['val_efficiency']:.0%} of {veto['glitches']} validation glitches"
        )
    lines.append(f"         registered {trained.registered.uri}")
    return lines


def held_out_scorecard(config, overrides, cfg, workdir: Path, trained: TrainResult) -> list[str]:
    """Synthesise a held-out span, infer on it with the registered model and the hveto
    baseline, and score both against the truth; returns the summary lines."""
    from glitchflow.evaluate.report import run_evaluate
    from glitchflow.pipelines.infer import run_inference
    from glitchflow.synth.twin import generate

    held_cfg = load_config(config, [*overrides, *held_out_overrides(cfg)])
    held = generate(held_cfg, workdir / "held_out", writers=2)
    infer = run_inference(
        cfg,
        held.frames[0].parent,
        trained.registered.uri,
        workdir / "infer",
        tracking_uri=trained.tracking_uri,
        hveto=workdir / "scan" / "hveto.json",
        overwrite=True,
    )
    f = infer.figures
    cleaned = witness_subtraction(cfg, workdir, held.frames[0].parent, trained)
    report = run_evaluate(
        cfg, held.truth_path, workdir / "infer", workdir / "evaluate", workdir / "clean"
    )
    lr, d = report.learned, report.denoise
    lines = [
        f"[held-out] {held.summary()}",
        f"[infer]  {infer.windows_written}/{infer.windows_expected} windows, "
        f"{f['veto_segments']} veto segments, {f['data_seconds_per_wall_second']:.0f} s of data "
        f"per wall s ({workdir / 'infer'})",
        f"[evaluate] witnessed glitches (strain SNR >= {report.strain_snr_threshold:g}): "
        f"learned veto {100 * lr['witnessed_efficiency']:.0f}% "
        f"({lr['witnessed_vetoed']}/{lr['witnessed_glitches']}) at "
        f"{100 * lr['deadtime']:.2f}% deadtime (eff/dead {lr['efficiency_over_deadtime']:.0f}), "
        f"unwitnessed {100 * lr['unwitnessed_efficiency']:.0f}%, glitch time covered "
        f"{100 * lr['witnessed_coverage']:.0f}%",
    ]
    if report.baseline:
        b = report.baseline
        c = report.comparison
        lines.append(
            f"         hveto baseline {100 * b['witnessed_efficiency']:.0f}% at "
            f"{100 * b['deadtime']:.2f}% deadtime, glitch time covered "
            f"{100 * b['witnessed_coverage']:.0f}%; learned at that deadtime: "
            f"{100 * c['learned_efficiency_at_baseline_deadtime']:.0f}%"
        )
    families = [
        f"{name} {row['learned']['vetoed']}/{row['learned']['glitches']}"
        + (f" vs {row['baseline']['vetoed']}" if row.get("baseline") else "")
        for name, row in report.per_family.items()
    ]
    lines.append("         per family, learned vs hveto: " + ", ".join(families))
    lines.append(
        f"         U-Net spectrogram residual: {100 * d['cleaned_fraction']:.0f}% of witnessed "
        f"glitches cleaned "
        f"below SNR^2 {report.snr2_threshold:g}, median max-SNR^2 reduction "
        f"{100 * d['median_max_snr2_reduction']:.0f}%, glitch-free energy change "
        f"{100 * d['glitch_free_energy_change']:+.1f}% ({workdir / 'evaluate' / 'report.md'})"
    )
    return lines + cleaned + subtraction_lines(report.subtraction)


def witness_subtraction(cfg, workdir: Path, held_frames: Path, trained: TrainResult) -> list[str]:
    """Fit the witness couplings on the training twin (the scan's channels), clean the
    held-out frames with them; returns the summary lines."""
    from glitchflow.pipelines.clean import run_clean
    from glitchflow.pipelines.clean_fit import run_fit_clean

    fit = run_fit_clean(
        cfg,
        workdir / "twin" / "frames",
        str(workdir / "scan" / "selected_channels.json"),
        workdir / "fit-clean",
        trained.tracking_uri,
        overwrite=True,
    )
    clean = run_clean(cfg, held_frames, fit.model, workdir / "clean", overwrite=True)
    delays = ", ".join(
        f"{w} {ms:.2f} ms" for w, ms in fit.group_delay_ms.items() if w not in fit.arch_witnesses
    )
    arches = ", ".join(fit.arch_witnesses) or "none"
    return [
        f"[fit-clean] couplings of {len(fit.witnesses)} witnesses from "
        f"{sum(fit.training_triggers.values())} triggers in {fit.wall_seconds:.0f} s; group "
        f"delays (40-250 Hz) {delays}; scattered-light arches fitted in strain for {arches}",
        f"[clean]  {clean.frames_written}/{clean.frames_in} held-out frames, "
        f"{clean.glitches_subtracted} glitches subtracted, {clean.real_time_factor:.0f}x real "
        f"time ({workdir / 'clean' / 'frames'})",
    ]


def subtraction_lines(sub: dict | None) -> list[str]:
    """The subtraction scorecard against the truth frames: per family, the witnessed
    glitches left below residual SNR 5, the median SNR reduction, the PSD ratio."""
    if not sub:
        return []
    families = ", ".join(
        f"{name} {round(f['fraction_below_snr5'] * f['glitches'])}/{f['glitches']} "
        f"(median reduction {100 * f['median_reduction']:.0f}%)"
        for name, f in sub["families"].items()
        if f["glitches"]
    )
    deviation = sub["psd_ratio_max_deviation"]
    return [
        f"         subtraction: witnessed glitches left below residual SNR 5: {families}; "
        "glitch-free PSD cleaned/raw within "
        f"{'n/a' if deviation is None else format(deviation, '.3f')} of 1, no data gated"
    ]


#: the demo's search: small enough for minutes on 2 CPUs
DEMO_SEARCH = [
    "tune.num_samples=4",
    "tune.scheduler.max_t=6",
    "tune.scheduler.grace_period=2",
    "train.mlflow.alias=tune-best",
]


def small_search(config, overrides, workdir: Path, trained: TrainResult) -> list[str]:
    """A four-trial ASHA search on the demo dataset, in the training run's MLflow."""
    from glitchflow.pipelines.tune import run_tune

    uri = trained.tracking_uri
    cfg = load_config(config, [*overrides, *DEMO_SEARCH, f"train.mlflow.tracking_uri={uri}"])
    s = run_tune(cfg, workdir / "dataset", workdir / "tune", overwrite=True)
    metric = f"best_{s.metric}"
    best = s.best
    line = (
        f"[tune]   {s.trials} trials ({s.stopped_early} stopped early by ASHA) in "
        f"{s.wall_seconds:.0f} s; best {metric} {best[metric]:.4f}"
    )
    if s.default:
        line += f" vs {s.default[metric]:.4f} for the default architecture"
    params = ", ".join(f"{k.removeprefix('train.')}={v}" for k, v in best["params"].items())
    return [line, f"         best: {params} ({workdir / 'tune' / 'best_config.yaml'})"]


def served_request(cfg, workdir: Path, trained: TrainResult) -> list[str]:
    """Start the endpoint on loopback, ask for the loudest held-out window, shut down."""
    import pandas as pd

    from glitchflow.serve.client import get, post_window, window_from_frames
    from glitchflow.serve.runner import start_endpoint, stop_endpoint

    windows = pd.read_csv(workdir / "infer" / "windows.csv")
    loudest = windows.loc[windows["max_real_snr2"].idxmax()]
    t0 = time.perf_counter()
    subtraction = workdir / "fit-clean" / "model.pt"
    overrides = [f"serve.clean_model={subtraction}"] if subtraction.is_file() else []
    url = start_endpoint(cfg, trained.registered.uri, trained.tracking_uri, overrides=overrides)
    started = time.perf_counter() - t0
    try:
        info = get(url, "/v1/model")
        channels = window_from_frames(
            workdir / "held_out" / "frames", info, float(loudest["gps_start"])
        )
        t1 = time.perf_counter()
        answer = post_window(url, "/v1/denoise", info, float(loudest["gps_start"]), channels)
        latency = time.perf_counter() - t1
    finally:
        stop_endpoint()
    times = ", ".join(f"{c['gps_time']:.2f}" for c in answer["clusters"]) or "none"
    sub = answer.get("subtraction")
    subtracted = (
        f", {sub['subtracted']} witness trigger{'' if sub['subtracted'] == 1 else 's'} "
        f"subtracted -> max SNR^2 of cleaned strain {sub['max_cleaned_snr2']:.0f}"
        if sub
        else ""
    )
    return [
        f"[serve]  {url} up in {started:.0f} s; POST /v1/denoise for GPS "
        f"{answer['window_start']:.0f}-{answer['window_end']:.0f}: veto {answer['veto']} "
        f"(clusters at {times}), max SNR^2 real {answer['max_real_snr2']:.0f} -> U-Net "
        f"residual {answer['max_residual_snr2']:.0f}{subtracted}, {1000 * latency:.0f} ms; "
        f"same as infer: veto {bool(loudest['veto'])}"
    ]
