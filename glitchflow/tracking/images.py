"""TensorBoard images: real / generated / residual strain and the aux inputs, in SNR^2."""

from __future__ import annotations

import torch

from glitchflow.io.dataset import COLUMN_DTYPES


def panel_figure(columns: list[tuple[str, object]], titles=(), shared: int | None = None):
    """Matplotlib figure of ``(name, images (n, H, W))`` columns, one row per sample.

    The first ``shared`` columns (default: all) share one colour scale from 0.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(columns[0][1])
    shared = len(columns) if shared is None else shared
    fig, axes = plt.subplots(n, len(columns), figsize=(3 * len(columns), 2.6 * n), squeeze=False)
    vmax = max(float(max(c[1].max() for c in columns[:shared])), 1.0)
    for i in range(n):
        for j, (name, images) in enumerate(columns):
            ax = axes[i, j]
            img = images[i]
            ax.imshow(
                img.numpy() if hasattr(img, "numpy") else img,
                origin="lower",
                aspect="auto",
                vmin=0,
                vmax=vmax if j < shared else None,
                cmap="viridis",
            )
            ax.set_title(f"{name}" + (f" {titles[i]}" if titles and j == 0 else ""), fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    return fig


def spectrogram_figure(real, generated, aux, titles: tuple[str, ...] = ()):
    """Columns real, generated, |residual| (one scale) and the aux maximum, for
    ``(n, 1, H, W)`` strain and ``(n, n_aux, H, W)`` aux tensors."""
    columns = [
        ("real strain", real[:, 0]),
        ("generated", generated[:, 0]),
        ("|residual|", (real[:, 0] - generated[:, 0]).abs()),
        ("aux (max over channels)", aux.max(dim=1).values),
    ]
    return panel_figure(columns, titles, shared=3)


def log_spectrogram_images(writer, model, val_shard, scaling, epoch, n: int = 4):
    """Fixed validation samples (the first ``n`` of the unshuffled shard) every call."""

    batch = next(iter(val_shard.iter_torch_batches(batch_size=n, dtypes=COLUMN_DTYPES)), None)
    if batch is None:
        return
    device = scaling.aux.device
    model.eval()
    with torch.no_grad():
        pred = scaling.outputs(model(scaling.inputs(batch["x"].to(device)))).cpu()
    titles = tuple(f"GPS {float(t):.2f}" for t in batch["gps_start"][:n])
    fig = spectrogram_figure(batch["y"][:n], pred[:n], batch["x"][:n], titles)
    writer.add_figure("validation/real_generated_residual_aux", fig, epoch)
