"""A run's staging directory: dead runs' output discarded for good, live ones left alone,
and a writer of a discarded run unable to bring its directory back."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from glitchflow.io.spectrograms import write_table_shards
from glitchflow.pipelines.staging import (
    RunAbandonedError,
    check_staging,
    claim_out,
    discard,
    publish,
    staged,
    staging_dir,
)

HOST = socket.gethostname().replace("-", "_")


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _table(rows: int) -> pa.Table:
    return pa.table({"gps_start": pa.array(np.arange(rows, dtype=float))})


def test_a_dead_runs_staging_is_discarded_and_a_live_or_foreign_one_kept(tmp_path):
    dead = tmp_path / f".staging-infer-{HOST}-{_dead_pid()}-0a1b2c3d"
    (dead / "reports").mkdir(parents=True)
    (dead / "reports" / "frame.gwf.json").write_text("{}")
    unfinished = tmp_path / f".staging-infer-{HOST}-{_dead_pid()}-0a1b2c3e.discarded"
    unfinished.mkdir()
    live = tmp_path / f".staging-infer-{HOST}-{os.getppid()}-0a1b2c3f"
    foreign = tmp_path / f".staging-infer-elsewhere-{_dead_pid()}-0a1b2c40"
    other_stage = tmp_path / f".staging-clean-{HOST}-{_dead_pid()}-0a1b2c41"
    for kept in (live, foreign, other_stage):
        kept.mkdir()
    mine = staging_dir(tmp_path, "infer")
    assert mine.is_dir() and mine.name.startswith(f".staging-infer-{HOST}-{os.getpid()}-")
    assert not dead.exists() and not unfinished.exists()
    assert not list(tmp_path.glob("*.discarded"))
    assert live.is_dir() and foreign.is_dir() and other_stage.is_dir()


def test_a_writer_of_a_discarded_run_stops_and_cannot_recreate_it(tmp_path):
    """What a killed run's actor meets once the next run discarded its staging: the guard
    names the directory, and a shard write that races past the guard fails instead of
    re-creating the directory with its parents."""
    staging = staging_dir(tmp_path, "preprocess")
    (staging / "reports").mkdir()
    check_staging(staging / "reports")  # alive: nothing raised
    assert write_table_shards(staging / "shards", "windows-1", _table(3), 2)
    assert discard(staging)
    with pytest.raises(RunAbandonedError, match=str(staging / "reports")):
        check_staging(staging / "reports")
    with pytest.raises(FileNotFoundError):
        write_table_shards(staging / "shards", "windows-2", _table(3), 2)
    assert not staging.exists() and list(tmp_path.iterdir()) == []


def test_publish_moves_the_products_and_removes_the_staging(tmp_path):
    out = claim_out(tmp_path / "out", ["shards", "manifest.json"], "preprocess", False)
    staging = staging_dir(out, "preprocess")
    write_table_shards(staging / "shards", "windows-1", _table(1), 4)
    (staging / "manifest.json").write_text("{}")
    (staging / "scratch.tmp").write_text("left behind")
    publish(staging, out, ["shards", "manifest.json"])
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "shards"]
    assert [p.name for p in (out / "shards").iterdir()] == ["windows-1-00000.parquet"]
    with pytest.raises(FileExistsError, match="--overwrite"):
        claim_out(out, ["shards", "manifest.json"], "preprocess", False)


def test_a_failed_run_discards_its_staging_and_a_complete_one_publishes(tmp_path):
    with pytest.raises(KeyboardInterrupt), staged(tmp_path, "clean", ["frames"]) as staging:
        (staging / "frames").mkdir()
        (staging / "frames" / "V-V1_GLITCHFLOW_CLEAN-0-32.gwf").write_bytes(b"half")
        raise KeyboardInterrupt  # Ctrl-C in the driver mid-run
    assert list(tmp_path.iterdir()) == []
    with staged(tmp_path, "clean", ["frames"]) as staging:
        (staging / "frames").mkdir()
    assert [p.name for p in tmp_path.iterdir()] == ["frames"]
