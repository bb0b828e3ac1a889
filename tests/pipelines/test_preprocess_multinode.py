"""Preprocessing on a two-node Ray cluster gives the single-node result."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from glitchflow.config import load_config
from glitchflow.pipelines.preprocess import run_preprocess
from tests.conftest import CONFIGS, write_test_frames
from tests.multinode import run_on_cluster

OVERRIDES = [
    "preprocess.frames_per_block=1",
    "preprocess.resources.workers=2",
    "preprocess.resources.cpus_per_worker=1",
]


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_two_node_cluster_matches_single_node(tmp_path: Path, ray_local):
    write_test_frames(
        tmp_path / "frames",
        [1400000016 + 16 * k for k in range(4)],
        glitches=[("V1:Hrec_hoft_16384Hz", 1400000040.0, 70.0, 8.0)],
    )
    cfg = load_config(CONFIGS / "demo.yaml", OVERRIDES)
    single = run_preprocess(cfg, tmp_path / "frames", tmp_path / "single")
    info = run_on_cluster(
        "preprocess", CONFIGS / "demo.yaml", tmp_path / "frames", tmp_path / "multi", OVERRIDES
    )
    assert len(info["nodes"]) == 2, "actors should spread over both nodes"
    assert info["n"] == single.windows_written
    a = pq.read_table(tmp_path / "single" / "shards").to_pandas().sort_values("gps_start")
    b = pq.read_table(tmp_path / "multi" / "shards").to_pandas().sort_values("gps_start")
    assert list(a.gps_start) == list(b.gps_start)
    for x, y in zip(a.spectrogram, b.spectrogram):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-5)
