"""TensorBoard images: real / generated / residual strain and the aux inputs, in SNR^2."""

from __future__ import annotations

import torch


def spectrogram_figure(real, generated, aux, titles: tuple[str, ...] = ()):
    """Matplotlib figure: one row per sample; columns real, generated, |residual|, aux max."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = real.shape[0]
    fig, axes = plt.subplots(n, 4, figsize=(12, 2.6 * n), squeeze=False)
    vmax = float(max(real.max(), generated.max(), 1.0))
    for i in range(n):
        panels = [
            (real[i, 0], "real strain"),
            (generated[i, 0], "generated"),
            ((real[i, 0] - generated[i, 0]).abs(), "|residual|"),
            (aux[i].max(dim=0).values, "aux (max over channels)"),
        ]
        for j, (img, name) in enumerate(panels):
            ax = axes[i, j]
            ax.imshow(
                img.numpy(),
                origin="lower",
                aspect="auto",
                vmin=0,
                vmax=vmax if j < 3 else None,
                cmap="viridis",
            )
            ax.set_title(f"{name}" + (f" {titles[i]}" if titles and j == 0 else ""), fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    return fig


def log_spectrogram_images(writer, model, val_shard, norm_aux, norm_strain, epoch, n: int = 4):
    """Fixed validation samples (the first ``n`` of the unshuffled shard) every call."""
    from glitchflow.pipelines.train_loop import COLUMN_DTYPES

    batch = next(iter(val_shard.iter_torch_batches(batch_size=n, dtypes=COLUMN_DTYPES)), None)
    if batch is None:
        return
    device = norm_aux.device
    model.eval()
    with torch.no_grad():
        pred = model(batch["x"].to(device) / norm_aux).cpu() * norm_strain
    titles = tuple(f"GPS {float(t):.2f}" for t in batch["gps_start"][:n])
    fig = spectrogram_figure(batch["y"][:n], pred[:n], batch["x"][:n], titles)
    writer.add_figure("validation/real_generated_residual_aux", fig, epoch)
