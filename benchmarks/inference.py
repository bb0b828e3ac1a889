"""Batch inference speed: seconds of data per wall second, Ray Data vs a plain loop.

A twin span (demo config, ``--duration`` s) and a model over the twin's three
true witness channels (random weights: speed does not depend on them).  In
the same run:

* ``glitchflow infer`` (Ray Data, ``--workers`` actors of 0.75 CPU each on a
  local Ray with 2 CPUs), wall time of the stage without the products, and of
  the whole command;
* the peer: the same Conditioner + Predictor in a plain Python loop over the
  frames (one process, 2 torch threads), no Ray;

each with the default settings (side-by-side windows, each run through the
network whole: every bin predicted once), with side-by-side training-size
crops, and with the old default of overlapping windows and crops (every bin
predicted about four times).

The default setting's Ray stage is run ``--repeats`` more times (the first run of a
process also starts Ray Data's own actors) and the median reported beside the first.

Target: >= 100x real time on 2 CPUs.

    .venv/bin/python benchmarks/inference.py --json bench-out/inference.json
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import random_checkpoint, write_json  # noqa: E402
from glitchflow.config import load_config  # noqa: E402

WITNESSES = ["V1:LSC_DARM_CORR", "V1:Sa_NE_F0_Z_500Hz", "V1:ENV_CEB_MAG_N"]


SETTINGS = {  # name: (infer.stride s, infer.tiling, infer.crop_hop)
    "each bin once, whole windows (default)": (6.0, "window", 1.0),
    "side-by-side windows and crops": (6.0, "crops", 1.0),
    "overlapping windows and crops (old default)": (3.0, "crops", 0.5),
}


def plain_loop(cfg, frames_dir: Path, model: Path) -> float:
    """Wall seconds of the same work without Ray: condition, cut, predict, decide."""
    from glitchflow.io.frames import find_frames, make_blocks
    from glitchflow.io.windows import FrameWindowCutter
    from glitchflow.models.checkpoint import read_checkpoint
    from glitchflow.models.decisions import decide
    from glitchflow.models.inference import Predictor
    from glitchflow.signal.conditioner import Conditioner

    ckpt = read_checkpoint(model)
    cond = Conditioner(ckpt.signal)
    pred = Predictor(ckpt, hop_fraction=cfg.infer.crop_hop, tiling=cfg.infer.tiling)
    frames = find_frames(frames_dir).frames
    cutter = FrameWindowCutter(cond, frames, pred.channels, cfg.infer.window, cfg.infer.stride)
    t0 = time.perf_counter()
    for block in make_blocks(frames, cfg.infer.frames_per_block):
        rows, _ = cutter.process(block)
        spec = torch.from_numpy(np.stack([r["spectrogram"] for r in rows]))
        gen = pred.generate(spec[:, 1:])
        starts = np.array([r["gps_start"] for r in rows])
        freqs = cond.frequencies[pred.rows]
        decide(spec[:, 0, pred.rows], gen, starts, cond.time_step, freqs, pred.point)
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--duration", type=int, default=1024, help="seconds of twin data")
    parser.add_argument("--workers", type=int, default=2, help="inference actors (1 CPU each)")
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="further runs of the default setting's Ray stage (the first run of a process "
        "also starts Ray Data's own actors; on 2 CPUs runs differ by 10-20 %%)",
    )
    args = parser.parse_args()

    import ray

    from glitchflow.pipelines.infer import run_inference
    from glitchflow.synth.twin import generate

    tmp = Path(tempfile.mkdtemp(prefix="gf-infer-bench-"))
    base = [
        f"twin.duration={args.duration}",
        f"infer.resources.workers={args.workers}",
        "infer.resources.cpus_per_worker=0.75",
        "infer.images=0",
    ]
    cfg = load_config(ROOT / "configs" / "demo.yaml", base)
    twin = generate(cfg, tmp / "twin", progress=False, writers=2)
    model = random_checkpoint(cfg, WITNESSES, tmp)
    frames = twin.frames[0].parent
    torch.set_num_threads(2)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    rows, configs = [], []
    for name, (stride, tiling, hop) in SETTINGS.items():
        cfg = load_config(
            ROOT / "configs" / "demo.yaml",
            [*base, f"infer.stride={stride}", f"infer.tiling={tiling}", f"infer.crop_hop={hop}"],
        )
        configs.append(cfg)
        plain = plain_loop(cfg, frames, model)
        t0 = time.perf_counter()
        summary = run_inference(cfg, frames, str(model), tmp / f"infer-{stride}", overwrite=True)
        total = time.perf_counter() - t0
        live = summary.figures["livetime_s"]
        rows.append(
            {
                "setting": name,
                "stride_s": stride,
                "tiling": tiling,
                "crop_hop": hop,
                "plain_loop_wall_s": plain,
                "plain_x_real_time": args.duration / plain,
                "ray_stage_wall_s": summary.inference_wall_seconds,
                "ray_x_real_time": live / summary.inference_wall_seconds,
                "ray_command_wall_s": total,
                "ray_command_x_real_time": live / total,
            }
        )
    repeats = []
    for k in range(args.repeats):  # the default setting again, Ray Data already warm
        out = tmp / f"infer-repeat-{k}"
        summary = run_inference(configs[0], frames, str(model), out, overwrite=True)
        repeats.append(summary.figures["livetime_s"] / summary.inference_wall_seconds)
    ray.shutdown()
    report = {
        "data_seconds": args.duration,
        "channels": 1 + len(WITNESSES),
        "workers": args.workers,
        "runs": rows,
        "best_x_real_time": max(max(r["plain_x_real_time"], r["ray_x_real_time"]) for r in rows),
        "default_ray_x_real_time": rows[0]["ray_x_real_time"],
        "default_plain_x_real_time": rows[0]["plain_x_real_time"],
        "default_ray_x_real_time_repeats": repeats,
        "default_ray_x_real_time_median": float(np.median([rows[0]["ray_x_real_time"], *repeats])),
        "target_x_real_time": 100.0,
    }
    report["target_met"] = report["default_ray_x_real_time"] >= report["target_x_real_time"]
    print(f"{'setting':<42} {'plain s':>8} {'x RT':>6} {'Ray s':>7} {'x RT':>6} {'cmd x RT':>9}")
    for r in rows:
        print(
            f"{r['setting']:<42} {r['plain_loop_wall_s']:>8.1f} {r['plain_x_real_time']:>6.1f} "
            f"{r['ray_stage_wall_s']:>7.1f} {r['ray_x_real_time']:>6.1f} "
            f"{r['ray_command_x_real_time']:>9.1f}"
        )
    if repeats:
        print(
            f"default Ray stage, {len(repeats)} more runs: "
            + ", ".join(f"{x:.1f}" for x in repeats)
            + f" x real time; median of all {report['default_ray_x_real_time_median']:.1f}"
        )
    write_json(report, args.json)
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
