"""The training loop's shard cache: read once through Ray Data, then reshuffled in
memory with the same rows, the same batch count on every pass, and an order that
depends on the seed only (not on the order the rows arrived in)."""

from __future__ import annotations

import itertools

import ray
import torch

from glitchflow.pipelines.train_loop import ShardCache, selection_score


def _shard(n: int):
    """A Ray Data dataset of ``n`` rows whose x and y carry the row's index."""
    rows = [
        {
            "x": torch.full((2, 4, 4), float(i)).numpy(),
            "y": torch.full((1, 4, 4), float(i)).numpy(),
            "gps_start": float(i),
            "is_glitch": bool(i % 2),
        }
        for i in range(n)
    ]
    return ray.data.from_items(rows).materialize()


def _ids(batches) -> list[list[int]]:
    out = []
    for x, y in batches:
        assert torch.equal(x[:, 0, 0, 0], y[:, 0, 0, 0])  # x and y stay paired
        out.append([int(v) for v in x[:, 0, 0, 0]])
    return out


def _flat(batches: list[list[int]]) -> list[int]:
    return list(itertools.chain.from_iterable(batches))


def test_the_cached_shard_reshuffles_the_same_rows(ray_local):
    cache = ShardCache(_shard(23), batch_size=5, limit_mb=1.0, device="cpu")
    first = _ids(cache.batches(seed=1))
    assert cache.x is not None and len(cache.x) == 23  # kept after the first pass
    again = _ids(cache.batches(seed=2))
    assert sorted(_flat(first)) == sorted(_flat(again)) == list(range(23))
    assert [len(b) for b in again] == [len(b) for b in first] == [5, 5, 5, 5, 3]
    assert again != first and _flat(_ids(cache.batches(seed=None))) == list(range(23))


def test_the_order_depends_on_the_seed_not_on_the_arrival_order(ray_local):
    """A restarted worker (rows delivered in another order) repeats the same epochs."""
    shard = _shard(23)
    one = ShardCache(shard, batch_size=5, limit_mb=1.0, device="cpu")
    other = ShardCache(shard.random_shuffle(seed=7).materialize(), 5, 1.0, "cpu")
    assert _ids(one.batches(seed=4)) == _ids(other.batches(seed=4))
    assert _ids(one.batches(seed=4)) != _ids(one.batches(seed=5))


def test_a_shard_over_the_limit_streams_every_pass(ray_local):
    for limit in (0.0, 1e-4):  # never read, or read and found too large
        cache = ShardCache(_shard(12), batch_size=4, limit_mb=limit, device="cpu")
        assert sorted(_flat(_ids(cache.batches(seed=1)))) == list(range(12))
        assert cache.x is None
        assert sorted(_flat(_ids(cache.batches(seed=2)))) == list(range(12))


def test_the_latest_epoch_within_the_tolerance_of_the_best_is_kept():
    """Validation losses 0.30, 0.216 (best), 0.2164, 0.25, 0.2180: with 2 % the kept epoch
    is 4 (0.2180 <= 1.02 x 0.216), with 0 the best (1); no validation loss: the latest."""
    losses = [0.30, 0.216, 0.2164, 0.25, 0.2180]

    def kept(tolerance):
        best, scores = float("inf"), []
        for epoch, loss in enumerate(losses):
            best = min(best, loss)
            scores.append(selection_score(epoch, loss, best, tolerance))
        return max(range(len(scores)), key=scores.__getitem__)

    assert kept(0.02) == 4 and kept(0.0) == 1 and kept(0.002) == 2
    assert selection_score(7, float("nan"), 0.2, 0.02) == 8.0
