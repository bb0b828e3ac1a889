"""The endpoint's kept PSDs: whitening without a Welch estimate in every request.

With ``serve.psd.mode: kept`` a replica whitens each request with a PSD per channel
that it keeps, instead of one estimated from the request's own few seconds (five
2-s segments for the default 1.5-s window): less work per request and in a batch
one filter per channel, and a steadier estimate (a median over many requests, so
one glitchy request cannot colour it).

How it is kept (all on the replica's engine thread, no Ray here):

* every ``sample_every``-th request (and every request until the first PSD exists)
  has its own Welch PSD estimated, in the channel's units^2 / Hz, and put in a ring
  of the last ``depth`` per channel;
* the served PSD is the per-frequency median of the ring, made as soon as
  ``min_requests`` are in and remade every ``refresh_s`` seconds when new ones came;
  each one gets the next ``version``, which ``/v1/model`` reports with its age, the
  requests behind it and their GPS span, and which every answer carries
  (``psd_version``; 0: the request's own PSD).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence

import torch
from torch import Tensor


class PsdKeeper:
    """Per-channel PSDs estimated from recent requests (see the module docstring).

    Args:
        channels: the channels it keeps PSDs for.
        refresh_s: seconds between remakes of the served PSD.
        depth: requests' PSDs kept per channel (the median's sample).
        sample_every: one request in this many contributes once a PSD exists.
        min_requests: requests needed for the first PSD.
        clock: monotonic seconds (tests pass their own).
    """

    def __init__(
        self,
        channels: Sequence[str],
        refresh_s: float,
        depth: int,
        sample_every: int,
        min_requests: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 1 <= min_requests <= depth:
            raise ValueError(f"need 1 <= min_requests ({min_requests}) <= depth ({depth})")
        self.channels = list(channels)
        self.refresh_s = float(refresh_s)
        self.sample_every = int(sample_every)
        self.min_requests = int(min_requests)
        self.clock = clock
        self._ring: dict[str, deque[tuple[float, Tensor]]] = {
            c: deque(maxlen=depth) for c in self.channels
        }
        self._served: dict[str, Tensor] = {}
        self._fresh = 0  # PSDs added since the served ones were made
        self._seen = 0  # requests conditioned
        self.version = 0
        self.made_at: float | None = None
        self.span: tuple[float, float] | None = None
        self.requests = 0  # requests behind the served PSDs

    def served(self, names: Sequence[str]) -> Tensor | None:
        """Kept PSDs ``(len(names), freq)`` (double, units^2 / Hz), or None while any of
        ``names`` has none yet."""
        if not all(n in self._served for n in names):
            return None
        return torch.stack([self._served[n] for n in names])

    def version_for(self, names: Sequence[str]) -> int:
        """Version of the PSDs :meth:`served` gives for ``names`` now (0: none yet, each
        request is whitened with its own)."""
        return self.version if all(n in self._served for n in names) else 0

    def samples(self, names: Sequence[str], n_requests: int) -> list[int]:
        """Which of the next ``n_requests`` requests (indices in the batch) should have
        their own PSD of ``names`` estimated and :meth:`add`-ed: all while any of them
        has no kept PSD yet, then one in ``sample_every``."""
        if not all(n in self._served for n in names):
            return list(range(n_requests))
        first = self._seen
        self._seen += n_requests
        return [k for k in range(n_requests) if (first + k) % self.sample_every == 0]

    def add(self, names: Sequence[str], psds: Tensor, gps_starts: Sequence[float]) -> None:
        """Put requests' own PSDs ``(batch, len(names), freq)`` (units^2 / Hz) in the ring,
        then remake the served PSDs when they are due."""
        for b, gps in enumerate(gps_starts):
            for k, name in enumerate(names):
                self._ring[name].append((float(gps), psds[b, k].detach().double().cpu()))
        self._fresh += len(gps_starts)
        self._refresh()

    def _refresh(self) -> None:
        """Make the PSDs of channels that have none once ``min_requests`` are in; remake
        every channel's when ``refresh_s`` has passed and new requests came."""
        now = self.clock()
        ready = {n: r for n, r in self._ring.items() if len(r) >= self.min_requests}
        due = self.made_at is not None and now - self.made_at >= self.refresh_s and self._fresh
        names = list(ready) if due else [n for n in ready if n not in self._served]
        if not names:
            return
        for name in names:
            self._served[name] = torch.stack([p for _, p in ready[name]]).median(dim=0).values
        times = [t for ring in ready.values() for t, _ in ring]
        self.span = (min(times), max(times))
        self.requests = max(len(r) for r in ready.values())
        self.version += 1
        self.made_at = now
        self._fresh = 0

    def describe(self) -> dict:
        """What ``/v1/model`` reports: version, age (s), requests and their GPS span."""
        return {
            "mode": "kept",
            "version": self.version,
            "age_s": None if self.made_at is None else round(self.clock() - self.made_at, 3),
            "requests": self.requests,
            "gps_span": list(self.span) if self.span else None,
            "channels": sorted(self._served),
            "refresh_s": self.refresh_s,
            "sample_every": self.sample_every,
        }
