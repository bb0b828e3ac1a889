"""``glitchflow generate``: synthetic strain spectrograms from auxiliary channels.

The seed's generation pipeline, done with the self-describing checkpoint: a
Ray Data pass over a preprocessing dataset (``DATA/shards`` + manifest) in
which actors holding one :class:`~glitchflow.models.inference.Predictor` turn
each window's auxiliary spectrograms into the generated strain spectrogram.
The dataset must contain the model's channels (by name, any order) and have
been conditioned with the model's signal settings; both are checked.

Outputs in OUT: ``generated/*.parquet`` (gps_start, gps_end, generated,
real strain on the same rows), ``manifest.json`` and ``samples.png``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from glitchflow.config import Config
from glitchflow.io.atomic import write_json_atomic
from glitchflow.io.manifest import load_manifest
from glitchflow.models.checkpoint import Checkpoint
from glitchflow.models.inference import Predictor
from glitchflow.pipelines.runtime import check_stage_resources
from glitchflow.pipelines.staging import claim_out
from glitchflow.tracking.images import panel_figure
from glitchflow.tracking.model_store import resolve_model

log = logging.getLogger(__name__)


class WindowGenerator:
    """Ray Data callable class: dataset windows -> generated strain spectrograms."""

    def __init__(self, ckpt: Checkpoint, order: list[int], threads: int, use_gpu: bool) -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
        self.predictor = Predictor(ckpt, device)
        self.order = order  # dataset channel index of each model channel

    def __call__(self, batch: dict) -> dict:
        import torch

        spec = np.asarray(batch["spectrogram"], dtype=np.float32)[:, self.order]
        keep = ~np.asarray(batch["bad"], dtype=bool)
        spec = spec[keep]
        pred = self.predictor
        generated = (
            pred.generate(torch.from_numpy(spec[:, 1:])).numpy()
            if len(spec)
            else np.zeros((0, pred.crop, spec.shape[-1]), dtype=np.float32)
        )
        return {
            "gps_start": np.asarray(batch["gps_start"])[keep],
            "gps_end": np.asarray(batch["gps_end"])[keep],
            "generated": generated.astype(np.float32),
            "real": spec[:, 0, pred.rows],
        }


def channel_order(model_channels: list[str], data_channels: list[str]) -> list[int]:
    missing = [c for c in model_channels if c not in data_channels]
    if missing:
        raise ValueError(f"the dataset lacks the model's channels {missing}")
    if data_channels[0] != model_channels[0]:
        raise ValueError(
            f"the dataset's strain channel is {data_channels[0]}, the model's {model_channels[0]}"
        )
    return [data_channels.index(c) for c in model_channels]


#: what generate writes under OUT
GENERATE_PRODUCTS = ["generated", "samples.png", "manifest.json"]


@dataclass(frozen=True)
class GenerateResult:
    """What ``glitchflow generate`` wrote (also OUT/manifest.json): windows in =
    generated + skipped for bad data; ``wall_seconds``: s."""

    model: dict
    data: str
    windows_in: int
    windows_generated: int
    windows_skipped_bad_data: int
    wall_seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def run_generate(
    cfg: Config,
    data_dir: str | Path,
    model_uri: str,
    out: str | Path,
    tracking_uri=None,
    overwrite: bool = False,
) -> GenerateResult:
    """Generate the strain spectrogram of every window of ``data_dir``; a previous run's
    products in ``out`` are refused (Parquet shards would mix) unless ``overwrite``."""
    import ray

    t0 = time.perf_counter()
    model = resolve_model(model_uri, tracking_uri)
    ckpt = model.ckpt
    manifest = load_manifest(data_dir)
    if manifest.stage_config().signal != ckpt.signal:
        raise ValueError(
            f"{data_dir} was conditioned with other signal settings than the model "
            f"({model.uri}); re-run preprocess with the model's signal config"
        )
    order = channel_order(list(ckpt.channels), manifest.channels)
    res = cfg.infer.resources
    check_stage_resources(res, "generate")
    out = claim_out(out, GENERATE_PRODUCTS, "generate", overwrite)  # checks passed
    shards = str(manifest.shard_dir(data_dir))
    ds = ray.data.read_parquet(shards).map_batches(
        WindowGenerator,
        fn_constructor_kwargs={
            "ckpt": ckpt,
            "order": order,
            "threads": max(1, int(res.cpus_per_worker)),
            "use_gpu": res.gpus_per_worker > 0,
        },
        batch_size=16,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=res.workers),
        num_cpus=res.cpus_per_worker,
        num_gpus=res.gpus_per_worker,
    )
    ds.write_parquet(str(out / "generated"), min_rows_per_file=cfg.infer.rows_per_file)
    written = ray.data.read_parquet(str(out / "generated"))
    n_out = written.count()
    n_in = manifest.windows_written
    samples = written.sort("gps_start").take(4)
    plot_samples(samples, out / "samples.png")
    result = GenerateResult(
        model=model.describe(),
        data=str(Path(data_dir).resolve()),
        windows_in=n_in,
        windows_generated=int(n_out),
        windows_skipped_bad_data=n_in - int(n_out),
        wall_seconds=round(time.perf_counter() - t0, 2),
    )
    write_json_atomic(out / "manifest.json", result.to_dict())
    return result


def plot_samples(samples: list[dict], path: Path) -> None:

    if not samples:
        return
    real = np.stack([s["real"] for s in samples])
    gen = np.stack([s["generated"] for s in samples])
    titles = [f"GPS {s['gps_start']:.1f}" for s in samples]
    fig = panel_figure([("real strain", real), ("generated", gen)], titles)
    fig.savefig(path, dpi=90)
    import matplotlib.pyplot as plt

    plt.close(fig)
