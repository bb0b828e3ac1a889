"""Detector-twin throughput: seconds of data written per wall second, and peak memory.

Runs the twin on the bench config (about one hour of data; ``--duration`` to
shorten) with one and with two GWF-writer processes, and reports the share
of time spent generating versus encoding frames.  The twin must never be the
slow stage of a later benchmark.

    .venv/bin/python benchmarks/synth.py --json bench-out/synth.json
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import write_json  # noqa: E402
from glitchflow.config import load_config  # noqa: E402
from glitchflow.synth.twin import DetectorTwin, generate  # noqa: E402


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "bench.yaml"))
    parser.add_argument("--duration", type=int, default=None, help="override twin.duration (s)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    overrides = [f"twin.duration={args.duration}"] if args.duration else []
    cfg = load_config(args.config, overrides)

    # generation alone (no encoding), to split the cost
    t0 = time.perf_counter()
    samples = sum(sum(len(x) for x in data.values()) for _, data, _ in DetectorTwin(cfg).frames())
    gen_wall = time.perf_counter() - t0
    rows = []
    for writers in (1, 2):
        with tempfile.TemporaryDirectory() as tmp:
            result = generate(cfg, tmp, progress=False, writers=writers)
            size = sum(p.stat().st_size for p in result.frames)
        rows.append(
            {
                "writers": writers,
                "seconds_of_data": result.seconds_generated,
                "wall_s": round(result.wall_seconds, 2),
                "data_s_per_wall_s": round(result.seconds_generated / result.wall_seconds, 1),
                "bytes_written": size,
            }
        )
    report = {
        "config": args.config,
        "duration_s": cfg.twin.duration,
        "channels": len(cfg.twin.channels) + 1,
        "samples_per_second_of_data": samples / cfg.twin.duration,
        "generation_only_data_s_per_wall_s": round(cfg.twin.duration / gen_wall, 1),
        "runs": rows,
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "writer_speedup_2_vs_1": round(
            rows[1]["data_s_per_wall_s"] / rows[0]["data_s_per_wall_s"], 2
        ),
    }
    print(f"twin on {args.config}: {cfg.twin.duration} s, {report['channels']} channels")
    print(f"{'writers':>8} {'wall s':>8} {'data s / wall s':>16} {'GB':>6}")
    for r in rows:
        print(
            f"{r['writers']:>8} {r['wall_s']:>8} {r['data_s_per_wall_s']:>16} "
            f"{r['bytes_written'] / 1e9:>6.2f}"
        )
    print(
        f"generation alone: {report['generation_only_data_s_per_wall_s']} s/s; "
        f"peak RSS {report['peak_rss_mib']} MiB"
    )
    write_json(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
