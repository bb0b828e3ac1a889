"""Single-Q transform onto a log-frequency x uniform-time grid.

The tiles are the ones gwpy and Omicron use (bisquare window in frequency,
``Q' = Q / sqrt(11)``, gwpy's normalisation and mismatch tiling).  Each tile
row is inverse-transformed at its own sampling, normalised to "SNR^2" by its
median energy over the segment (gwpy's ``norm='median'``), reduced onto the
output time bins (max-pooling by default, gwpy's spline as an option) and
interpolated onto the log-spaced output rows with gwpy's cubic spline along
frequency.  :meth:`QTransform.tile_energies` gives the rows at their own
sampling, for triggers at the tiles' resolution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from glitchflow.signal.fast import BinPool, gather_scaled, median, rfft, squared_magnitude

#: maximum fractional energy mismatch between neighbouring tiles (gwpy's default)
TILE_MISMATCH = 0.2
#: ways of putting a tile row onto the output time grid (see :class:`QTransform`)
REDUCTIONS = ("max", "interpolate")


def spline_matrix(x_in: np.ndarray, x_out: np.ndarray) -> np.ndarray:
    """Matrix ``(len(x_out), len(x_in))`` applying cubic not-a-knot spline interpolation
    from samples at ``x_in`` (increasing) to points ``x_out``; points outside are clamped
    to the end samples (as FITPACK's ``bispev``, used by gwpy, does).

    The spline of scipy's ``make_interp_spline(k=3)`` (the test checks it to 1e-10),
    built here in numpy: scipy.interpolate costs 0.4 s of import in every fresh actor.
    """
    x_in = np.asarray(x_in, dtype=np.float64)
    x_out = np.clip(np.asarray(x_out, dtype=np.float64), x_in[0], x_in[-1])
    n = len(x_in)
    eye = np.eye(n)
    if n < 4:
        return np.stack([np.interp(x_out, x_in, eye[k]) for k in range(n)], 1)
    dx = np.diff(x_in)
    slope = (eye[1:] - eye[:-1]) / dx[:, None]  # (n - 1, n): secant slopes per sample
    # first derivatives s (n, n) at the knots: A s = B, not-a-knot at both ends
    a = np.zeros((n, n))
    b = np.zeros((n, n))
    for i in range(1, n - 1):
        a[i, i - 1 : i + 2] = dx[i], 2 * (dx[i - 1] + dx[i]), dx[i - 1]
        b[i] = 3 * (dx[i] * slope[i - 1] + dx[i - 1] * slope[i])
    d = dx[0] + dx[1]
    a[0, :2] = dx[1], d
    b[0] = ((dx[0] + 2 * d) * dx[1] * slope[0] + dx[0] ** 2 * slope[1]) / d
    d = dx[-2] + dx[-1]
    a[-1, -2:] = d, dx[-2]
    b[-1] = (dx[-1] ** 2 * slope[-2] + (2 * d + dx[-1]) * dx[-2] * slope[-1]) / d
    s = np.linalg.solve(a, b)
    i = np.clip(np.searchsorted(x_in, x_out, side="right") - 1, 0, n - 2)
    h = dx[i][:, None]
    t = ((x_out - x_in[i]) / dx[i])[:, None]
    return (
        (2 * t**3 - 3 * t**2 + 1) * eye[i]
        + (t**3 - 2 * t**2 + t) * h * s[i]
        + (-2 * t**3 + 3 * t**2) * eye[i + 1]
        + (t**3 - t**2) * h * s[i + 1]
    )


def cubic_spline_periodic(values: Tensor, positions: Tensor) -> Tensor:
    """Cubic B-spline interpolation of uniformly sampled ``values`` (..., n) at fractional
    sample ``positions`` (m,), with periodic boundaries (exact away from the ends)."""
    n = values.shape[-1]
    k = torch.arange(n // 2 + 1, dtype=values.dtype, device=values.device)
    prefilter = 2.0 / 3.0 + (1.0 / 3.0) * torch.cos(2 * math.pi * k / n)
    coeffs = torch.fft.irfft(torch.fft.rfft(values, dim=-1) / prefilter, n, dim=-1)
    base = positions.floor()
    t = (positions - base)[..., None].to(values.dtype)
    weights = torch.cat(
        [
            (1 - t) ** 3 / 6,
            (3 * t**3 - 6 * t**2 + 4) / 6,
            (-3 * t**3 + 3 * t**2 + 3 * t + 1) / 6,
            t**3 / 6,
        ],
        dim=-1,
    )  # (m, 4)
    index = (base.long()[:, None] + torch.arange(-1, 3, device=values.device)) % n
    return (coeffs[..., index] * weights).sum(-1)


#: input lengths whose plans one QTransform keeps (scan, preprocess and serving use a few)
PLAN_CACHE_SIZE = 16


@dataclass(frozen=True)
class RowGroup:
    """Tile rows sharing one sampling: ``members`` index the plan's tiles; ``length``
    samples per row over the input; the rows' bands in one gather: ``source`` (k,) the
    spectrum bins of every row's band (``2 h + 1`` bins around the tile frequency,
    row after row), ``target`` (k,) where each lands in the group's flattened ``(rows,
    length)`` inverse-FFT input (frequencies ``-h..h``, negative ones wrapped to the
    end), ``window`` (k,) float32 the bisquare window with the normalisations folded in;
    ``pool`` the tile samples inside each output bin (None for ``interpolate``);
    ``median_runs`` ``(first row, end row, stride)``: rows whose gwpy tile samples
    (over which their normalising median is taken, as gwpy's) are every stride-th."""

    members: np.ndarray
    length: int
    source: Tensor
    target: Tensor
    window: Tensor
    pool: BinPool | None
    median_runs: tuple[tuple[int, int, int], ...]


@dataclass(frozen=True)
class QPlan:
    """Everything a transform of ``n`` input samples needs that does not depend on the
    data (built once per input length and device, as ml4gw's QTile keeps its windows as
    buffers): the tile ``tiles`` (Hz), the row groups, and ``interp`` (n_freq, n_tiles)
    float32, the cubic spline along frequency onto the output rows."""

    n: int
    n_bins: int
    tiles: np.ndarray
    groups: tuple[RowGroup, ...]
    interp: Tensor


def log_frequencies(frange: tuple[float, float], n_freq: int) -> np.ndarray:
    """Output row frequencies (Hz): ``n_freq`` log-spaced points from low to high inclusive."""
    return np.geomspace(frange[0], frange[1], n_freq)


class QTransform(nn.Module):
    """Median-normalised single-Q energy of whitened data.

    Args:
        q: quality factor.
        frange: (low, high) frequency range (Hz).
        n_freq: number of log-spaced frequency rows.
        time_step: output bin width (s); ``time_step * sample_rate`` must be an integer.
        sample_rate: input sample rate (Hz).
        reduction: how each tile row, computed at its own sampling, reaches the output
            bins.  ``"max"`` (default): a bin keeps the largest tile energy inside it,
            so a glitch's peak SNR^2 survives on any grid (a bin of 94 ms still shows a
            5-ms blip at its full energy).  ``"interpolate"``: gwpy's cubic spline at
            the bin times, exact on fine grids but blind between samples on coarse ones.
            Max rather than an energy-preserving mean: the veto, the scan and the
            training labels all threshold peak SNR^2, and a mean over a bin divides a
            short glitch's peak by the bin's length in tile samples.
        oversample: tile samples per gwpy tile sample for ``"max"`` (1 loses at most ~6%
            of a peak between tile samples on the sweep of the tests; 2 at most ~2%).

    Input ``(batch, channel, time)``, float, ``time`` a multiple of
    ``time_step * sample_rate``. Output ``(batch, channel, n_freq, n_bins)``
    float32.  With ``"max"`` bin ``m`` covers ``[m, m + 1) * time_step`` s from
    the input's first sample; with ``"interpolate"`` it is the value at
    ``m * time_step`` s (gwpy's convention).
    """

    def __init__(
        self,
        q: float,
        frange: tuple[float, float],
        n_freq: int,
        time_step: float,
        sample_rate: float,
        reduction: str = "max",
        oversample: int = 1,
    ) -> None:
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        if oversample < 1:
            raise ValueError(f"oversample must be >= 1, got {oversample}")
        self.reduction = reduction
        self.oversample = int(oversample)
        step = time_step * sample_rate
        if abs(step - round(step)) > 1e-6:
            raise ValueError(
                f"time_step {time_step} s x sample_rate {sample_rate} Hz = {step} samples; "
                "must be an integer"
            )
        if frange[1] * (1 + math.sqrt(11) / q) >= sample_rate / 2:
            raise ValueError(
                f"frange upper edge {frange[1]} Hz with q={q} reaches beyond Nyquist "
                f"({sample_rate / 2} Hz)"
            )
        self.q = float(q)
        self.qprime = self.q / math.sqrt(11.0)
        self.sample_rate = float(sample_rate)
        self.time_step = float(time_step)
        self.samples_per_bin = round(step)
        self.register_buffer(
            "frequencies", torch.tensor(log_frequencies(frange, n_freq)), persistent=False
        )
        self._plans: dict[tuple[int, str], QPlan] = {}

    @property
    def n_freq(self) -> int:
        return int(self.frequencies.numel())

    def edge_seconds(self) -> float:
        """Time (s) at each edge corrupted by the transform's circular wrap at the lowest row,
        rounded up to whole bins."""
        extent = 2.0 * self.qprime / float(self.frequencies[0])
        return math.ceil(extent / self.time_step) * self.time_step

    def tile_frequencies(self, duration: float) -> np.ndarray:
        """Centre frequencies (Hz) of the tile rows for a segment of ``duration`` s.

        gwpy's tiling for mismatch 0.2: log-spaced rows whose spacing keeps the
        energy loss between neighbours below the mismatch, rounded down to
        multiples of ``1 / duration``.
        """
        fmin, fmax = float(self.frequencies[0]), float(self.frequencies[-1])
        deltam = 2 * math.sqrt(TILE_MISMATCH / 3.0)
        span = math.log(fmax / fmin) * math.sqrt(2 + self.q**2) / 2.0
        nfreq = int(max(1, math.ceil(span / deltam)))
        step = span / nfreq
        raw = fmin * np.exp(2 / math.sqrt(2 + self.q**2) * (np.arange(nfreq) + 0.5) * step)
        return np.unique(np.floor(raw * duration) / duration)

    def plan(self, n: int, device: torch.device | str = "cpu") -> QPlan:
        """The :class:`QPlan` of an input of ``n`` samples on ``device``, built on first
        use and cached (the last :data:`PLAN_CACHE_SIZE` lengths per instance)."""
        device = torch.device(device)
        key = (int(n), str(device))
        plan = self._plans.get(key)
        if plan is None:
            plan = self._build_plan(int(n), device)
            while len(self._plans) >= PLAN_CACHE_SIZE:
                self._plans.pop(next(iter(self._plans)), None)
            self._plans[key] = plan
        return plan

    def forward(self, x: Tensor, row_max_frequency: Tensor | None = None) -> Tensor:
        """Transform ``x`` (batch, channel, time).

        Tile rows are computed at :meth:`tile_frequencies`, normalised by their
        median, reduced onto the output bins (:attr:`reduction`), and interpolated
        onto the output frequencies with a cubic (not-a-knot) spline along
        frequency, as gwpy does.  ``row_max_frequency`` (channel,) Hz zeroes rows
        above each channel's usable band.
        """
        n = x.shape[-1]
        if n % self.samples_per_bin:
            raise ValueError(
                f"input length {n} is not a multiple of {self.samples_per_bin} samples per bin"
            )
        plan = self.plan(n, x.device)
        rows = x.new_zeros((*x.shape[:-1], len(plan.tiles), plan.n_bins), dtype=torch.float32)
        for group, (energy, norm) in zip(plan.groups, self._energies(x, plan)):
            # both reductions commute with the rows' positive normalisation: reduce
            # first, then divide the (n_bins,) rows instead of the (length,) ones
            if self.reduction == "max":
                reduced = group.pool.max(energy)
            else:
                positions = torch.arange(plan.n_bins, dtype=torch.float64, device=x.device)
                scale = group.length / plan.n_bins
                reduced = cubic_spline_periodic(energy, positions * scale)
            rows[..., group.members, :] = reduced / norm
        if row_max_frequency is not None:
            limit = row_max_frequency.to(rows.device, torch.float64)
            tile_keep = torch.from_numpy(plan.tiles).to(rows.device)[None, :] <= limit[:, None]
            rows = rows * tile_keep[None, :, :, None]
        energy = torch.einsum("ok,bckt->bcot", plan.interp, rows)
        if row_max_frequency is not None:
            keep = self.frequencies[None, :] <= limit[:, None]
            energy = energy * keep[None, :, :, None]
        return energy.clamp_min(0.0)

    def tile_energies(self, x: Tensor):
        """Median-normalised tile energies at each row's own sampling.

        Yields ``(members, energy)`` per group of rows sharing one sampling:
        ``members`` indexes :meth:`tile_frequencies`, ``energy`` is
        ``(batch, channel, len(members), L)`` SNR^2 with sample ``j`` at
        ``j * duration / L`` s from the first input sample (``L`` from
        :meth:`row_lengths`).
        """
        plan = self.plan(x.shape[-1], x.device)
        for group, (energy, norm) in zip(plan.groups, self._energies(x, plan)):
            yield group.members, energy / norm

    def row_lengths(self, n: int) -> np.ndarray:
        """Samples of each tile row (in :meth:`tile_frequencies` order) over an input of
        ``n`` samples.  ``'interpolate'``: gwpy's tile count; ``'max'``: ``oversample``
        times as many (exact band-limited interpolation of the tile's complex series) and
        at least as many as the output bins, so every bin holds a tile sample."""
        duration = n / self.sample_rate
        n_bins = n // self.samples_per_bin
        sizes = np.array([self._ntiles(f, duration) for f in self.tile_frequencies(duration)])
        if self.reduction == "max":
            floor = 1 << max(0, (n_bins - 1).bit_length())
            sizes = np.maximum(sizes * self.oversample, floor)
        return sizes

    def tile_peaks(
        self, x: Tensor, threshold: float, row_max_frequency: Tensor | None = None
    ) -> list[list[np.ndarray]]:
        """Tiles above ``threshold`` SNR^2 at their own resolution, for triggers.

        ``x`` (batch, channel, time) as for :meth:`forward`.  Returns, per batch
        and channel, an array ``(k, 4)`` of ``[time (s from the first sample),
        frequency (Hz), SNR^2, time resolution (s)]`` for the tile samples that
        are local maxima along their row (each row at its own sampling) and above
        ``threshold``; rows above ``row_max_frequency`` (channel,) Hz are skipped.
        """
        duration = x.shape[-1] / self.sample_rate
        tiles = self.tile_frequencies(duration)
        found = [[[] for _ in range(x.shape[1])] for _ in range(x.shape[0])]
        for members, energy in self.tile_energies(x):
            length = energy.shape[-1]
            left, right = energy.roll(1, -1), energy.roll(-1, -1)
            peak = (energy > threshold) & (energy >= left) & (energy >= right)
            for b, c, r, j in torch.nonzero(peak).tolist():
                freq = float(tiles[members[r]])
                if row_max_frequency is not None and freq > float(row_max_frequency[c]):
                    continue
                found[b][c].append(
                    (j * duration / length, freq, float(energy[b, c, r, j]), duration / length)
                )
        return [[np.array(ch, dtype=float).reshape(-1, 4) for ch in row] for row in found]

    def _ntiles(self, freq: float, duration: float) -> int:
        """Samples of a tile row (gwpy: a power of two set by the mismatch)."""
        deltam = 2 * math.sqrt(TILE_MISMATCH / 3.0)
        ntiles = 2 ** math.ceil(math.log2(duration * 2 * math.pi * freq / self.q / deltam))
        return max(ntiles, 2 * int(freq / self.qprime * duration) + 2)

    def _build_plan(self, n: int, device: torch.device) -> QPlan:
        """Tile rows grouped by sampling, with their gather/scatter indices and window
        weights, the pooling indices and the frequency spline (see :class:`QPlan`)."""
        duration = n / self.sample_rate
        n_bins = n // self.samples_per_bin
        n_spectrum = n // 2 + 1
        tiles = self.tile_frequencies(duration)
        lengths = self.row_lengths(n)
        ntiles = np.array([self._ntiles(f, duration) for f in tiles])
        groups = []
        # rows sharing a sampling: one inverse FFT (gwpy's tile count, rising with the
        # frequency, sets each row's median stride)
        for length in sorted(set(lengths.tolist())):
            members = np.flatnonzero(lengths == length)
            strides = [int(length // c) if length % c == 0 else 1 for c in ntiles[members]]
            firsts = [r for r in range(len(strides)) if r == 0 or strides[r] != strides[r - 1]]
            ends = [*firsts[1:], len(strides)]
            source, target, windows = [], [], []
            for row, freq in enumerate(tiles[members]):
                half = int(freq / self.qprime * duration)
                offsets = np.arange(-half, half + 1)
                start = round(freq * duration) + 1 - half  # the band's first spectrum bin
                if start < 1 or start + 2 * half + 1 > n_spectrum:
                    raise ValueError(f"tile at {freq} Hz reaches past the spectrum")
                xfreq = offsets * self.qprime / (freq * duration)
                norm = math.sqrt(315.0 * self.qprime / (128.0 * freq)) / (
                    duration * self.sample_rate
                )
                # gwpy's one-sided amplitude spectrum (rfft / n, doubled above DC) and the
                # inverse FFT's 1/length undone, folded into the window
                windows.append((1.0 - xfreq**2) ** 2 * norm * (2.0 / n * length))
                source.append(start + half + offsets)
                target.append(row * length + offsets % length)
            groups.append(
                RowGroup(
                    members=members,
                    length=length,
                    source=torch.from_numpy(np.concatenate(source)).to(device),
                    target=torch.from_numpy(np.concatenate(target)).to(device),
                    window=torch.from_numpy(np.concatenate(windows)).to(device, torch.float32),
                    pool=BinPool.build(length, n_bins, device) if self.reduction == "max" else None,
                    median_runs=tuple((a, b, strides[a]) for a, b in zip(firsts, ends)),
                )
            )
        interp = spline_matrix(tiles, self.frequencies.cpu().numpy())
        return QPlan(
            n=n,
            n_bins=n_bins,
            tiles=tiles,
            groups=tuple(groups),
            interp=torch.from_numpy(interp).to(device, torch.float32),
        )

    def _energies(self, x: Tensor, plan: QPlan):
        """Energy of each group's tile rows and its normalisation: one FFT of the input,
        then per group a gather of the windowed band, one inverse FFT and the row medians;
        yields per group ``(batch, channel, len(members), length)`` float32 energy and the
        ``(batch, channel, len(members), 1)`` medians that divide it into SNR^2."""
        spectrum = rfft(x.float())  # whitened data: single precision
        batch_shape = spectrum.shape[:-1]
        for group in plan.groups:
            rows = len(group.members)
            buffer = gather_scaled(
                spectrum, group.source, group.window, group.target, rows * group.length
            ).reshape(*batch_shape, rows, group.length)
            energy = squared_magnitude(torch.fft.ifft(buffer, dim=-1))
            norm = torch.cat(
                [median(energy[..., a:b, ::step], dim=-1) for a, b, step in group.median_runs],
                dim=-2,
            )
            yield energy, norm.clamp_min(1e-30)
