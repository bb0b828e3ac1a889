"""Ray Train overhead: samples/s of one Ray Train worker vs a plain PyTorch loop.

Same model (the demo config's), same synthetic crops, same batch size, same
optimiser, loss and gradient clipping, in the same run.  Reports training throughput
(the training pass of each epoch after the first, median; Ray Train's epochs also
validate, reported beside it as ``samples_per_s_with_validation``), wall time of the
whole fit and time to the first optimiser step.
Target: Ray Train >= 0.9 x plain torch.

    .venv/bin/python benchmarks/train_overhead.py --json bench-out/train_overhead.json
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

from benchmarks.common import write_json  # noqa: E402
from glitchflow.config import load_config  # noqa: E402
from glitchflow.models.losses import SpectrogramLoss  # noqa: E402
from glitchflow.models.registry import arguments_from_settings, create_model  # noqa: E402


def synthetic_crops(n: int, n_aux: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Exponential noise (median-normalised energy) with witnessed blobs."""
    rng = np.random.default_rng(seed)
    x = rng.exponential(1.44, (n, n_aux, size, size)).astype(np.float32)
    y = rng.exponential(1.44, (n, 1, size, size)).astype(np.float32)
    for i in range(n):
        f, t = rng.integers(4, size - 4, 2)
        amp = rng.uniform(20, 200)
        y[i, 0, f - 2 : f + 2, t - 2 : t + 2] += amp
        x[i, rng.integers(n_aux), f - 2 : f + 2, t - 2 : t + 2] += 2 * amp
    return x, y


def plain_torch(cfg, x, y, epochs: int, device: str = "cpu", batch_size: int | None = None) -> dict:
    """The training loop without Ray on ``device`` (batch size: the config's unless given)."""
    tr = cfg.train
    batch = batch_size or tr.batch_size
    torch.manual_seed(0)
    m = tr.model  # the arguments Ray Train's loop builds it with (architecture defaults)
    args = arguments_from_settings(m.name, x.shape[1], m.base, m.depth, m.residual, m.attention)
    model = create_model(m.name, **args).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=tr.lr, weight_decay=tr.weight_decay)
    loss_fn = SpectrogramLoss(**tr.loss.model_dump(), glitch_level=1.0)  # same work as training
    xs, ys = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
    t0 = time.perf_counter()
    first = None
    rates = []
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(xs), generator=torch.Generator().manual_seed(epoch))
        order = order.to(device)
        t_epoch = time.perf_counter()
        for k in range(0, len(xs), batch):
            idx = order[k : k + batch]
            loss = loss_fn(model(xs[idx]), ys[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), tr.grad_clip)
            opt.step()
            first = first if first is not None else time.perf_counter() - t0
        if device != "cpu":
            torch.cuda.synchronize(device)
        rates.append(len(xs) / (time.perf_counter() - t_epoch))
    return {
        "samples_per_s": float(np.median(rates[1:] or rates)),
        "wall_s": time.perf_counter() - t0,
        "time_to_first_step_s": first,
    }


def ray_train(cfg, x, y, epochs: int) -> dict:
    import ray

    from glitchflow.io.manifest import Manifest
    from glitchflow.pipelines.train import loop_config, make_trainer
    from glitchflow.pipelines.training_data import TrainingData

    items = [
        {"x": x[i], "y": y[i], "gps_start": float(i), "is_glitch": True} for i in range(len(x))
    ]
    train = ray.data.from_items(items).materialize()
    val = ray.data.from_items(items[:20]).materialize()
    channels = ["V1:Hrec_hoft_16384Hz"] + [f"V1:AUX_{k}" for k in range(x.shape[1])]
    manifest = Manifest(
        config=cfg.model_dump(mode="json"),
        config_hash="",
        channels=channels,
        sample_rates={},
        frames_in=0,
        frames_written=0,
        frames_written_files=[],
        frames_failed=[],
        windows_expected=len(items),
        windows_written=len(items),
        windows_skipped=[],
        bad_channels={},
        window_seconds=6.0,
        stride_seconds=3.0,
    )
    data = TrainingData(
        {"train": train, "val": val, "test": val},
        {"aux": [1.0] * x.shape[1], "strain": 1.0},
        channels,
        {},
        manifest,
    )
    with tempfile.TemporaryDirectory() as tmp:
        loop = loop_config(cfg, data, Path(tmp)) | {"epochs": epochs, "image_every": 10**6}
        t0 = time.perf_counter()
        result = make_trainer(cfg, data, Path(tmp), loop, name="bench").fit()
        wall = time.perf_counter() - t0
    hist = result.metrics_dataframe
    rates = hist["samples_per_second"].to_numpy()  # the training pass of each epoch
    with_val = len(x) / hist["epoch_seconds"].to_numpy()  # validation included
    return {
        "samples_per_s": float(np.median(rates[1:] if len(rates) > 1 else rates)),
        "samples_per_s_with_validation": float(
            np.median(with_val[1:] if len(with_val) > 1 else with_val)
        ),
        "wall_s": wall,
        "time_to_first_step_s": float(hist["time_to_first_step_s"].iloc[-1]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"))
    parser.add_argument("--samples", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--aux", type=int, default=8)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    import ray

    cfg = load_config(args.config, ["train.workers=1", "train.cpus_per_worker=2"])
    x, y = synthetic_crops(args.samples, args.aux, cfg.train.crop)
    torch.set_num_threads(2)
    plain = plain_torch(cfg, x, y, args.epochs)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    rt = ray_train(cfg, x, y, args.epochs)
    ray.shutdown()
    report = {
        "model": cfg.train.model.model_dump(),
        "batch_size": cfg.train.batch_size,
        "samples": args.samples,
        "epochs": args.epochs,
        "threads": 2,
        "plain_torch": plain,
        "ray_train_1_worker": rt,
        "throughput_ratio": round(rt["samples_per_s"] / plain["samples_per_s"], 3),
        "target": ">= 0.9",
    }
    print(f"{'':>20} {'samples/s':>10} {'wall s':>8} {'first step s':>13}")
    for name, r in (("plain torch", plain), ("Ray Train 1 worker", rt)):
        print(
            f"{name:>20} {r['samples_per_s']:>10.1f} {r['wall_s']:>8.1f} "
            f"{r['time_to_first_step_s']:>13.2f}"
        )
    print(f"Ray Train / plain torch throughput: {report['throughput_ratio']} (target >= 0.9)")
    write_json(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
