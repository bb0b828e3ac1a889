"""``glitchflow online`` on a live directory of 1-s frames: the same decisions as
``glitchflow infer``, gaps, late and corrupt frames, a kill and restart, and a model
promoted while the stream runs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from glitchflow.config import load_config
from glitchflow.io.frames import FrameFile, read_frame
from tests.conftest import CONFIGS, TINY_OVERRIDES, start_cli

pytestmark = pytest.mark.timeout(900)

STATE = "V1:DQ_GLITCHFLOW_STATE"
VERSION = "V1:GLITCHFLOW_MODEL_VERSION"
N_FRAMES = 30
ONLINE = ["online.late_horizon=4", "online.metrics_every=0.5", "online.flag_every=1"]


def _cfg(*extra: str):
    return load_config(CONFIGS / "demo.yaml", [*ONLINE, *extra])


@pytest.fixture(scope="module")
def live_twin(tmp_path_factory):
    """30 one-second frames of the tiny twin (every family present)."""
    from glitchflow.synth.twin import generate

    cfg = load_config(
        CONFIGS / "demo.yaml",
        [*TINY_OVERRIDES, "twin.frame_duration=1", f"twin.duration={N_FRAMES}"],
    )
    out = tmp_path_factory.mktemp("live_twin")
    return generate(cfg, out, progress=False).frames


def _states(out: Path) -> dict[float, tuple[np.ndarray, np.ndarray]]:
    """Output frame start -> (state samples, model version samples)."""
    found = {}
    for path in sorted((out / "frames").glob("*.gwf")):
        f = FrameFile.from_path(path)
        data = read_frame(f, [STATE, VERSION])
        found[f.start] = (data[STATE][0].astype(int), data[VERSION][0].astype(int))
    return found


def _log(out: Path) -> list[dict]:
    return [json.loads(ln) for ln in (out / "segments.jsonl").read_text().splitlines()]


def _feed(frames: list[Path], directory: Path, plan, pause: float = 0.15):
    """Copy frames into ``directory`` in a thread: ``plan`` is a list of frame indices,
    callables (run in order, e.g. waits) or ``("corrupt", index)``."""

    def run():
        for step in plan:
            if callable(step):
                step()
                continue
            if isinstance(step, tuple):
                src = frames[step[1]]
                tmp = directory / (src.name + ".part")
                tmp.write_bytes(src.read_bytes()[:4000])  # truncated: unreadable
                os.replace(tmp, directory / src.name)
            else:
                tmp = directory / (frames[step].name + ".part")
                shutil.copy(frames[step], tmp)
                os.replace(tmp, directory / frames[step].name)
            time.sleep(pause)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _wait_for(predicate, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting for the online service"
        time.sleep(0.05)


def _published(out: Path, start: float) -> bool:
    path = out / "segments.jsonl"
    return path.exists() and any(r["start"] >= start for r in _log(out))


@pytest.fixture(scope="module")
def reference(tiny_model, live_twin, ray_local, tmp_path_factory):
    """The online service over the complete directory, and infer on the same frames."""
    from glitchflow.pipelines.infer import run_inference
    from glitchflow.pipelines.online import run_online

    summary, _ = tiny_model
    frames = live_twin[0].parent
    out = tmp_path_factory.mktemp("online_ref")
    status = run_online(_cfg(), frames, summary.best_checkpoint, out, idle_exit=1.0)
    inf = tmp_path_factory.mktemp("online_infer")
    cfg = load_config(
        CONFIGS / "demo.yaml",
        [
            "infer.window=3",
            "infer.stride=3",
            "infer.frames_per_block=1",
            "infer.write_gated_frames=false",
            "infer.images=0",
        ],
    )
    run_inference(cfg, frames, summary.best_checkpoint, inf)
    return status, out, inf


def test_online_decides_as_infer_and_accounts_for_every_frame(reference):
    status, out, inf = reference
    assert status.frames_in == N_FRAMES == status.frames_analysed
    assert status.frames_failed == status.frames_skipped == status.frames_pending == 0
    # the same analysed time and the same veto segments as batch inference
    for name in ("live.csv", "vetoes.csv"):
        online, batch = pd.read_csv(out / name), pd.read_csv(inf / name)
        assert len(batch) and len(online) == len(batch), name
        np.testing.assert_allclose(online.to_numpy(), batch.to_numpy(), atol=1e-9)
    vetoes = pd.read_csv(inf / "vetoes.csv").to_numpy()
    live = pd.read_csv(inf / "live.csv").to_numpy()
    # one output frame per input frame; the state channel says what happened to each sample
    states = _states(out)
    assert len(states) == N_FRAMES
    start0 = min(states)
    assert sorted(states) == [start0 + k for k in range(N_FRAMES)]
    for start, (state, version) in states.items():
        assert set(np.unique(state)) <= {0, 1, 3}
        lo = start + np.arange(len(state)) / 64.0  # sample k covers [lo, lo + 1/64)
        hi = lo + 1 / 64.0
        in_live = np.zeros(len(lo), bool)
        in_veto = np.zeros(len(lo), bool)
        for a, b in live:
            in_live |= (lo >= a) & (hi <= b)
        for a, b in vetoes:  # a sample that overlaps a veto is vetoed
            in_veto |= (hi > a) & (lo < b)
        np.testing.assert_array_equal(state & 1, in_live.astype(int))
        np.testing.assert_array_equal((state & 2) // 2, (in_veto & in_live).astype(int))
        assert np.all(version == -1)  # a checkpoint file, not a registry version
    # the first window lacks its padding before the stream: not analysed, as in infer
    assert states[start0][0].max() == 0
    # segment log, DQ flag, status file, TensorBoard and MLflow
    log = _log(out)
    assert [r["start"] for r in log] == sorted(states)
    from gwpy.segments import DataQualityFlag

    flag = DataQualityFlag.read(str(out / "vetoes.h5"))
    assert abs(flag.known) == pytest.approx(float(np.sum(np.diff(live))))
    assert len(flag.active) == len(vetoes)
    saved = json.loads((out / "status.json").read_text())
    assert saved["frames_in"] == N_FRAMES and saved["status_url"].startswith("http://127.0.0.1:")
    assert saved["latency_p50_s"] is not None
    assert any((out / "tensorboard").glob("events.out.tfevents.*"))
    assert (out / "mlflow.db").is_file()


def test_gaps_late_and_corrupt_frames(reference, live_twin, ray_local, tmp_path):
    """Frame 10 arrives late but within the horizon (analysed); 15 is corrupt (failed);
    20 arrives after its time was declared missing (skipped); the stream goes on."""
    from glitchflow.pipelines.online import run_online

    _, ref_out, _ = reference
    live, out = tmp_path / "live", tmp_path / "out"
    live.mkdir()
    base = FrameFile.from_path(live_twin[0]).start

    def late_20():
        _wait_for(lambda: _published(out, base + 20))

    plan = [
        *range(10),
        11,
        12,
        lambda: time.sleep(0.5),  # the service has seen 11 and 12 before 10 arrives
        10,
        13,
        14,
        ("corrupt", 15),
        *range(16, 20),
        *range(21, N_FRAMES),
        late_20,
        20,
    ]
    feeder = _feed(live_twin, live, plan)
    status = run_online(_cfg(), live, _model_path(reference), out, idle_exit=2.0)
    feeder.join(timeout=60)
    assert status.frames_in == N_FRAMES
    assert status.frames_analysed == N_FRAMES - 2
    assert [f["file"] for f in status.failed] == [live_twin[15].name]
    assert status.skipped_by_reason == {"late": 1}
    assert status.skipped[0]["file"] == live_twin[20].name
    states, ref = _states(out), _states(ref_out)
    assert sorted(states) == sorted(ref)  # every slot published once, gap included
    kinds = {r["start"] - base: r["kind"] for r in _log(out)}
    assert kinds[15] == "failed" and kinds[20] == "missing" and kinds[10] == "frame"
    assert states[base + 15][0].max() == 0 and states[base + 20][0].max() == 0
    # far from the bad frames, the decisions are those of the complete stream
    for k in [*range(0, 9), 27, 28, 29]:
        np.testing.assert_array_equal(states[base + k][0], ref[base + k][0])


def _model_path(reference) -> str:
    _, out, _ = reference
    return json.loads((out / "status.json").read_text())["model_uri"]


def test_kill_and_restart_publish_every_frame_once(reference, live_twin, ray_local, tmp_path):
    from glitchflow.pipelines.online import run_online

    _, ref_out, _ = reference
    live, out = tmp_path / "live", tmp_path / "out"
    live.mkdir()
    address = ray_local.get_runtime_context().gcs_address
    args = [
        "online",
        "--config",
        str(CONFIGS / "demo.yaml"),
        "--frames",
        str(live),
        "--out",
        str(out),
        "--model",
        _model_path(reference),
        "--address",
        address,
        *ONLINE,
    ]
    proc = start_cli(args, tmp_path / "online.log")
    feeder = _feed(live_twin, live, list(range(N_FRAMES)), pause=0.4)
    base = FrameFile.from_path(live_twin[0]).start
    try:
        _wait_for(lambda: _published(out, base + 6), timeout=300)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # killed mid-stream, no chance to clean up
        proc.wait()
    first = len(_log(out))
    assert 0 < first < N_FRAMES, (tmp_path / "online.log").read_text()[-3000:]
    feeder.join(timeout=60)
    status = run_online(_cfg(), live, _model_path(reference), out, idle_exit=1.5)
    assert status.resumed
    log_lines = _log(out)
    starts = [r["start"] for r in log_lines]
    assert starts == [base + k for k in range(N_FRAMES)]  # none twice, none missing
    states, ref = _states(out), _states(ref_out)
    assert sorted(states) == sorted(ref)
    for start in ref:
        np.testing.assert_array_equal(states[start][0], ref[start][0])
    assert not list((out / "frames").glob("*.part"))


def test_a_promoted_model_is_picked_up_between_frames(
    reference, tiny_model, live_twin, ray_local, tmp_path
):
    import mlflow

    from glitchflow.pipelines.online import run_online

    summary, _ = tiny_model
    _, ref_out, _ = reference
    uri, name = summary.tracking_uri, summary.registered.name
    client = mlflow.MlflowClient(uri, registry_uri=uri)
    first = client.get_model_version(name, str(summary.registered.version))
    # same weights (same run and checkpoint), a new version
    mlflow.set_tracking_uri(uri)  # the registry looks the logged model up through it
    second = client.create_model_version(name, first.source, run_id=first.run_id)
    client.set_registered_model_alias(name, "online-test", first.version)
    live, out = tmp_path / "live", tmp_path / "out"
    live.mkdir()
    base = FrameFile.from_path(live_twin[0]).start

    def promote():
        _wait_for(lambda: _published(out, base + 10))
        client.set_registered_model_alias(name, "online-test", second.version)
        time.sleep(0.8)  # the service polls every 0.2 s

    feeder = _feed(live_twin, live, [*range(15), promote, *range(15, N_FRAMES)], pause=0.1)
    status = run_online(
        _cfg("online.model_poll=0.2"),
        live,
        f"models:/{name}@online-test",
        out,
        tracking_uri=uri,
        idle_exit=6.0,
    )
    feeder.join(timeout=60)
    assert status.model_version == str(second.version), status
    assert [c["to"] for c in status.model_changes] == [str(second.version)]
    states, ref = _states(out), _states(ref_out)
    assert sorted(states) == sorted(ref), status  # no gap in the output across the swap
    versions = [int(states[s][1][0]) for s in sorted(states)]
    assert versions[0] == int(first.version) and versions[-1] == int(second.version)
    assert versions == sorted(versions)  # switched once, between two frames
    for start in ref:  # same weights: same decisions
        np.testing.assert_array_equal(states[start][0], ref[start][0])
    # the status route answers while the service runs (checked after: the file it wrote)
    assert json.loads((out / "status.json").read_text())["model_version"] == str(second.version)


def test_status_route_serves_the_metrics(reference, live_twin, ray_local, tmp_path):
    from glitchflow.pipelines.online import OnlineService

    live = tmp_path / "live"
    live.mkdir()
    for path in live_twin[:8]:
        shutil.copy(path, live / path.name)
    service = OnlineService(_cfg(), live, _model_path(reference), tmp_path / "out", idle_exit=3.0)
    answers = []

    def ask():
        _wait_for(lambda: (tmp_path / "out" / "status.json").exists())
        url = json.loads((tmp_path / "out" / "status.json").read_text())["status_url"]
        with urllib.request.urlopen(url, timeout=10) as resp:
            answers.append(json.loads(resp.read()))

    asker = threading.Thread(target=ask, daemon=True)
    asker.start()
    status = service.run()
    asker.join(timeout=30)
    (answer,) = answers
    assert answer["frames_in"] <= status.frames_in == 8
    assert {"backlog_s", "latency_p99_s", "model_version", "frames_pending"} <= set(answer)
