"""Channel selection: witness recall and precision over twin seeds, and scan throughput.

Quality (``--quality``, default on): for each (config, seed, span) of
:data:`QUALITY_RUNS` (5 seeds at the demo's rates, 3 at the Virgo-like rate, none
of them the demo's own seed), a fresh twin is synthesised and scanned in a child
process; the selection is scored against the twin's true witnesses (channels
that witness glitches reaching strain).  Each run reports recall, precision, the
true witnesses' significance and the loudest other channel's.

Speed (``--speed``, default on): channel-hours scanned per wall second, Ray on 1
and 2 CPUs vs serial, on bench-config twin frames (cached under --workdir,
shared with the preprocessing benchmark).  The peer is the same computation,
every (block, channel group) in turn in one process without Ray.

    .venv/bin/python benchmarks/scan.py --json bench-out/scan.json [--no-speed]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import add_child_args, run_child, write_json  # noqa: E402


def child(args: argparse.Namespace) -> None:
    import ray
    import torch

    from glitchflow.config import load_config
    from glitchflow.evaluate.selection import scan_block, score_channels
    from glitchflow.io.channels import resolve_channels
    from glitchflow.io.frames import find_frames, make_blocks
    from glitchflow.pipelines.scan import run_scan

    frames_dir = Path(args.out) / "frames"
    frames_dir.mkdir(parents=True, exist_ok=True)
    for f in sorted(Path(args.frames_dir).glob("*.gwf"))[: args.n_frames]:
        (frames_dir / f.name).symlink_to(f)
    cfg = load_config(args.config)
    frames = find_frames(frames_dir).frames
    channels = resolve_channels(cfg, frames, None)[1:]
    t0 = time.perf_counter()
    if args.cpus == 0:  # serial peer in this process
        torch.set_num_threads(1)
        groups = [
            channels[i : i + cfg.scan.channels_per_task]
            for i in range(0, len(channels), cfg.scan.channels_per_task)
        ]
        results = [
            scan_block(cfg, b, frames, g, k == 0)
            for b in make_blocks(frames, cfg.scan.frames_per_block)
            for k, g in enumerate(groups)
        ]
        rows, _ = score_channels(cfg, results, channels)
        selected = [r["channel"] for r in rows if r["selected"]]
    else:
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        t0 = time.perf_counter()
        selected = run_scan(cfg, frames_dir, Path(args.out) / "scan", overwrite=True).selected
        ray.shutdown()
    wall = time.perf_counter() - t0
    hours = len(channels) * len(frames) * cfg.twin.frame_duration / 3600
    print(
        "RESULT "
        + json.dumps(
            {
                "cpus": args.cpus,
                "frames": len(frames),
                "channels": len(channels),
                "wall_s": round(wall, 2),
                "channel_hours_per_s": round(hours / wall, 4),
                "selected": selected,
            }
        )
    )


#: (config, seed, span in s): demo rates (about 20 witnessed glitches per family per
#: 1024 s) and the Virgo-like rate (about 14 per family per hour)
QUALITY_RUNS = [
    *(("demo.yaml", seed, 1024) for seed in (11, 23, 31, 47, 59)),
    *(("virgo_rate.yaml", seed, 3584) for seed in (101, 202, 303)),
]


def quality_child(args: argparse.Namespace) -> None:
    """Synthesise one twin and scan it with Ray on 2 CPUs; print the scores."""
    import ray

    from glitchflow.config import load_config
    from glitchflow.io.truth import read_truth, true_witness_channels
    from glitchflow.pipelines.scan import run_scan
    from glitchflow.synth.twin import generate

    config, seed, span = args.quality_run.split(":")
    cfg = load_config(ROOT / "configs" / config, [f"seed={seed}", f"twin.duration={span}"])
    twin = generate(cfg, Path(args.out) / "twin", writers=2)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    t0 = time.perf_counter()
    summary = run_scan(cfg, twin.frames[0].parent, Path(args.out) / "scan", overwrite=True)
    ray.shutdown()
    truth = true_witness_channels(read_truth(twin.truth_path))
    with (Path(args.out) / "scan" / "channels.csv").open() as fh:
        sig = {r["channel"]: float(r["significance"]) for r in csv.DictReader(fh)}
    selected = set(summary.selected)
    others = [s for c, s in sig.items() if c not in truth and c not in cfg.scan.unsafe_channels]
    print(
        "RESULT "
        + json.dumps(
            {
                "config": config,
                "seed": int(seed),
                "span_s": int(span),
                "witnesses": sorted(truth),
                "selected": sorted(selected),
                "recall": len(truth & selected) / len(truth) if truth else float("nan"),
                "precision": len(truth & selected) / len(selected) if selected else 0.0,
                "witness_significance": {c: round(sig.get(c, 0.0), 2) for c in sorted(truth)},
                "loudest_other_significance": round(max(others, default=0.0), 2),
                "scan_wall_s": round(time.perf_counter() - t0, 1),
            }
        )
    )


def quality(work: Path) -> dict:
    runs = []
    for config, seed, span in QUALITY_RUNS:
        out = work / f"quality-{Path(config).stem}-{seed}"
        runs.append(run_child(__file__, {"quality_run": f"{config}:{seed}:{span}", "out": out}))
        r = runs[-1]
        print(
            f"{config:>16} seed {seed:>4} {span:>5} s: recall {r['recall']:.2f} precision "
            f"{r['precision']:.2f}; witnesses {r['witness_significance']}, loudest other "
            f"{r['loudest_other_significance']}",
            flush=True,
        )
    return {
        "runs": runs,
        "min_recall": min(r["recall"] for r in runs),
        "min_precision": min(r["precision"] for r in runs),
        "target_met": all(r["recall"] == 1.0 and r["precision"] >= 0.9 for r in runs),
    }


def run(cfg: str, frames: Path, n: int, cpus: int, work: Path) -> dict:
    out = work / f"scan-{cpus}cpu"
    return run_child(
        __file__, {"config": cfg, "frames_dir": frames, "n_frames": n, "cpus": cpus, "out": out}
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "bench.yaml"))
    parser.add_argument("--frames", type=int, default=16, help="frames of 64 s to scan")
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench-out" / "preprocess")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--no-quality", action="store_true", help="skip the seed table")
    parser.add_argument("--no-speed", action="store_true", help="skip the throughput runs")
    parser.add_argument("--quality-run", default=None, help=argparse.SUPPRESS)
    add_child_args(parser, "frames-dir")
    args = parser.parse_args()
    if args.child:
        quality_child(args) if args.quality_run else child(args)
        return 0
    report = {}
    if not args.no_quality:
        report["quality"] = quality(args.workdir)
        q = report["quality"]
        print(
            f"witness selection over {len(q['runs'])} twins: min recall {q['min_recall']:.2f}, "
            f"min precision {q['min_precision']:.2f}, target met: {q['target_met']}"
        )
    if args.no_speed:
        write_json(report, args.json)
        return 0

    from glitchflow.config import load_config
    from glitchflow.synth.twin import generate

    twin_dir = args.workdir / "twin"
    if len(list((twin_dir / "frames").glob("*.gwf"))) < args.frames:
        generate(
            load_config(args.config, [f"twin.duration={args.frames * 64}"]), twin_dir, writers=2
        )
    frames = twin_dir / "frames"
    runs = [run(args.config, frames, args.frames, c, args.workdir) for c in (0, 1, 2)]
    serial, one, two = runs
    report |= {
        "runs": runs,
        "ray_2cpu_vs_1cpu": round(two["channel_hours_per_s"] / one["channel_hours_per_s"], 2),
        "ray_1cpu_vs_serial": round(one["channel_hours_per_s"] / serial["channel_hours_per_s"], 2),
        "same_selection": serial["selected"] == one["selected"] == two["selected"],
    }
    print(f"{'run':>10} {'frames':>7} {'channels':>9} {'wall s':>8} {'ch-h/s':>8}")
    for r in runs:
        name = "serial" if r["cpus"] == 0 else f"ray {r['cpus']} cpu"
        print(
            f"{name:>10} {r['frames']:>7} {r['channels']:>9} {r['wall_s']:>8} "
            f"{r['channel_hours_per_s']:>8}"
        )
    print(
        f"2 vs 1 CPU: {report['ray_2cpu_vs_1cpu']}x; Ray 1 CPU vs serial: "
        f"{report['ray_1cpu_vs_serial']}x; same selection: {report['same_selection']}"
    )
    write_json(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
