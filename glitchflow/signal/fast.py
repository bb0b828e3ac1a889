"""Small numerical kernels the Conditioner spends its time in: real FFTs by the faster
library on the CPU, medians by selection, max-pooling onto time bins, and FFT lengths
the FFT library is fast at."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def median(x: Tensor, dim: int = -1) -> Tensor:
    """``numpy.median`` of ``x`` along ``dim``, kept as a size-1 axis (an even count
    averages the two middle values, as numpy, scipy's Welch and gwpy do).

    On the CPU by selection (``numpy.partition``, linear time: 2-10x faster than torch's
    median or a sort), partitioning once at the upper middle and taking the lower middle
    as the largest value below it (numpy's two-kth partition costs 5x more); elsewhere
    (GPU) by torch's sort."""
    n = x.shape[dim]
    k = n // 2
    if x.device.type == "cpu":
        # one copy, laid out along the median's axis (partitioning a strided axis in
        # place of a contiguous one costs 20-40% more), partitioned in place
        part = np.moveaxis(x.detach().numpy(), dim, -1).copy(order="C")
        part.partition(k, axis=-1)
        middle = part[..., k]
        if n % 2 == 0:
            middle = 0.5 * (part[..., :k].max(axis=-1) + middle)
        return torch.as_tensor(np.array(middle, dtype=part.dtype)).unsqueeze(dim)
    ordered = x.sort(dim=dim).values
    upper = ordered.narrow(dim, k, 1)
    return upper if n % 2 else 0.5 * (ordered.narrow(dim, k - 1, 1) + upper)


@functools.lru_cache(maxsize=1)
def _pocketfft():
    """``scipy.fft`` (pocketfft), imported on first use (0.35 s in a fresh process)."""
    import scipy.fft

    return scipy.fft


def _in_numpy(x: Tensor) -> bool:
    """Whether ``x`` can take a numpy (or scipy) kernel: on the CPU, outside autograd."""
    return x.device.type == "cpu" and not x.requires_grad


def _on_pocketfft(x: Tensor) -> bool:
    """A single transform (one channel) that can take numpy's path."""
    return _in_numpy(x) and x.numel() == x.shape[-1]


def rfft(x: Tensor, n: int | None = None) -> Tensor:
    """``torch.fft.rfft(x, n, dim=-1)``.  A single transform on the CPU (one channel) by
    pocketfft (``scipy.fft``, in ``x``'s precision): the MKL of torch's CPU build takes
    3x longer for one long real transform than for each of a batch of two (73728 float32
    samples: 1.7 ms alone, 0.5 ms each of two, 0.7 ms by pocketfft, on the benchmark
    machine).  Batches, the GPU and autograd go to torch."""
    if not _on_pocketfft(x):
        return torch.fft.rfft(x, n, dim=-1)
    return torch.from_numpy(_pocketfft().rfft(x.resolve_neg().numpy(), n, axis=-1))


def irfft(z: Tensor, n: int | None = None) -> Tensor:
    """``torch.fft.irfft(z, n, dim=-1)``; a single transform on the CPU by pocketfft, as
    :func:`rfft` (the same 3x)."""
    if not _on_pocketfft(z):
        return torch.fft.irfft(z, n, dim=-1)
    values = z.resolve_conj().resolve_neg().numpy()
    return torch.from_numpy(_pocketfft().irfft(values, n, axis=-1))


def squared_magnitude(z: Tensor) -> Tensor:
    """``|z|^2`` of a complex tensor as a real one (float32 for complex64); on the CPU by
    numpy (1.5x faster than torch's strided real and imaginary views), else by torch."""
    if _in_numpy(z):
        values = z.numpy()
        out = np.square(values.real)
        out += np.square(values.imag)
        return torch.from_numpy(out)
    return z.real.square() + z.imag.square()


def gather_scaled(values: Tensor, source: Tensor, scale: Tensor, target: Tensor, size: int):
    """``out[..., target] = values[..., source] * scale`` into zeros ``(..., size)``: the
    tile rows' bands of a spectrum laid out for their inverse FFTs.  On the CPU by numpy
    (``take`` and a fancy assignment: 1.5-2x faster than torch's gather and scatter along
    a last axis, and than a slice per row), elsewhere by torch."""
    if _in_numpy(values):
        data = values.resolve_conj().numpy()
        out = np.zeros((*data.shape[:-1], size), dtype=data.dtype)
        out[..., target.numpy()] = np.take(data, source.numpy(), axis=-1) * scale.numpy()
        return torch.from_numpy(out)
    out = values.new_zeros((*values.shape[:-1], size))
    out[..., target] = values[..., source] * scale
    return out


@functools.lru_cache(maxsize=256)
def smooth_length(n: int) -> int:
    """The smallest even 2-3-5-smooth integer >= ``n``: FFT lengths that pocketfft and
    cuFFT transform fastest (a factor 11 or 13 costs about 2x)."""
    best = 2 * n + 2
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35 * 2  # even
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def bin_edges(length: int, n_bins: int) -> np.ndarray:
    """``(n_bins + 1,)`` first sample of each output bin ``[m, m + 1) * time_step`` (and
    ``length`` last) for ``length`` samples spread evenly over the segment."""
    return np.ceil(np.arange(n_bins + 1) * (length / n_bins) - 1e-9).astype(np.int64)


def pool_index(length: int, n_bins: int) -> np.ndarray:
    """``(n_bins, k)`` indices of the samples, of ``length`` spread evenly over the
    segment, inside each output bin ``[m, m + 1) * time_step`` (short bins repeat their
    last sample): ``values[..., pool_index(...)].max(-1)`` is the max-pooling."""
    edges = bin_edges(length, n_bins)
    width = int(np.max(np.diff(edges)))
    index = edges[:-1, None] + np.arange(width)[None, :]
    return np.minimum(index, edges[1:, None] - 1)


@dataclass(frozen=True)
class BinPool:
    """Max-pooling of ``length`` samples, spread evenly over a segment, onto ``n_bins``
    output bins (the bins of :func:`pool_index`, whose widths are ``width`` or ``width +
    1`` samples): a sliding maximum over ``width`` samples read at each bin's first
    sample, and each bin's last sample.  2-3x fewer memory passes than gathering
    ``(n_bins, width + 1)`` samples; the same values exactly.

    ``starts``, ``lasts``: ``(n_bins,)`` first and last sample of each bin.
    """

    starts: Tensor
    lasts: Tensor
    width: int

    @classmethod
    def build(cls, length: int, n_bins: int, device: torch.device | str = "cpu") -> BinPool:
        if length < n_bins:
            raise ValueError(f"{length} samples cannot fill {n_bins} bins")
        edges = bin_edges(length, n_bins)
        return cls(
            starts=torch.from_numpy(edges[:-1]).to(device),
            lasts=torch.from_numpy(edges[1:] - 1).to(device),
            width=int(np.diff(edges).min()),
        )

    def max(self, values: Tensor) -> Tensor:
        """``(..., length)`` -> ``(..., n_bins)``: the largest sample inside each bin."""
        sliding = values
        if self.width > 1:
            flat = values.reshape(-1, 1, values.shape[-1])
            sliding = F.max_pool1d(flat, self.width, 1).reshape(*values.shape[:-1], -1)
        return torch.maximum(sliding[..., self.starts], values[..., self.lasts])
