"""Online service against the live twin: real-time pace, latency, backlog, kill and restart.

The live twin (``glitchflow synth --realtime --frame-duration 1``, the science
configuration's channels and Virgo-like glitch rate) writes 1-s frames at the
wall-clock pace; ``glitchflow online`` (its own process and Ray instance) follows
the directory with a model over strain + the three witnesses the scan selects.
Half-way through, the service is killed with SIGKILL and started again.  After
the stream ends, ``glitchflow infer`` runs over the same frames
(``infer.frames_per_block=1`` and the online window and stride) and its
``live.csv``/``vetoes.csv`` are compared with the online ones.

Figures: per-frame latency (frame file appeared -> output frame written) p50 /
p99, overall and in steady state (frames that arrived while the service was
down or catching up after the restart are reported apart); the floor the
decision physically needs (the Conditioner's edge after the frame, in whole
frames) and the latency beyond it; backlog (newest data - published output)
sampled from the status route, first vs last minute; frames in = published;
frames lost or published twice across the restart; equality with infer.

Targets (2 CPUs): real time for 10 minutes with no growing backlog; p50 <= 2 s
and p99 <= 5 s beyond the floor; 0 frames lost or duplicated; identical to infer.

    .venv/bin/python benchmarks/online_latency.py --minutes 10 --json bench-out/online.json

The model has random weights unless ``--model`` names one: latency does not
depend on the weights, but a random model vetoes nearly everything, which
makes the equality check weak; the figures quoted in the README use the
model trained on ``configs/science.yaml`` (``benchmarks/veto_quality.py``
trains it), whose veto fires on a fraction of a percent of the time.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import random_checkpoint, write_json  # noqa: E402
from glitchflow.config import load_config  # noqa: E402

CONFIG = ROOT / "configs" / "science.yaml"
WITNESSES = ["V1:LSC_DARM_CORR", "V1:Sa_NE_F0_Z_500Hz", "V1:ENV_CEB_MAG_N"]
GPS = 1400170000
SEED = 9001


def _popen(args: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "glitchflow.cli", *args],
        stdout=log.open("a"),
        stderr=subprocess.STDOUT,
        env=os.environ | {"PYTHONPATH": str(ROOT)},
        start_new_session=True,
    )


def _status_url(out: Path, timeout: float = 180.0, not_before: float = 0.0) -> str:
    deadline = time.time() + timeout
    path = out / "status.json"
    while time.time() < deadline:
        if path.exists() and path.stat().st_mtime >= not_before:
            try:
                return json.loads(path.read_text())["status_url"]
            except (json.JSONDecodeError, KeyError):
                pass
        time.sleep(0.2)
    raise RuntimeError(f"the online service did not start (see {out.parent / 'online.log'})")


def _get(url: str) -> dict | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return json.loads(resp.read())
    except OSError:
        return None


def _online(args, frames: Path, model: Path, out: Path, log: Path) -> subprocess.Popen:
    return _popen(
        [
            "online",
            "--config",
            str(CONFIG),
            "--frames",
            str(frames),
            "--model",
            str(model),
            "--out",
            str(out),
            "--idle-exit",
            "6",
            "online.metrics_every=5",
            "online.flag_every=30",
            f"online.window={args.window}",
            f"online.stride={args.window}",
        ],
        log,
    )


def run(args) -> dict:
    work = Path(args.workdir or tempfile.mkdtemp(prefix="online-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    cfg = load_config(CONFIG)
    model = Path(args.model) if args.model else random_checkpoint(cfg, WITNESSES, work)
    frames, out, log = work / "twin" / "frames", work / "online", work / "online.log"
    frames.mkdir(parents=True, exist_ok=True)
    seconds = int(args.minutes * 60)
    service = _online(args, frames, model, out, log)
    t_start = time.time()
    url = _status_url(out)
    print(f"service up in {time.time() - t_start:.1f} s; streaming {seconds} s of 1-s frames")
    synth = _popen(
        [
            "synth",
            "--config",
            str(CONFIG),
            "--out",
            str(work / "twin"),
            "--realtime",
            "--frame-duration",
            "1",
            "--quiet",
            f"seed={SEED}",
            f"twin.gps_start={GPS}",
            f"twin.duration={seconds}",
        ],
        work / "synth.log",
    )
    t0 = time.time()
    samples, killed_at, restarted_at = [], None, None
    while synth.poll() is None:
        s = _get(url)
        if s:
            samples.append({"wall": time.time() - t0, **s})
        if killed_at is None and time.time() - t0 > seconds / 2:
            os.killpg(service.pid, signal.SIGKILL)
            service.wait()
            killed_at = time.time()
            print(f"killed the service at {killed_at - t0:.0f} s; restarting")
            service = _online(args, frames, model, out, log)
            url = _status_url(out, not_before=killed_at)
            restarted_at = time.time()
            print(f"restarted in {restarted_at - killed_at:.1f} s")
        time.sleep(1.0)
    service.wait(timeout=600)
    stream_wall = time.time() - t0
    records = [json.loads(ln) for ln in (out / "segments.jsonl").read_text().splitlines()]
    inputs = sorted(frames.glob("*.gwf"))
    return _figures(
        args, cfg, model, work, records, inputs, samples, killed_at, restarted_at, t0, stream_wall
    )


def _figures(
    args, cfg, model, work, records, inputs, samples, killed_at, restarted_at, t0, stream_wall
) -> dict:
    from glitchflow.signal.conditioner import Conditioner

    starts = [r["start"] for r in records]
    expected = [GPS + k for k in range(len(inputs))]
    duplicates = len(starts) - len(set(starts))
    lost = sorted(set(expected) - set(starts))
    edge = Conditioner(cfg.signal).edge_seconds
    floor = math.ceil(edge - 1e-9)  # whole 1-s frames of data after the frame
    lat = pd.DataFrame(
        [{"start": r["start"], "latency": r["latency_s"]} for r in records if r["latency_s"]]
    )
    appeared = {Path(p).name: p.stat().st_ctime for p in inputs}
    lat["appeared"] = [appeared.get(r["frame"], np.nan) for r in records if r["latency_s"]]
    lat["published"] = lat.appeared + lat.latency
    # frames caught by the kill: not yet published when it came, up to the first frame
    # after the restart published at the steady pace again
    lat["recovering"] = False
    if killed_at:
        after = lat[lat.published > killed_at]
        calm = after[(after.appeared > restarted_at) & (after.latency <= floor + args.window + 1)]
        until = calm.appeared.min() if len(calm) else np.inf
        lat["recovering"] = (lat.published > killed_at) & (lat.appeared < until)
    # the last frames wait for --idle-exit to end the stream: not the live pace either
    tail = GPS + len(inputs) - math.ceil(args.window + edge)
    lat["stream_end"] = lat.start >= tail
    steady = lat[~lat.recovering & ~lat.stream_end]

    def pct(series, q):
        return round(float(np.percentile(series, q)), 3) if len(series) else None

    backlog = pd.DataFrame([{"wall": s["wall"], "backlog": s["backlog_s"]} for s in samples])
    first = backlog[backlog.wall < 60].backlog
    last = backlog[backlog.wall > backlog.wall.max() - 60].backlog
    same = _compare_with_infer(args, work, model)
    figures = {
        "stream_seconds": len(inputs),
        "stream_wall_seconds": round(stream_wall, 1),
        "frames_in": len(inputs),
        "frames_published": len(set(starts)),
        "frames_lost": len(lost),
        "frames_duplicated": duplicates,
        "floor_s": floor,
        "edge_s": edge,
        "window_s": args.window,
        "latency_p50_s": pct(steady.latency, 50),
        "latency_p99_s": pct(steady.latency, 99),
        "latency_max_s": pct(steady.latency, 100),
        "beyond_floor_p50_s": None if steady.empty else round(pct(steady.latency, 50) - floor, 3),
        "beyond_floor_p99_s": None if steady.empty else round(pct(steady.latency, 99) - floor, 3),
        "all_frames_latency_p50_s": pct(lat.latency, 50),
        "all_frames_latency_p99_s": pct(lat.latency, 99),
        "frames_recovering_after_restart": int(lat.recovering.sum()),
        "frames_at_stream_end": int(lat.stream_end.sum()),
        "steady_frames": len(steady),
        "restart_seconds": round(restarted_at - killed_at, 1) if killed_at else None,
        "backlog_first_minute_s": round(float(first.mean()), 2) if len(first) else None,
        "backlog_last_minute_s": round(float(last.mean()), 2) if len(last) else None,
        "backlog_max_s": round(float(backlog.backlog.max()), 2) if len(backlog) else None,
        "identical_to_infer": same["identical"],
        "veto_segments": same.get("veto_segments"),
        "deadtime": None if same.get("deadtime") is None else round(same["deadtime"], 4),
        "model": str(model),
        "infer": same,
    }
    targets = {
        "real_time_no_growing_backlog": figures["backlog_last_minute_s"] is not None
        and figures["backlog_last_minute_s"] <= figures["backlog_first_minute_s"] + 1.0,
        "p50_beyond_floor_le_2s": (figures["beyond_floor_p50_s"] or 99) <= 2.0,
        "p99_beyond_floor_le_5s": (figures["beyond_floor_p99_s"] or 99) <= 5.0,
        "no_frame_lost_or_duplicated": not lost and not duplicates,
        "identical_to_infer": same["identical"],
    }
    return {"figures": figures, "targets": targets, "workdir": str(work)}


def _compare_with_infer(args, work: Path, model: Path) -> dict:
    inf = work / "infer"
    log = work / "infer.log"
    t0 = time.time()
    proc = _popen(
        [
            "infer",
            "--config",
            str(CONFIG),
            "--frames",
            str(work / "twin" / "frames"),
            "--model",
            str(model),
            "--out",
            str(inf),
            f"infer.window={args.window}",
            f"infer.stride={args.window}",
            "infer.frames_per_block=1",
            "infer.write_gated_frames=false",
            "infer.images=0",
        ],
        log,
    )
    proc.wait()
    out = {"wall_seconds": round(time.time() - t0, 1), "returncode": proc.returncode}
    if proc.returncode:
        return out | {"identical": False}
    seconds = {}
    for name in ("live.csv", "vetoes.csv"):
        a = pd.read_csv(work / "online" / name).to_numpy()
        b = pd.read_csv(inf / name).to_numpy()
        out[name] = {"online": len(a), "infer": len(b)}
        out[f"{name}_identical"] = a.shape == b.shape and bool(np.allclose(a, b, atol=1e-9))
        seconds[name] = float(np.sum(np.diff(a, axis=1))) if len(a) else 0.0
    out["identical"] = out["live.csv_identical"] and out["vetoes.csv_identical"]
    # a veto that fires everywhere (random weights) makes equality trivial: say how much
    out["veto_segments"] = out["vetoes.csv"]["online"]
    out["deadtime"] = seconds["vetoes.csv"] / max(seconds["live.csv"], 1e-9)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="stream length")
    parser.add_argument("--window", type=float, default=3.0, help="online/infer window (s)")
    parser.add_argument("--model", default=None, help="checkpoint (default: random weights)")
    parser.add_argument("--workdir", default=None, help="keep the run here")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args()
    report = run(args)
    f = report["figures"]
    print(f"{'figure':38s} value")
    for key, value in f.items():
        if key != "infer":
            print(f"{key:38s} {value}")
    print("targets:", json.dumps(report["targets"]))
    write_json(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
