"""Preprocessing scaling: throughput with 1 vs 2 CPUs, and peak memory with 1x vs 4x frames.

Generates bench-config twin frames once (cached under --workdir), then runs the
Ray Data pipeline in fresh processes:

* throughput (channel-seconds of data per wall second) on S frames (default 32) with
  a Ray instance of 1 CPU and of 2 CPUs (target ratio >= 1.7). Each run's process
  tree (driver, Ray's GCS and raylet, every worker) is pinned to that many cores:
  otherwise a "1-CPU" run still has the machine's other cores for its driver, Ray
  Data's executor, the parquet writes and Ray's own processes, and the ratio
  measures the machine rather than the pipeline (``--no-pin`` measures that way);
* peak proportional memory (PSS) of the driver plus every Ray worker on N and 4N frames
  (default 8 and 32; target ratio <= 1.2: streaming, memory does not grow with the data).

    .venv/bin/python benchmarks/preprocess_scaling.py --json bench-out/preprocess_scaling.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import add_child_args, run_child, write_json  # noqa: E402


def child(args: argparse.Namespace) -> None:
    """One measured run inside its own process (own Ray instance)."""
    import psutil
    import ray

    from glitchflow.config import load_config
    from glitchflow.pipelines.preprocess import run_preprocess

    frames_dir = Path(args.frames)
    files = sorted(frames_dir.glob("*.gwf"))[: args.n_frames]
    sub = Path(args.out) / "frames"
    sub.mkdir(parents=True, exist_ok=True)
    for f in files:
        (sub / f.name).symlink_to(f)
    workers = args.cpus
    cfg = load_config(
        args.config,
        [
            f"preprocess.resources.workers={workers}",
            "preprocess.resources.cpus_per_worker=0.85",
            "preprocess.frames_per_block=2",
        ],
    )
    if args.pin:  # Ray's processes and workers inherit the driver's affinity
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.cpus])
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    peak = [0]
    stop = threading.Event()

    def sample():
        # proportional set size: shared pages (Ray's object store, libraries) are split
        # between the processes that map them instead of being counted once per process
        me = psutil.Process()
        while not stop.is_set():
            total = 0
            for p in psutil.process_iter(["cmdline"]):
                cmd = " ".join(p.info["cmdline"] or [])
                if p.pid == me.pid or "ray::" in cmd or "default_worker.py" in cmd:
                    with contextlib.suppress(psutil.Error, AttributeError):
                        total += p.memory_full_info().pss
            peak[0] = max(peak[0], total)
            time.sleep(0.5)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    t0 = time.perf_counter()
    manifest = run_preprocess(cfg, sub, Path(args.out) / "dataset", overwrite=True)
    wall = time.perf_counter() - t0
    stop.set()
    thread.join()
    ray.shutdown()
    n_ch = len(manifest.channels)
    seconds = sum(f.stat().st_size > 0 for f in files) * cfg.twin.frame_duration
    print(
        "RESULT "
        + json.dumps(
            {
                "cpus": args.cpus,
                "pinned_cores": sorted(os.sched_getaffinity(0)) if args.pin else None,
                "frames": len(files),
                "channels": n_ch,
                "wall_s": round(wall, 2),
                "channel_s_per_s": round(seconds * n_ch / wall, 1),
                "peak_pss_mib": round(peak[0] / 2**20),
                "windows": manifest.windows_written,
            }
        )
    )


def run(cfg: str, frames: Path, n: int, cpus: int, work: Path, pin: bool) -> dict:
    out = work / f"run-{cpus}cpu-{n}f"
    options = {"config": cfg, "frames": frames, "n_frames": n, "cpus": cpus, "out": out}
    return run_child(__file__, options | {"pin": int(pin)})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "bench.yaml"))
    parser.add_argument("--frames-per-run", type=int, default=8, help="N (the 1x data set)")
    parser.add_argument(
        "--scaling-frames", type=int, default=32, help="S: frames of the 1- vs 2-CPU runs"
    )
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench-out" / "preprocess")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--pin",
        type=int,
        default=1,
        help="1: pin each run to as many cores as it has CPUs (0 = --no-pin)",
    )
    parser.add_argument("--no-pin", dest="pin", action="store_const", const=0)
    add_child_args(parser, "frames")
    args = parser.parse_args()
    if args.child:
        child(args)
        return 0

    from glitchflow.config import load_config
    from glitchflow.synth.twin import generate

    n, s = args.frames_per_run, args.scaling_frames
    twin_dir = args.workdir / "twin"
    needed = max(4 * n, s)
    if len(list((twin_dir / "frames").glob("*.gwf"))) < needed:
        cfg = load_config(args.config, [f"twin.duration={needed * 64}"])
        generate(cfg, twin_dir, progress=True, writers=2)
    frames = twin_dir / "frames"
    one = run(args.config, frames, s, 1, args.workdir, bool(args.pin))
    two = run(args.config, frames, s, 2, args.workdir, bool(args.pin))
    small = run(args.config, frames, n, 2, args.workdir, bool(args.pin))
    big = two if s == 4 * n else run(args.config, frames, 4 * n, 2, args.workdir, bool(args.pin))
    runs = [one, two, small] + ([] if big is two else [big])
    report = {
        "runs": runs,
        "scaling_frames": s,
        "pinned": bool(args.pin),
        "throughput_ratio_2cpu_vs_1cpu": round(two["channel_s_per_s"] / one["channel_s_per_s"], 2),
        "memory_ratio_4x_vs_1x_frames": round(big["peak_pss_mib"] / small["peak_pss_mib"], 2),
        "targets": {"throughput_ratio": ">= 1.7", "memory_ratio": "<= 1.2"},
    }
    print(f"{'cpus':>5} {'frames':>7} {'wall s':>8} {'ch-s/s':>9} {'peak MiB':>9}")
    for r in runs:
        print(
            f"{r['cpus']:>5} {r['frames']:>7} {r['wall_s']:>8} {r['channel_s_per_s']:>9} "
            f"{r['peak_pss_mib']:>9}"
        )
    print(
        f"2 vs 1 CPU throughput: {report['throughput_ratio_2cpu_vs_1cpu']} (target >= 1.7); "
        f"4x vs 1x frames peak memory: {report['memory_ratio_4x_vs_1x_frames']} (target <= 1.2)"
    )
    write_json(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
