"""Where the model looks: the frequency rows of a conditioned spectrogram it predicts."""

from __future__ import annotations


def model_rows(n_freq: int, crop: int) -> slice:
    """The ``crop`` rows centred in ``n_freq`` Conditioner rows (the model's square crops
    in training, and the rows generated in inference and serving)."""
    if not 0 < crop <= n_freq:
        raise ValueError(f"a crop of {crop} rows does not fit in {n_freq} frequency rows")
    first = (n_freq - crop) // 2
    return slice(first, first + crop)
