"""Distributed channel scan: Ray tasks over (block of frames) x (group of channels).

Outputs in OUT: ``selected_channels.json`` (ordered, with scores),
``channels.csv`` (every channel), ``hveto.json`` (baseline veto rounds and
segments), ``ranking.png`` and ``report.txt``.
"""

from __future__ import annotations

import csv
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from glitchflow.config import Config, config_hash, validate_config
from glitchflow.evaluate.hveto import run_hveto
from glitchflow.evaluate.selection import scan_block, score_channels, seed_rule
from glitchflow.io.atomic import atomic_path, write_json_atomic
from glitchflow.io.channels import resolve_channels
from glitchflow.io.frames import FrameFile, find_frames, make_blocks
from glitchflow.pipelines.runtime import check_resources, check_shared_storage
from glitchflow.pipelines.staging import claim_out

log = logging.getLogger(__name__)

CSV_FIELDS = [
    "channel",
    "selected",
    "significance",
    "raw_significance",
    "best_snr2_threshold",
    "best_window",
    "trials",
    "time_slide_fap",
    "coincidences",
    "expected",
    "n_strain",
    "n_aux",
    "use_percentage",
    "ratio",
    "iou",
    "n_windows_with_strain_peaks",
    "reason",
    "bad_data",
]


def _task(config: dict, block: list, frames: list, channels: list[str], with_strain: bool):
    import torch

    torch.set_num_threads(1)
    cfg = validate_config(config)
    as_files = [FrameFile(s, d, p) for p, s, d in frames]
    by_path = {f.path: f for f in as_files}
    return scan_block(cfg, [by_path[p] for p in block], as_files, channels, with_strain)


def collect_triggers(cfg: Config, frames: list[FrameFile], channels: list[str]) -> list[dict]:
    """Ray tasks over (block of frames) x (group of channels): :func:`scan_block` results
    (strain triggers come from the first group of each block)."""
    import ray

    scan = cfg.scan
    blocks = make_blocks(frames, scan.frames_per_block)
    groups = [
        channels[i : i + scan.channels_per_task]
        for i in range(0, len(channels), scan.channels_per_task)
    ] or [[]]
    meta = [(f.path, f.start, f.duration) for f in frames]
    remote = ray.remote(num_cpus=scan.cpus_per_task, max_retries=2)(_task)
    config = ray.put(cfg.model_dump(mode="json"))
    meta_ref = ray.put(meta)
    pending = [
        remote.remote(config, [f.path for f in b], meta_ref, g, k == 0)
        for b in blocks
        for k, g in enumerate(groups)
    ]
    results = []
    with tqdm(total=len(pending), desc="scan tasks", unit="task") as bar:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            results.extend(ray.get(done))
            bar.update(len(done))
    return results


#: what a scan writes under OUT
SCAN_PRODUCTS = [
    "selected_channels.json",
    "channels.csv",
    "hveto.json",
    "ranking.png",
    "report.txt",
]


@dataclass(frozen=True)
class ScanResult:
    """What ``glitchflow scan`` found (also in OUT/selected_channels.json).

    ``frames_failed``: each unreadable frame and why; ``livetime_s``: analysed time (s);
    ``selected``: the witness channels chosen by ``scan.selection``; ``seed_rule_selected``:
    what the seed's ratio/IoU rule would choose; ``hveto_rounds``: rounds of the
    hveto-style baseline; ``wall_seconds``: s."""

    config_hash: str
    frames_in: int
    frames_failed: list[dict]
    livetime_s: float
    strain_triggers: int
    channels_scanned: int
    selected: list[str]
    seed_rule_selected: list[str]
    hveto_rounds: int
    wall_seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def run_scan(
    cfg: Config, frames_dir: str | Path, out: str | Path, overwrite: bool = False
) -> ScanResult:
    """Scan every auxiliary channel against strain; write the outputs; return the result.
    A previous scan's outputs in ``out`` are refused unless ``overwrite`` replaces them."""
    t0 = time.perf_counter()
    out = claim_out(out, SCAN_PRODUCTS, "scan", overwrite)
    scan = cfg.scan
    found = find_frames(frames_dir)
    frames = found.frames
    channels = resolve_channels(cfg, frames, None)[1:]
    if scan.channels is not None:
        channels = [c for c in channels if c in scan.channels]
    check_resources(scan.cpus_per_task, 0, "scan")
    check_shared_storage(frames_dir, out)
    results = collect_triggers(cfg, frames, channels)
    rows, ctx = score_channels(cfg, results, channels)
    rounds = run_hveto(
        ctx["strain"],
        ctx["aux"],
        ctx["live"],
        scan.hveto.snr2_thresholds,
        scan.hveto.windows,
        scan.hveto.min_significance,
        scan.hveto.max_rounds,
        set(scan.unsafe_channels),
    )
    failed_frames = {p: reason for r in results for p, reason in r["errors"].items()}
    failed_frames |= {e.path: e.reason for e in found.failures}
    result = ScanResult(
        config_hash=config_hash(cfg),
        frames_in=len(frames) + len(found.failures),
        frames_failed=[{"file": p, "reason": r} for p, r in sorted(failed_frames.items())],
        livetime_s=ctx["livetime"],
        strain_triggers=len(ctx["strain"]),
        channels_scanned=len(channels),
        selected=[r["channel"] for r in rows if r["selected"]],
        seed_rule_selected=seed_rule(rows, scan.seed_ratio, scan.seed_iou, scan.unsafe_channels),
        hveto_rounds=len(rounds),
        wall_seconds=round(time.perf_counter() - t0, 2),
    )
    write_outputs(out, cfg, rows, rounds, ctx, result.to_dict())
    return result


