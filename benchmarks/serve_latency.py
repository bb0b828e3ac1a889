"""Endpoint latency and throughput: closed-loop load on 127.0.0.1 against Ray Serve.

A model for 8 auxiliary channels at the twin's native rates (random weights:
latency does not depend on them) behind the real application; veto requests
carry one window of the 8 channels.  Measured in the same run:

* the in-process floor: ``DecisionEngine.run`` on one request (no HTTP, no Serve);
* p50 / p95 / p99 latency, throughput and errors at concurrency 1 and 16, JSON
  and binary bodies, with ``@serve.batch`` on (``serve.max_batch_size``) and off
  (max batch 1), with each request's own PSD (the default) and with kept PSDs
  (``serve.psd.mode: kept``, the fast path; float32 samples as well);
* the floor of a no-op Ray Serve route on the same proxy (it receives the body).

Each load is bounded: a fixed number of requests and a time limit.  Targets
(2 CPUs): p99 <= 50 ms at concurrency 1; batched >= 3x unbatched throughput at
concurrency 16; zero errors.

    .venv/bin/python benchmarks/serve_latency.py --json bench-out/serve_latency.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import random_checkpoint, write_json  # noqa: E402
from glitchflow.config import load_config  # noqa: E402
from glitchflow.pipelines.runtime import free_port  # noqa: E402
from glitchflow.serve.protocol import encode_binary  # noqa: E402

AUX = [
    "V1:LSC_DARM_CORR",
    "V1:LSC_MICH_ERR",
    "V1:LSC_PRCL_ERR",
    "V1:Sa_NE_F0_Z_500Hz",
    "V1:Sa_WE_F0_X_500Hz",
    "V1:Sc_MC_MIR_Z_CORR",
    "V1:ENV_CEB_MAG_N",
    "V1:ENV_NEB_SEIS_N",
]


def request_bodies(info: dict, seed: int = 0) -> tuple[bytes, bytes, dict]:

    rng = np.random.default_rng(seed)
    channels = {
        name: (info["sample_rates"][name], rng.standard_normal(info["samples"][name]))
        for name in AUX
    }
    gps = 1_400_000_001.0
    as_json = json.dumps(
        {
            "gps_start": gps,
            "channels": {
                n: {"sample_rate": r, "data": x.tolist()} for n, (r, x) in channels.items()
            },
        }
    ).encode()
    return as_json, encode_binary(gps, channels), channels


def load(url: str, body: bytes, content_type: str, concurrency: int, n: int, limit: float):
    """Closed loop: ``concurrency`` clients send until ``n`` requests or ``limit`` seconds."""
    latencies, errors = [], []
    lock = threading.Lock()
    sent = [0]
    deadline = time.monotonic() + limit

    def client() -> None:
        while True:
            with lock:
                if sent[0] >= n or time.monotonic() > deadline:
                    return
                sent[0] += 1
            req = urllib.request.Request(
                url + "/v1/veto", data=body, headers={"Content-Type": content_type}
            )
            t = time.perf_counter()
            try:
                with urllib.request.urlopen(req, timeout=60) as resp:
                    resp.read()
                    ok = resp.status == 200
            except Exception as exc:
                ok = False
                errors.append(repr(exc)[:200])
            dt = time.perf_counter() - t
            with lock:
                if ok:
                    latencies.append(dt)
                elif not errors:
                    errors.append("non-200")

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for _ in range(concurrency):
            pool.submit(client)
    wall = time.perf_counter() - t0
    lat = np.array(latencies) * 1000
    return {
        "concurrency": concurrency,
        "requests": len(latencies) + len(errors),
        "errors": len(errors),
        "p50_ms": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
        "p95_ms": float(np.percentile(lat, 95)) if len(lat) else float("nan"),
        "p99_ms": float(np.percentile(lat, 99)) if len(lat) else float("nan"),
        "throughput_rps": len(latencies) / wall,
        "first_error": errors[0] if errors else None,
    }


def stage_times(engine, item, body: bytes, repeats: int = 10) -> dict:
    """Median milliseconds of each step of one request inside the replica: parse (binary
    body -> validated request), resample, whiten, Q-transform, model, decide (clusters
    and the veto from the generated spectrogram) and serialise (the answer as JSON)."""
    from glitchflow.models.decisions import decide
    from glitchflow.serve.engine import as_response
    from glitchflow.serve.protocol import parse

    cond, names = engine.cond, engine.channels[1:]
    arrays = [torch.from_numpy(item.data[n][None]) for n in names]
    rates = [engine.rates[n] for n in names]
    x = cond.stack(arrays, rates)
    white = cond.whiten(x, rates)
    spec = cond(x, rates)[..., engine.first_bin : engine.first_bin + engine.bins].float()
    predictor = engine.predictor
    generated = predictor.generate(spec)
    starts = np.array([item.gps_start + engine.pad_before])
    freqs = np.asarray(cond.frequencies)[predictor.rows]
    decision = decide(None, generated, starts, cond.time_step, freqs, predictor.point)[0]

    def parse_body():
        parsed = parse("application/octet-stream", body)
        return engine.validate(parsed.gps_start, parsed.channels, need_strain=False)

    steps = {
        "parse": parse_body,
        "resample": lambda: cond.stack(arrays, rates),
        "whiten": lambda: cond.whiten(x, rates),
        "qtransform": lambda: cond.transform(white, rates),
        "model": lambda: predictor.generate(spec),
        "decide": lambda: decide(None, generated, starts, cond.time_step, freqs, predictor.point),
        "serialise": lambda: json.dumps(as_response(decision, False)).encode(),
    }
    out = {}
    for name, step in steps.items():
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            with torch.no_grad():
                step()
            times.append(time.perf_counter() - t)
        out[name] = float(np.median(times) * 1000)
    return out


def kept_psd_floor(model, window: float, item, repeats: int = 30) -> tuple[float, float]:
    """In-process milliseconds per request with kept PSDs (``serve.psd.mode: kept``),
    alone and in a batch of 16, after the PSDs are made."""
    from glitchflow.config import ServePsdConfig
    from glitchflow.models.checkpoint import read_checkpoint
    from glitchflow.serve.engine import DecisionEngine

    engine = DecisionEngine(read_checkpoint(model), window, psd=ServePsdConfig(mode="kept"))
    for _ in range(8):  # the first PSDs, then warm
        engine.run([item])
    alone = []
    for _ in range(repeats):
        t = time.perf_counter()
        engine.run([item])
        alone.append(time.perf_counter() - t)
    batch = []
    for _ in range(5):
        t = time.perf_counter()
        engine.run([item] * 16)
        batch.append(time.perf_counter() - t)
    return float(np.median(alone) * 1000), float(np.median(batch) * 1000 / 16)


def noop_app():
    """A Serve application that receives the request body (its bytes counted, not
    parsed) and answers a constant: the floor of HTTP and Ray Serve carrying the
    endpoint's body on this machine, measured beside the endpoint in the same run (a
    route that leaves the body unread is ~6 ms faster at p50: Serve then never moves it
    from the proxy to the replica).  The handler's ``Request`` annotation is set as a
    class, not the string this module's ``from __future__ import annotations`` makes: a
    replica unpickles the class without the benchmark's globals to resolve it in."""
    from fastapi import FastAPI
    from ray import serve
    from starlette.requests import Request

    api = FastAPI()

    @serve.deployment(max_ongoing_requests=32)
    @serve.ingress(api)
    class Noop:
        async def veto(self, request) -> dict:
            size = 0
            async for chunk in request.stream():
                size += len(chunk)
            return {"veto": False, "bytes": size}

        veto.__annotations__["request"] = Request
        veto = api.post("/v1/veto")(veto)

    return Noop.bind()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"))
    parser.add_argument("--window", type=float, default=1.5, help="decision window (s)")
    parser.add_argument("--requests", type=int, default=200, help="per load (bounded)")
    parser.add_argument("--limit", type=float, default=60.0, help="seconds per load (bounded)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per replica")
    args = parser.parse_args()

    import ray
    from ray import serve

    from glitchflow.models.checkpoint import read_checkpoint
    from glitchflow.serve.engine import DecisionEngine
    from glitchflow.serve.runner import start_endpoint

    cfg = load_config(args.config)
    tmp = Path(tempfile.mkdtemp(prefix="gf-serve-bench-"))
    model = random_checkpoint(cfg, AUX, tmp)
    torch.set_num_threads(args.threads)
    engine = DecisionEngine(read_checkpoint(model), args.window)
    info = engine.describe()
    as_json, as_binary, channels = request_bodies(info)
    item = engine.validate(1_400_000_001.0, channels, need_strain=False)
    engine.run([item])  # warm-up
    floor = []
    for _ in range(30):
        t = time.perf_counter()
        engine.run([item])
        floor.append(time.perf_counter() - t)
    floor_ms = float(np.median(floor) * 1000)
    breakdown = stage_times(engine, item, as_binary)
    batch16 = []
    for _ in range(5):
        t = time.perf_counter()
        engine.run([item] * 16)
        batch16.append(time.perf_counter() - t)
    floor_batch_ms = float(np.median(batch16) * 1000 / 16)
    floor_kept_ms, floor_kept_batch_ms = kept_psd_floor(model, args.window, item)

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    port = free_port()
    as_float32 = encode_binary(1_400_000_001.0, channels, dtype="float32")
    bodies = {
        "octet-stream": (as_binary, "application/octet-stream"),
        "octet-stream-f32": (as_float32, "application/octet-stream"),
        "json": (as_json, "application/json"),
    }
    results = []
    # (batched, PSD mode, bodies): the defaults (each request's own PSD, as infer), then the
    # fast path (kept PSDs), with float32 samples too (the twin's auxiliary channels are
    # float32 in the frames: float64 only doubles the body)
    endpoints = [
        (True, "request", ("octet-stream", "json")),
        (False, "request", ("octet-stream", "json")),
        (True, "kept", ("octet-stream", "octet-stream-f32")),
        (False, "kept", ("octet-stream-f32",)),
    ]
    noop = None
    for batched, psd_mode, formats in endpoints:
        overrides = [
            f"serve.port={port}",
            f"serve.window={args.window}",
            f"serve.threads={args.threads}",
            f"serve.max_batch_size={16 if batched else 1}",
            "serve.max_ongoing_requests=32",
            f"serve.psd.mode={psd_mode}",
        ]
        url = start_endpoint(
            load_config(args.config, overrides), str(model), None, args.config, overrides
        )
        if noop is None:  # the no-op route beside the endpoint, on the same proxy
            serve.run(noop_app(), name="noop", route_prefix="/noop")
            load(url + "/noop", as_binary, "application/octet-stream", 2, 10, 30)  # warm-up
            noop = load(url + "/noop", as_binary, "application/octet-stream", 1, 200, 60)
            print(json.dumps({"noop": noop}))
            serve.delete("noop")
        for fmt in formats:
            body, kind = bodies[fmt]
            load(url, body, kind, 2, 20, 30)  # warm-up (and the kept PSDs' first requests)
            for concurrency in (1, 16):
                res = load(url, body, kind, concurrency, args.requests, args.limit)
                res |= {"batched": batched, "format": fmt, "psd": psd_mode}
                results.append(res)
                print(json.dumps(res))
        serve.delete("glitchflow")
    serve.shutdown()
    ray.shutdown()

    def pick(batched, fmt, c, psd="request"):
        return next(
            r
            for r in results
            if (r["batched"], r["format"], r["concurrency"], r["psd"]) == (batched, fmt, c, psd)
        )

    ratio = (
        pick(True, "octet-stream", 16)["throughput_rps"]
        / pick(False, "octet-stream", 16)["throughput_rps"]
    )
    ratio_fast = (
        pick(True, "octet-stream-f32", 16, "kept")["throughput_rps"]
        / pick(False, "octet-stream-f32", 16, "kept")["throughput_rps"]
    )
    p99_default = pick(True, "octet-stream", 1)["p99_ms"]
    p99_fast = pick(True, "octet-stream-f32", 1, "kept")["p99_ms"]
    p99_c1 = p99_fast
    report = {
        "window_s": args.window,
        "request_seconds": info["request_duration_s"],
        "aux_channels": len(AUX),
        "binary_bytes": len(as_binary),
        "json_bytes": len(as_json),
        "in_process_ms_per_request": floor_ms,
        "in_process_ms_per_request_batch16": floor_batch_ms,
        "in_process_breakdown_ms": breakdown,
        "in_process_kept_psd_ms_per_request": floor_kept_ms,
        "in_process_kept_psd_ms_per_request_batch16": floor_kept_batch_ms,
        "noop_route_c1_binary": noop,
        "http_and_serve_ms_p50": pick(True, "octet-stream", 1)["p50_ms"] - floor_ms,
        "loads": results,
        "fast_path": "serve.psd.mode=kept, float32 samples, batched",
        "p99_ms_concurrency1_binary": p99_c1,
        "p99_ms_concurrency1_binary_default": p99_default,
        "batched_over_unbatched_throughput_c16": ratio_fast,
        "batched_over_unbatched_throughput_c16_default": ratio,
        "errors": int(sum(r["errors"] for r in results)),
        "targets": {"p99_ms_c1": 50.0, "batched_over_unbatched": 3.0, "errors": 0},
    }
    print(
        f"\nin-process floor: {floor_ms:.1f} ms/request alone, "
        f"{floor_batch_ms:.1f} ms/request in a batch of 16; "
        + ", ".join(f"{k} {v:.1f} ms" for k, v in breakdown.items())
    )
    print(
        f"with kept PSDs: {floor_kept_ms:.1f} ms/request alone, "
        f"{floor_kept_batch_ms:.1f} ms/request in a batch of 16"
    )
    head = ("batched", "psd", "format", "conc", "n", "err", "p50 ms", "p95 ms", "p99 ms", "req/s")
    widths = (8, 8, 17, 5, 5, 4, 8, 8, 8, 7)
    print(" ".join(f"{h:>{w}}" for h, w in zip(head, widths)))
    for r in results:
        print(
            f"{r['batched']!s:>8} {r['psd']:>8} {r['format']:>17} {r['concurrency']:>5} "
            f"{r['requests']:>5} {r['errors']:>4} {r['p50_ms']:>8.1f} {r['p95_ms']:>8.1f} "
            f"{r['p99_ms']:>8.1f} {r['throughput_rps']:>7.1f}"
        )
    print(
        f"no-op Serve route (reads the binary body, concurrency 1): p50 {noop['p50_ms']:.1f} ms, "
        f"p99 {noop['p99_ms']:.1f} ms; the endpoint's p50 less its in-process floor: "
        f"{report['http_and_serve_ms_p50']:.1f} ms"
    )
    print(
        f"p99 at concurrency 1 (binary): fast path {p99_c1:.1f} ms, defaults "
        f"{p99_default:.1f} ms (target <= 50)"
    )
    print(
        f"batched / unbatched throughput at concurrency 16: fast path {ratio_fast:.2f}x, "
        f"defaults {ratio:.2f}x (target >= 3)"
    )
    write_json(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
