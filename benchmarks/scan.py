"""Scan throughput: channel-hours scanned per wall second, Ray on 1 and 2 CPUs vs serial.

Uses bench-config twin frames (cached under --workdir, shared with the
preprocessing benchmark).  The peer is the same computation, every
(block, channel group) in turn in one process without Ray.

    .venv/bin/python benchmarks/scan.py --json bench-out/scan.json
"""

from __future__ import annotations

import argparse
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
    from glitchflow.io.frames import find_frames
    from glitchflow.pipelines.preprocess import make_blocks, resolve_channels
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
        selected = run_scan(cfg, frames_dir, Path(args.out) / "scan")["selected"]
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
    add_child_args(parser, "frames-dir")
    args = parser.parse_args()
    if args.child:
        child(args)
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
    report = {
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
