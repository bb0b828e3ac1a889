"""The Ray Data preprocessing stage: counts, physics across frame boundaries, bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from glitchflow.config import load_config
from glitchflow.io.frames import find_frames
from glitchflow.io.span import read_span
from glitchflow.pipelines.preprocess import run_preprocess
from glitchflow.signal.conditioner import Conditioner
from tests.conftest import CONFIGS, write_test_frames

pytestmark = pytest.mark.timeout(300)
STRAIN = "V1:Hrec_hoft_16384Hz"
T0 = 1400000016  # a multiple of the 3 s read grid plus one: frame edges off the grid


def _config(*extra):
    return load_config(
        CONFIGS / "demo.yaml",
        ["preprocess.frames_per_block=1", "preprocess.resources.workers=2", *extra],
    )


def _rows(out):
    table = pq.read_table(out / "shards").to_pandas()
    return table.sort_values("gps_start").reset_index(drop=True)


def _spectrogram(row):
    return np.asarray(row["spectrogram"]).reshape(-1, 64, 256)


def test_counts_schema_and_glitch_across_a_frame_boundary(tmp_path, ray_local):
    boundary = T0 + 16
    frames = write_test_frames(
        tmp_path / "frames",
        [T0, T0 + 16, T0 + 32],
        glitches=[(STRAIN, boundary + 0.01, 90.0, 8.0), ("V1:AUX_A", boundary + 0.01, 90.0, 8.0)],
    )
    cfg = _config("preprocess.rows_per_file=3")
    manifest = run_preprocess(cfg, tmp_path / "frames", tmp_path / "out")
    assert manifest.frames_in == 3 == manifest.frames_written
    assert manifest.frames_failed == []
    assert manifest.windows_expected == manifest.windows_written + len(manifest.windows_skipped)
    assert manifest.channels == [STRAIN, "V1:AUX_A", "V1:AUX_B"]
    assert json.loads((tmp_path / "out" / "manifest.json").read_text()) == manifest.to_dict()
    rows = _rows(tmp_path / "out")
    assert len(rows) == manifest.windows_written
    assert np.allclose(rows.gps_start % 3, 0) and np.allclose(rows.gps_end - rows.gps_start, 6)
    assert rows.channels.iloc[0] == ";".join(manifest.channels)
    # the actors wrote each block's windows as files named by the block, at most
    # rows_per_file each, with Ray Data's tensor columns (what training reads)
    files = sorted(p.name for p in (tmp_path / "out" / "shards").glob("*.parquet"))
    assert set(files) == set(manifest.shard_files)
    assert {f.rsplit("-", 1)[0] for f in files} == {f"windows-{t}" for t in (T0, T0 + 16, T0 + 32)}
    assert max(manifest.shard_files.values()) == 3 < len(rows) == sum(manifest.shard_files.values())
    batch = ray_local.data.read_parquet(str(tmp_path / "out" / "shards")).take_batch(4)
    assert batch["spectrogram"].shape == (4, 3, 64, 256) and batch["max_snr2"].shape == (4, 3)
    # only windows within the padding of the data's start and end are skipped
    edge = Conditioner(cfg.signal).edge_seconds
    for skip in manifest.windows_skipped:
        t = skip["gps_start"]
        assert t - edge < T0 or t + 6 + edge > T0 + 48, skip

    # the window that holds the boundary shows the glitch at its time and frequency
    cond = Conditioner(cfg.signal)
    row = rows[(rows.gps_start <= boundary - 1) & (rows.gps_end >= boundary + 1)].iloc[0]
    spec = _spectrogram(row)
    for channel in (0, 1):
        i_f, i_t = np.unravel_index(spec[channel].argmax(), spec[channel].shape)
        t_peak = row.gps_start + (i_t + 0.5) * cond.time_step
        assert abs(t_peak - (boundary + 0.01)) < 2 * cond.time_step
        assert abs(np.log(cond.frequencies[i_f] / 90.0)) < 0.1
    # and equals the same window conditioned from the contiguous 48 s, up to the
    # statistical difference of PSD and row medians estimated over 24 s instead of 48 s,
    # and of which tile samples fall in each pooled bin (their phase within a bin
    # depends on the segment's length): 7.7 % relative L2 measured
    span = read_span(find_frames(frames).frames, [STRAIN]).segments[0]
    x = torch.from_numpy(span.data[STRAIN])[None, None]
    whole = cond(x)[0, 0].numpy()
    b0 = round((row.gps_start - span.start - cond.edge_seconds) / cond.time_step)
    ref = whole[:, b0 : b0 + 256]
    assert np.linalg.norm(spec[0] - ref) / np.linalg.norm(ref) < 0.1
    # no edge artefact: away from the glitch the boundary region is plain noise, as
    # noisy as the same bins conditioned from the contiguous data (pooled bins keep
    # the largest of their tile samples, so their median is above 1)
    quiet_bins = np.abs(row.gps_start + (np.arange(256) + 0.5) * cond.time_step - boundary) > 0.5
    quiet, quiet_ref = spec[0][:, quiet_bins], ref[:, quiet_bins]
    assert np.median(quiet) == pytest.approx(np.median(quiet_ref), rel=0.1)
    assert 1.0 < np.median(quiet) < 3.0 and quiet.max() < 30


def test_bad_frames_are_reported_and_the_rest_processed(tmp_path, ray_local):
    starts = [T0 + 16 * k for k in range(5)]
    frames = write_test_frames(
        tmp_path / "frames",
        starts,
        nan_in=[("V1:AUX_A", starts[1])],
        drop=[("V1:AUX_B", starts[3])],
    )
    raw = frames[2].read_bytes()
    frames[2].write_bytes(raw[: len(raw) // 3])  # truncated frame
    (tmp_path / "frames" / "notes.gwf").write_text("not a frame")  # misnamed, unreadable
    manifest = run_preprocess(_config(), tmp_path / "frames", tmp_path / "out")
    assert manifest.frames_in == 6
    failed = {f["file"].rsplit("/", 1)[-1]: f["reason"] for f in manifest.frames_failed}
    assert manifest.frames_written + len(failed) == 6
    assert "notes.gwf" in failed and "OBS-TAG" in failed["notes.gwf"]
    assert frames[2].name in failed and "truncated" in failed[frames[2].name]
    # the NaN channel and the missing channel are named, their frames still written
    bad = manifest.bad_channels
    assert "non-finite" in bad[str(frames[1])]["V1:AUX_A"]
    assert "not in frame" in bad[str(frames[3])]["V1:AUX_B"]
    rows = _rows(tmp_path / "out")
    flagged = rows[rows.bad]
    assert set(flagged.frame) == {frames[1].name, frames[3].name}
    assert set(flagged.bad_channels) == {"V1:AUX_A", "V1:AUX_B"}
    nan_row = flagged[flagged.frame == frames[1].name].iloc[0]
    assert np.all(_spectrogram(nan_row)[1] == 0) and _spectrogram(nan_row)[0].max() > 0
    # windows next to the lost frame are skipped with the reason
    reasons = {s["reason"] for s in manifest.windows_skipped}
    assert any("unreadable" in r or "gap" in r for r in reasons)
    assert manifest.windows_expected == len(rows) + len(manifest.windows_skipped)


def test_gap_between_frames_is_reported(tmp_path, ray_local):
    write_test_frames(tmp_path / "frames", [T0, T0 + 16, T0 + 48, T0 + 64])
    manifest = run_preprocess(_config(), tmp_path / "frames", tmp_path / "out")
    assert manifest.frames_written == 4 and manifest.frames_failed == []
    skipped = [s for s in manifest.windows_skipped if "gap" in s["reason"]]
    assert any(T0 + 28 <= s["gps_start"] <= T0 + 50 for s in skipped)
    rows = _rows(tmp_path / "out")
    assert not ((rows.gps_start < T0 + 48) & (rows.gps_end > T0 + 32)).any()
    assert rows.gap.any()


def test_a_second_run_into_the_same_out_is_refused_or_replaces_never_mixes(tmp_path, ray_local):
    """A run's shards would sit beside an earlier run's (its blocks' files are not this
    run's): a re-run is refused unless --overwrite, which replaces the products (and
    leaves the user's own files)."""
    write_test_frames(tmp_path / "frames", [T0, T0 + 16])
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    first = run_preprocess(_config(), tmp_path / "frames", out)
    with pytest.raises(FileExistsError, match="--overwrite") as refused:
        run_preprocess(_config(), tmp_path / "frames", out)
    assert "shards" in str(refused.value) and str(out) in str(refused.value)
    assert len(_rows(out)) == first.windows_written  # the refused run wrote nothing
    again = run_preprocess(_config(), tmp_path / "frames", out, overwrite=True)
    assert len(_rows(out)) == again.windows_written == first.windows_written
    assert (out / "notes.txt").read_text() == "mine"


def test_channel_file_from_scan_selects_and_orders_channels(tmp_path, ray_local):
    write_test_frames(tmp_path / "frames", [T0, T0 + 16])
    selected = tmp_path / "selected_channels.json"
    selected.write_text(json.dumps({"channels": [{"name": "V1:AUX_B", "significance": 9.0}]}))
    from glitchflow.pipelines.preprocess import run_preprocess as run

    manifest = run(_config(), tmp_path / "frames", tmp_path / "out", str(selected))
    assert manifest.channels == [STRAIN, "V1:AUX_B"]
    assert _spectrogram(_rows(tmp_path / "out").iloc[0]).shape == (2, 64, 256)
    shutil.rmtree(tmp_path / "out")


def test_a_run_killed_mid_write_publishes_nothing_and_the_next_run_is_complete(tmp_path, ray_local):
    """preprocess writes into a staging directory and publishes shards, reports and then
    the manifest when complete: killed (SIGKILL) while writing, OUT holds no dataset, a
    reader refuses it, and the next run (no --overwrite needed) clears the dead run's
    staging and writes a complete dataset."""
    import os
    import signal
    import time

    from glitchflow.io.manifest import load_manifest
    from tests.conftest import start_cli

    write_test_frames(tmp_path / "frames", [T0 + 16 * k for k in range(8)])
    out = tmp_path / "out"
    args = [
        "preprocess",
        "--config",
        str(CONFIGS / "demo.yaml"),
        "--frames",
        str(tmp_path / "frames"),
        "--out",
        str(out),
        "--address",
        ray_local.get_runtime_context().gcs_address,
        "preprocess.frames_per_block=1",
        "preprocess.resources.workers=1",
    ]
    proc = start_cli(args, tmp_path / "preprocess.log")
    deadline = time.monotonic() + 240
    try:  # kill once the first frame's report is written, before the run can finish
        while not list(out.glob(".staging-preprocess-*/reports/*.json")):
            assert proc.poll() is None, (tmp_path / "preprocess.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no report written in 240 s"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (out / "manifest.json").exists() and not (out / "shards").exists()
    assert list(out.glob(".staging-preprocess-*"))
    with pytest.raises(FileNotFoundError, match="no manifest"):
        load_manifest(out)
    manifest = run_preprocess(_config(), tmp_path / "frames", out)
    assert manifest.frames_written == 8
    assert not list(out.glob(".staging-*"))  # the dead run's unpublished output is gone
    assert load_manifest(out).windows_written == len(_rows(out))


def test_an_actor_of_a_discarded_run_stops_without_writing(tmp_path, ray_local):
    """The actor of a killed run lives on in the cluster: once the next run discarded
    that run's staging directory, its next block raises, naming the directory, and
    neither shards nor reports bring the directory back."""
    from glitchflow.pipelines.preprocess import BlockConditioner
    from glitchflow.pipelines.staging import RunAbandonedError, discard, staging_dir

    write_test_frames(tmp_path / "frames", [T0, T0 + 16])
    frames = find_frames(tmp_path / "frames").frames
    staging = staging_dir(tmp_path / "out", "preprocess")
    (staging / "reports").mkdir()
    actor = BlockConditioner(
        config=_config().model_dump(mode="json"),
        frames=[(f.path, f.start, f.duration) for f in frames],
        channels=[STRAIN, "V1:AUX_A"],
        report_dir=str(staging / "reports"),
        shard_dir=str(staging / "shards"),
        rows_per_file=64,
        use_gpu=False,
        threads=1,
    )
    written = actor({"blocks": [json.dumps([[frames[0].path]])]})
    assert written["windows"][0] > 0 and len(list((staging / "reports").iterdir())) == 1
    assert discard(staging)
    with pytest.raises(RunAbandonedError, match=str(staging / "reports")):
        actor({"blocks": [json.dumps([[frames[1].path]])]})
    assert list((tmp_path / "out").iterdir()) == []


def test_readers_refuse_shards_that_do_not_match_the_manifest(tmp_path, ray_local):
    """A shard added by another run, a missing shard, or a tampered config: the dataset is
    refused with the reason, before training or generating on it."""
    from glitchflow.config import json_hash
    from glitchflow.io.manifest import load_manifest

    write_test_frames(tmp_path / "frames", [T0, T0 + 16])
    out = tmp_path / "out"
    manifest = run_preprocess(_config(), tmp_path / "frames", out)
    assert sum(manifest.shard_files.values()) == manifest.windows_written > 0
    assert load_manifest(out).channels == manifest.channels
    shard = sorted((out / "shards").glob("*.parquet"))[0]
    extra = out / "shards" / "zz-another-run.parquet"
    shutil.copy(shard, extra)
    with pytest.raises(ValueError, match="not of this run"):
        load_manifest(out)
    extra.unlink()
    shard.rename(shard.with_suffix(".bak"))
    with pytest.raises(ValueError, match="missing"):
        load_manifest(out)
    shard.with_suffix(".bak").rename(shard)
    original = (out / "manifest.json").read_text()
    # a dataset made before a config field existed: its config lacks the field (the
    # current default fills it) and its hash is of the config as it was
    older = json.loads(original)
    del older["config"]["train"]["loss"]["glitch_weight"]
    older["config_hash"] = json_hash(older["config"])
    (out / "manifest.json").write_text(json.dumps(older))
    assert load_manifest(out).windows_written == manifest.windows_written
    edited = json.loads(original)
    edited["config"]["signal"]["qtransform"]["time_step"] *= 2
    (out / "manifest.json").write_text(json.dumps(edited))
    with pytest.raises(ValueError, match="config_hash"):
        load_manifest(out)
