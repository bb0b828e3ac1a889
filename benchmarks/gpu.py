"""GPU figures: conditioning, training, inference and decision latency on one device.

Runs where only torch, numpy and pydantic are installed (the lent GPU machine has no
Ray, MLflow or frame library): every figure is our own code in-process, and each is
measured beside the same code on this machine's CPU in the same run.

* **conditioning**: :class:`Conditioner` (whiten + Q-transform, all channels in one
  batch) on 1-64 channels of 64-s Gaussian noise at 4096 Hz, channel-seconds per second,
  device vs one CPU thread;
* **training**: the plain training loop of ``train_overhead.py`` (the config's model,
  loss, optimiser, clipping) at the config's batch size and a larger one, samples/s;
* **inference**: ``--duration`` s of strain (16384 Hz) and three witnesses at their
  twin rates held in memory, cut into the infer stage's blocks (``--block`` s), each
  block conditioned, windowed and decided by :class:`FrameWindowCutter` and
  :class:`Predictor` as ``glitchflow infer`` does (frame decoding excluded: it is CPU
  work, ~5 ms per second of twin strain), seconds of data per wall second;
* **decision latency**: :class:`DecisionEngine.run` on one 1.5-s request (p50/p99 over
  ``--requests``) and per request in batches of 16: the endpoint's work without HTTP.

Random weights (speed does not depend on them).  With no GPU it runs on the CPU only
(``--quick`` for a smoke run).

    python benchmarks/gpu.py --json bench-out/gpu.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import random_checkpoint, write_json  # noqa: E402
from benchmarks.train_overhead import plain_torch, synthetic_crops  # noqa: E402
from glitchflow.config import load_config  # noqa: E402

SECTIONS = ("conditioning", "training", "inference", "latency")
WITNESSES = ["V1:LSC_DARM_CORR", "V1:Sa_NE_F0_Z_500Hz", "V1:ENV_CEB_MAG_N"]


def timed(fn, device: str, repeats: int) -> tuple[float, object]:
    """Best wall seconds of ``fn()`` over ``repeats`` after one warm-up, synchronised, and
    what ``fn`` returned."""
    out = fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best, out


def conditioning(cfg, devices: list[str], channels: list[int], duration: float, repeats: int):
    from glitchflow.signal.conditioner import Conditioner

    rows = []
    rate = cfg.signal.sample_rate
    for n in channels:
        x = torch.from_numpy(np.random.default_rng(n).standard_normal((1, n, int(duration * rate))))
        row = {"channels": n, "duration_s": duration}
        for device in devices:
            cond = Conditioner(cfg.signal).to(device)
            xd = x.to(device)
            with torch.no_grad():
                t, _ = timed(lambda c=cond, v=xd: c(v), device, repeats)
            row[f"channel_s_per_s_{label(device)}"] = round(n * duration / t, 1)
        rows.append(row)
    return rows


def label(device: str) -> str:
    return "cpu_1thread" if device == "cpu" else device.replace(":", "")


def training(cfg, devices: list[str], samples: int, epochs: int, batches: list[int]) -> list:
    x, y = synthetic_crops(samples, len(WITNESSES), cfg.train.crop)
    rows = []
    for batch in batches:
        row = {"batch_size": batch}
        for device in devices:
            got = plain_torch(cfg, x, y, epochs, device=device, batch_size=batch)
            row[f"samples_per_s_{label(device)}"] = round(got["samples_per_s"], 1)
        rows.append(row)
    return rows


def twin_segment(cfg, ckpt, duration: float, pad: float, seed: int = 0):
    """Gaussian noise for the checkpoint's channels, ``duration + 2 pad`` s at their rates."""
    from glitchflow.io.span import Segment

    rng = np.random.default_rng(seed)
    start = cfg.twin.gps_start - pad
    data = {
        c: rng.standard_normal(int((duration + 2 * pad) * ckpt.sample.rates[c]))
        for c in ckpt.channels
    }
    return Segment(start, start + duration + 2 * pad, data, dict(ckpt.sample.rates))


def part_of(seg, start: float, end: float):
    """The ``[start, end)`` GPS s of every channel of ``seg`` (views, no copy)."""
    from glitchflow.io.span import Segment

    data = {
        c: a[round((start - seg.start) * seg.rates[c]) : round((end - seg.start) * seg.rates[c])]
        for c, a in seg.data.items()
    }
    return Segment(start, end, data, seg.rates)