def write_outputs(
    out: Path, cfg: Config, rows: list[dict], rounds, ctx: dict, summary: dict
) -> None:
    """selected_channels.json, channels.csv, hveto.json, ranking.png and report.txt."""
    selected = [
        {
            k: r[k]
            for k in (
                "channel",
                "significance",
                "raw_significance",
                "best_snr2_threshold",
                "best_window",
                "time_slide_fap",
                "ratio",
                "iou",
                "coincidences",
                "use_percentage",
            )
        }
        | {"name": r["channel"]}
        for r in rows
        if r["selected"]
    ]
    write_json_atomic(
        out / "selected_channels.json",
        {
            "channels": selected,
            "rule": cfg.scan.selection,
            "strain_channel": cfg.signal.strain_channel,
            "summary": summary,
        },
        default=float,
    )
    with atomic_path(out / "channels.csv") as tmp, tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    live = ctx["live"]
    write_json_atomic(
        out / "hveto.json",
        {
            "rounds": [r.to_dict() for r in rounds],
            "live_segments": live.tolist(),
            "strain_triggers": len(ctx["strain"]),
            "snr2_threshold": cfg.scan.snr2_threshold,
        },
    )
    plot_ranking(rows, out / "ranking.png", cfg)
    (out / "report.txt").write_text(report_text(cfg, rows, rounds, summary))


def report_text(cfg: Config, rows: list[dict], rounds, summary: dict) -> str:
    """``report.txt``: the selection, every channel's scores (best threshold and window)
    and the hveto rounds, as a person reads them."""
    lines = [
        f"glitchflow scan: {summary['channels_scanned']} channels, "
        f"{summary['livetime_s']:.0f} s live, {summary['strain_triggers']} strain triggers "
        f"(SNR^2 > {cfg.scan.snr2_threshold})",
        f"rule: {cfg.scan.selection}; selected ({len(summary['selected'])}): "
        + ", ".join(summary["selected"]),
        f"seed rule (ratio > {cfg.scan.seed_ratio}, IoU > {cfg.scan.seed_iou}) would select: "
        + ", ".join(summary["seed_rule_selected"]),
        "",
        "significance: best over aux SNR^2 thresholds and windows, corrected for "
        f"{rows[0]['trials'] if rows else 0} trials",
        f"{'channel':<28} {'signif':>8} {'SNR^2>=':>7} {'win s':>6} {'FAP':>7} {'coinc':>6} "
        f"{'use %':>6} {'ratio':>6} {'IoU':>6}  sel",
    ]
    for r in rows:
        lines.append(
            f"{r['channel']:<28} {r['significance']:>8.1f} {r['best_snr2_threshold']:>7g} "
            f"{r['best_window']:>6g} {r['time_slide_fap']:>7.3f} "
            f"{r['coincidences']:>6} {r['use_percentage']:>6.1f} {r['ratio']:>6.2f} "
            f"{r['iou']:>6.2f}  {'yes' if r['selected'] else 'no'}"
        )
    lines += ["", f"hveto rounds: {len(rounds)}"]
    for r in rounds:
        lines.append(
            f"  {r.round}: {r.channel} SNR^2>={r.snr2_threshold:g} window {r.window:g} s "
            f"signif {r.significance:.1f} eff {100 * r.efficiency:.1f}% "
            f"dead {100 * r.deadtime:.2f}%"
        )
    if summary["frames_failed"]:
        lines += ["", "failed frames:"] + [
            f"  {f['file']}: {f['reason']}" for f in summary["frames_failed"]
        ]
    return "\n".join(lines) + "\n"


def plot_ranking(rows: list[dict], path: Path, cfg: Config) -> None:
    """Bar charts: significance (with the selection line) and the seed's ratio / IoU."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["channel"].split(":", 1)[-1] for r in rows]
    sig = np.array([min(r["significance"], 300.0) for r in rows])
    colours = ["tab:green" if r["selected"] else "tab:grey" for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.35 * len(rows) + 2), sharey=True)
    y = np.arange(len(rows))
    axes[0].barh(y, sig, color=colours)
    axes[0].axvline(cfg.scan.min_significance, color="k", ls="--", lw=1)
    axes[0].set_xscale("symlog")
    axes[0].set_xlabel("significance  -log10 P(>= n | Poisson)")
    axes[0].set_yticks(y, names)
    axes[0].invert_yaxis()
    axes[1].barh(y - 0.2, [r["ratio"] for r in rows], height=0.4, label="ratio |S∩A|/|S|")
    axes[1].barh(y + 0.2, [r["iou"] for r in rows], height=0.4, label="IoU")
    axes[1].axvline(cfg.scan.seed_ratio, color="tab:blue", ls=":", lw=1)
    axes[1].axvline(cfg.scan.seed_iou, color="tab:orange", ls=":", lw=1)
    axes[1].legend(loc="lower right")
    axes[1].set_xlabel("seed measures (windows with strain peaks)")
    fig.suptitle("glitchflow scan: auxiliary channels ranked (green = selected)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
