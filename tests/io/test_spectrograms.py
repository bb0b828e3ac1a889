"""Spectrogram shards: what :func:`write_shards` writes, :func:`read_columns` reads back."""

from __future__ import annotations

import numpy as np
import pytest

from glitchflow.io.spectrograms import read_columns, tensor_column, write_shards


def _windows(n: int, start: float = 1000.0) -> dict:
    rng = np.random.default_rng(int(start))
    return {
        "gps_start": start + 6.0 * np.arange(n),
        "veto": np.arange(n) % 2 == 0,
        "n_clusters": np.arange(n, dtype=np.int64),
        "frame": np.array([f"f-{k}.gwf" for k in range(n)], dtype=object),
        "real": rng.normal(size=(n, 4, 8)).astype(np.float32),
    }


def test_shards_round_trip_in_files_of_at_most_rows_per_file(tmp_path):
    first, second = _windows(5, 1000.0), _windows(2, 2000.0)
    paths = write_shards(tmp_path, "block-a", first, rows_per_file=2)
    paths += write_shards(tmp_path, "block-b", second, rows_per_file=2)
    assert [p.name for p in paths] == [
        "block-a-00000.parquet",
        "block-a-00001.parquet",
        "block-a-00002.parquet",
        "block-b-00000.parquet",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)
    table = read_columns(tmp_path, ["veto", "n_clusters", "frame", "real"])
    both = {k: np.concatenate([first[k], second[k]]) for k in first}
    assert table.column("gps_start").to_pylist() == both["gps_start"].tolist()
    assert table.column("veto").to_pylist() == both["veto"].tolist()
    assert table.column("n_clusters").to_pylist() == both["n_clusters"].tolist()
    assert table.column("frame").to_pylist() == both["frame"].tolist()
    np.testing.assert_array_equal(tensor_column(table, "real"), both["real"])  # shape kept
    np.testing.assert_array_equal(tensor_column(table, "real", (4, 8)), both["real"])
    picked = read_columns(tmp_path, ["real"], gps_starts=[1006.0, 2000.0])
    np.testing.assert_array_equal(tensor_column(picked, "real"), both["real"][[1, 5]])


def test_a_rewritten_block_replaces_its_files(tmp_path):
    """A retried block writes the same names: its windows are not counted twice."""
    write_shards(tmp_path, "block-a", _windows(3), rows_per_file=2)
    write_shards(tmp_path, "block-a", _windows(3), rows_per_file=2)
    assert len(read_columns(tmp_path, ["veto"])) == 3
    write_shards(tmp_path, "block-a-b", _windows(1, 3000.0), rows_per_file=2)
    write_shards(tmp_path, "block-a", _windows(2), rows_per_file=2)  # fewer on the retry
    assert len(read_columns(tmp_path, ["veto"])) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "block-a-00000.parquet",
        "block-a-b-00000.parquet",
    ]


def test_no_rows_write_no_file_and_bad_batches_are_refused(tmp_path):
    assert write_shards(tmp_path, "empty", _windows(0), rows_per_file=4) == []
    assert list(tmp_path.iterdir()) == []
    bad = _windows(3)
    bad["veto"] = bad["veto"][:2]
    with pytest.raises(ValueError, match="different lengths"):
        write_shards(tmp_path, "bad", bad, rows_per_file=4)
    with pytest.raises(ValueError, match="rows_per_file"):
        write_shards(tmp_path, "bad", _windows(3), rows_per_file=0)
    with pytest.raises(ValueError, match="no shape"):
        import pyarrow as pa

        tensor_column(pa.table({"x": pa.array([[1.0, 2.0]])}), "x")