def inference(cfg, model: Path, device: str, duration: float, block: float) -> dict:
    """Seconds of data per wall second for infer's block work on ``device``."""
    from glitchflow.io.windows import FrameWindowCutter, window_starts
    from glitchflow.models.checkpoint import read_checkpoint
    from glitchflow.models.inference import Predictor
    from glitchflow.signal.conditioner import Conditioner

    ckpt = read_checkpoint(model)
    cond = Conditioner(ckpt.signal).to(device)
    inf = cfg.infer
    pred = Predictor(ckpt, device, inf.crop_hop, tiling=inf.tiling)
    cutter = FrameWindowCutter(cond, [], pred.channels, inf.window, inf.stride, device)
    pad = cond.edge_seconds + inf.window
    seg = twin_segment(cfg, ckpt, duration, pad)
    t0 = cfg.twin.gps_start

    def run() -> int:
        n = 0
        for b0 in np.arange(t0, t0 + duration, block):
            part = part_of(seg, b0 - pad, b0 + block + pad)
            rows = cutter.cut(part, window_starts(b0, b0 + block, inf.stride))
            spec = torch.from_numpy(np.stack([r["spectrogram"] for r in rows]))
            starts = [r["gps_start"] for r in rows]
            pred.decide_windows(spec, starts, cond.time_step, cond.frequencies)
            n += len(rows)
        return n

    wall, windows = timed(run, device, 2)
    return {
        "device": device,
        "windows": windows,
        "wall_s": round(wall, 3),
        "x_real_time": round(duration / wall, 1),
    }


def decision_latency(cfg, model: Path, device: str, requests: int) -> dict:
    from glitchflow.models.checkpoint import read_checkpoint
    from glitchflow.serve.engine import DecisionEngine

    engine = DecisionEngine(read_checkpoint(model), 1.5, device=device)
    info = engine.describe()
    rng = np.random.default_rng(0)
    channels = {
        c: (info["sample_rates"][c], rng.standard_normal(info["samples"][c])) for c in WITNESSES
    }
    item = engine.validate(1_400_000_001.0, channels, need_strain=False)
    for _ in range(3):
        engine.run([item])
    one = []
    for _ in range(requests):
        t = time.perf_counter()
        engine.run([item])
        one.append(time.perf_counter() - t)
    batch = []
    for _ in range(max(3, requests // 16)):
        t = time.perf_counter()
        engine.run([item] * 16)
        batch.append(time.perf_counter() - t)
    return {
        "device": device,
        "p50_ms": round(float(np.percentile(one, 50)) * 1e3, 2),
        "p99_ms": round(float(np.percentile(one, 99)) * 1e3, 2),
        "batch16_ms_per_request": round(float(np.median(batch)) * 1e3 / 16, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--duration", type=float, default=1024.0, help="inference span (s)")
    parser.add_argument("--block", type=float, default=256.0, help="infer block (s)")
    parser.add_argument("--requests", type=int, default=300, help="latency requests")
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    parser.add_argument(
        "--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="what to measure"
    )
    parser.add_argument("--no-cpu", action="store_true", help="the GPU columns only")
    args = parser.parse_args()
    cfg = load_config(args.config)
    cuda = torch.cuda.is_available()
    gpu = ["cuda"] if cuda else []
    cpu = [] if args.no_cpu and cuda else ["cpu"]
    torch.set_num_threads(1)  # the CPU column is one core; the GPU is fed by one thread too
    q = args.quick
    report: dict = {
        "device": torch.cuda.get_device_name() if cuda else "cpu only",
        "torch": torch.__version__,
        "cpu_threads": 1,
    }
    if "conditioning" in args.sections:
        report["conditioning"] = conditioning(
            cfg, [*cpu, *gpu], [1, 8] if q else [1, 8, 64], 16.0 if q else 64.0, 1 if q else 3
        )
        print("conditioning (channel-s per s):", *report["conditioning"], sep="\n  ")
    if "training" in args.sections:
        report["training"] = training(
            cfg,
            [*cpu, *gpu],
            40 if q else 400,
            2 if q else 3,
            [cfg.train.batch_size] + ([] if q else [128]),
        )
        print("training (samples per s):", *report["training"], sep="\n  ")
    with tempfile.TemporaryDirectory() as tmp:
        model = random_checkpoint(cfg, WITNESSES, Path(tmp))
        duration = 64.0 if q else args.duration
        block = 64.0 if q else args.block
        if "inference" in args.sections:
            report["inference"] = [
                inference(cfg, model, d, duration, block) | {"block_s": block} for d in [*cpu, *gpu]
            ]
            if cuda and not q:
                report["inference"].append(
                    inference(cfg, model, "cuda", duration, duration) | {"block_s": duration}
                )
            print("inference:", *report["inference"], sep="\n  ")
        if "latency" in args.sections:
            report["decision_latency"] = [
                decision_latency(cfg, model, d, 20 if q else args.requests) for d in [*cpu, *gpu]
            ]
            print(
                "decision latency (in-process, no HTTP):", *report["decision_latency"], sep="\n  "
            )
    write_json(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
