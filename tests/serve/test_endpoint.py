"""The HTTP endpoint over real HTTP on 127.0.0.1: answers, formats, bad input, auth, reload."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from glitchflow.config import load_config
from glitchflow.io.frame_writer import write_frame
from glitchflow.io.frames import find_frames, frame_name, read_frame
from glitchflow.pipelines.runtime import free_port
from glitchflow.serve.client import post_window
from glitchflow.serve.protocol import encode_binary
from tests.conftest import CONFIGS

pytestmark = pytest.mark.timeout(600)

TOKEN = "test-token-123"
T0 = 1_400_000_010.0  # on the 3 s stride grid of infer, inside the tiny twin


def call(url, path, body=None, content_type="application/json", token=TOKEN, method=None):
    headers = {"Content-Type": content_type} if body is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url + path, data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _deploy(tiny_model, tiny_subtraction, port: int, user_config: dict | None = None) -> str:
    """Deploy the tiny model on 2 replicas at ``port`` (again: an update in place)."""
    from glitchflow.serve.runner import start_endpoint

    summary, _ = tiny_model
    overrides = [
        f"serve.port={port}",
        "serve.max_request_mb=16",
        "serve.max_batch_size=4",
        "serve.num_replicas=2",  # reload must reach both
        "serve.cpus_per_replica=0.5",
        "serve.sync_interval_s=0.2",
        f"serve.clean_model={tiny_subtraction[0].model}",
    ]
    cfg = load_config(CONFIGS / "demo.yaml", overrides)
    return start_endpoint(
        cfg,
        summary.registered.uri,
        summary.tracking_uri,
        CONFIGS / "demo.yaml",
        overrides,
        env_vars={"GLITCHFLOW_SERVE_TOKEN": TOKEN},
        user_config=user_config,
    )


@pytest.fixture(scope="module")
def endpoint(tiny_model, tiny_subtraction, ray_local):
    from ray import serve

    url = _deploy(tiny_model, tiny_subtraction, free_port())
    status, info = call(url, "/v1/model")
    assert status == 200
    yield url, info, tiny_model[0]
    serve.shutdown()


def _announce_big_body(url: str, size: int):
    """POST with a Content-Length of ``size`` bytes but send only the first KiB: the server
    must refuse from the header (a client streaming the whole body may see a reset)."""
    import http.client
    from urllib.parse import urlparse

    parsed = urlparse(url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
    conn.putrequest("POST", "/v1/denoise")
    conn.putheader("Content-Type", "application/octet-stream")
    conn.putheader("Content-Length", str(size))
    conn.putheader("Authorization", f"Bearer {TOKEN}")
    conn.endheaders()
    conn.send(b"\0" * 1024)
    resp = conn.getresponse()
    status, body = resp.status, json.loads(resp.read() or b"{}")
    conn.close()
    return status, body


def _window(tiny_twin, info, window_start: float = T0) -> dict:
    """Every model channel from ``window_start`` - pad_before, as the endpoint wants it."""
    frames = find_frames(tiny_twin.frames[0].parent).frames
    start = window_start - info["pad_before_s"]
    out = {}
    for name in info["channels"]:
        x, rate, t0 = read_frame(frames[0], [name])[name]
        a = round((start - t0) * rate)
        out[name] = (rate, x[a : a + info["samples"][name]])
    return out


def _json(start, channels, **extra) -> bytes:
    body = {"gps_start": start, "channels": {}} | extra
    for name, (rate, x) in channels.items():
        body["channels"][name] = {"sample_rate": rate, "data": x.tolist()}
    return json.dumps(body).encode()


def test_model_description_health_and_auth(endpoint):
    url, info, summary = endpoint
    assert info["channels"][0] == "V1:Hrec_hoft_16384Hz" and len(info["channels"]) == 4
    assert info["version"] == summary.registered.version.__str__()
    assert info["request_duration_s"] == pytest.approx(
        info["pad_before_s"] + info["window_s"] + info["pad_after_s"]
    )
    assert call(url, "/healthz", token=None)[0] == 200
    status, body = call(url, "/v1/model", token=None)
    assert status == 401 and body["field"] == "authorization"
    assert call(url, "/v1/model", token="wrong")[0] == 401
    # the API description follows the token
    assert call(url, "/openapi.json", token=None)[0] == 401
    status, spec = call(url, "/openapi.json")
    assert status == 200 and "/v1/veto" in spec["paths"]


def test_off_loopback_needs_a_token_or_insecure(monkeypatch):
    from glitchflow.serve.runner import check_exposure

    monkeypatch.delenv("GLITCHFLOW_SERVE_TOKEN", raising=False)
    exposed = load_config(CONFIGS / "demo.yaml", ["serve.host=0.0.0.0"])
    with pytest.raises(PermissionError, match="GLITCHFLOW_SERVE_TOKEN"):
        check_exposure(exposed)
    check_exposure(exposed, {"GLITCHFLOW_SERVE_TOKEN": "t"})  # a token: allowed
    check_exposure(exposed, insecure=True)  # said out loud: allowed
    check_exposure(load_config(CONFIGS / "demo.yaml", ["serve.host=127.0.0.1"]))
    check_exposure(load_config(CONFIGS / "demo.yaml", ["serve.host=::1"]))


def test_json_and_binary_agree_and_equal_batch_inference(endpoint, tiny_twin, tmp_path):
    url, info, summary = endpoint
    channels = _window(tiny_twin, info)
    start = T0 - info["pad_before_s"]
    status, by_json = call(url, "/v1/denoise", _json(start, channels))
    assert status == 200, by_json
    status, by_binary = call(
        url, "/v1/denoise", encode_binary(start, channels), "application/octet-stream"
    )
    assert status == 200 and by_binary == by_json
    assert by_json["window_start"] == T0 and by_json["window_end"] == T0 + info["window_s"]
    # batch inference on a frame holding exactly this span gives the same decision
    from glitchflow.pipelines.infer import run_inference

    frames = tmp_path / "frames"
    frames.mkdir()
    span = (int(start), int(np.ceil(start + info["request_duration_s"])))
    source = find_frames(tiny_twin.frames[0].parent).frames[0]
    data = read_frame(source, info["channels"], *span)
    write_frame(
        frames / frame_name("V", "ONE", span[0], span[1] - span[0]),
        span[0],
        {n: (x, rate) for n, (x, rate, _) in data.items()},
    )
    cfg = load_config(CONFIGS / "demo.yaml", ["infer.write_gated_frames=false", "infer.images=0"])
    run_inference(cfg, frames, summary.best_checkpoint, tmp_path / "infer")
    (row,) = pd.read_csv(tmp_path / "infer" / "windows.csv").itertuples()
    assert row.gps_start == T0
    assert bool(row.veto) == by_json["veto"] and bool(row.cleaned) == by_json["cleaned"]
    for key in ("max_generated_snr2", "max_real_snr2", "max_residual_snr2"):
        assert getattr(row, key) == pytest.approx(by_json[key], rel=1e-4), key
    assert row.n_clusters == len(by_json["clusters"])
    # veto needs only the auxiliary channels, and gives the same veto
    aux = {n: v for n, v in channels.items() if n != info["channels"][0]}
    status, veto = call(url, "/v1/veto", _json(start, aux))
    assert status == 200 and veto["veto"] == by_json["veto"] and "cleaned" not in veto
    assert veto["max_generated_snr2"] == pytest.approx(by_json["max_generated_snr2"], rel=1e-6)


def test_denoise_subtracts_witnessed_glitches_and_returns_cleaned_strain(endpoint, tiny_twin):
    url, info, _ = endpoint
    assert info["subtraction"]["witnesses"] == [
        "V1:LSC_DARM_CORR",
        "V1:ENV_CEB_MAG_N",
        "V1:Sa_NE_F0_Z_500Hz",
    ]
    truth = pd.read_csv(tiny_twin.truth_path)
    frames = find_frames(tiny_twin.frames[0].parent).frames
    lo, hi = frames[0].start + info["pad_before_s"] + 1, frames[0].end - info["window_s"] - 3
    blips = truth[(truth.family == "blip") & truth.gps_peak.between(lo + 2, hi + 2)]
    peak = float(blips.sort_values("strain_snr").gps_peak.iloc[-1])
    window_start = float(np.floor(peak) - 2)
    start = window_start - info["pad_before_s"]
    channels = _window(tiny_twin, info, window_start)
    status, got = call(url, "/v1/denoise", _json(start, channels, return_cleaned_strain=True))
    assert status == 200, got
    sub = got["subtraction"]
    hit = [g for g in sub["glitches"] if abs(g["gps"] - peak) < 0.1]
    assert hit and hit[0]["subtracted"] and hit[0]["channel"] == "V1:LSC_DARM_CORR"
    # the loud blip is gone from the spectrogram recomputed on the cleaned strain
    assert sub["max_cleaned_snr2"] < 0.5 * got["max_real_snr2"]
    strain = info["channels"][0]
    cleaned = np.array(sub["cleaned_strain"]["data"])
    assert sub["cleaned_strain"]["gps_start"] == window_start
    assert len(cleaned) == round(info["window_s"] * info["sample_rates"][strain])
    a = round(info["pad_before_s"] * info["sample_rates"][strain])
    raw = channels[strain][1][a : a + len(cleaned)]
    assert 0 < np.abs(raw - cleaned).max() < np.abs(raw).max()
    # the binary layout's flag bit 1 asks for the same
    body = encode_binary(start, channels, return_cleaned_strain=True)
    status, by_binary = call(url, "/v1/denoise", body, "application/octet-stream")
    assert status == 200 and by_binary["subtraction"] == sub
    # and the binary answer layout carries the same samples as raw float64, no JSON lists
    answer = post_window(
        url, "/v1/denoise", info, window_start, channels, TOKEN, True, binary_answer=True
    )
    samples = answer["subtraction"]["cleaned_strain"]["data"]
    assert isinstance(samples, np.ndarray) and samples.dtype == np.float64
    np.testing.assert_array_equal(samples, cleaned)
    assert answer["veto"] == got["veto"] and answer["subtraction"]["glitches"] == sub["glitches"]


def test_spectrograms_on_request_and_concurrent_batched_requests(endpoint, tiny_twin):
    url, info, _ = endpoint
    channels = _window(tiny_twin, info)
    start = T0 - info["pad_before_s"]
    status, full = call(url, "/v1/denoise", _json(start, channels, return_spectrograms=True))
    assert status == 200
    bins = round(info["window_s"] / info["time_step_s"])
    assert np.array(full["generated"]).shape == (len(info["frequencies_hz"]), bins)
    assert np.array(full["cleaned"]).min() >= 0
    body = encode_binary(start, channels)
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(lambda _: call(url, "/v1/denoise", body, "application/octet-stream"), range(8))
        )
    assert all(status == 200 for status, _ in answers)
    # requests batch differently from run to run (batch size changes the float rounding of
    # the convolutions; the residual's glitch mask is a threshold, so its maximum can jump):
    # the same decision and the same generated and real maxima up to that rounding
    first = answers[0][1]
    for _, a in answers:
        assert a["veto"] == first["veto"]
        assert a["max_generated_snr2"] == pytest.approx(first["max_generated_snr2"], rel=1e-4)
        assert a["max_real_snr2"] == pytest.approx(first["max_real_snr2"], rel=1e-4)


@pytest.mark.parametrize(
    "case",
    ["missing", "extra", "rate", "length", "nan", "malformed", "content_type", "schema", "big"],
)
def test_bad_input_is_a_4xx_naming_the_field(endpoint, tiny_twin, case):
    url, info, _ = endpoint
    channels = _window(tiny_twin, info)
    start = T0 - info["pad_before_s"]
    strain, aux0 = info["channels"][0], info["channels"][1]
    content_type = "application/json"
    if case == "missing":
        body, expect, field = (
            _json(start, {k: v for k, v in channels.items() if k != aux0}),
            422,
            "channels",
        )
    elif case == "extra":
        body = _json(start, channels | {"V1:NOT_A_CHANNEL": (256.0, np.zeros(10))})
        expect, field = 422, "channels"
    elif case == "rate":
        rate, x = channels[aux0]
        body, expect, field = (
            _json(start, channels | {aux0: (rate / 2, x)}),
            422,
            f"channels.{aux0}.sample_rate",
        )
    elif case == "length":
        rate, x = channels[aux0]
        body, expect, field = (
            _json(start, channels | {aux0: (rate, x[:-5])}),
            422,
            f"channels.{aux0}.data",
        )
    elif case == "nan":
        rate, x = channels[strain]
        x = x.copy()
        x[100] = np.nan
        body = encode_binary(start, channels | {strain: (rate, x)})
        content_type, expect, field = "application/octet-stream", 422, f"channels.{strain}.data"
    elif case == "malformed":
        body, expect, field = b'{"gps_start": 1, "channels": {', 400, "body"
    elif case == "content_type":
        body, content_type, expect, field = b"x=1", "text/plain", 415, "content-type"
    elif case == "schema":
        body, expect, field = (
            json.dumps({"gps_start": "soon", "channels": {}}).encode(),
            422,
            "gps_start",
        )
    else:
        body, content_type, expect, field = None, "application/octet-stream", 413, "body"
    if body is None:  # 17 MiB announced: the answer comes before the body is sent
        status, answer = _announce_big_body(url, 17 * 2**20)
    else:
        status, answer = call(url, "/v1/denoise", body, content_type)
    assert status == expect, answer
    assert answer["field"] == field
    assert call(url, "/healthz", token=None)[0] == 200  # the replica survived


def _post_raw(url: str, path: str, body: bytes, content_type: str | None):
    """Status and raw body (a 5xx need not be JSON)."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    if content_type:
        headers["Content-Type"] = content_type
    req = urllib.request.Request(url + path, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_fuzzed_malformed_requests_never_get_a_5xx(endpoint, tiny_twin):
    """1,200 seeded malformed bodies (JSON and binary: nesting, huge numbers, wrong types,
    bad layouts, mutated valid bodies, wrong content types): each a 4xx naming the field (a
    mutation that stays valid may get a 200), never a 5xx; the replica keeps serving."""
    from collections import Counter

    from tests.serve.fuzz_bodies import malformed_requests

    url, info, _ = endpoint
    window = _window(tiny_twin, info)
    cases = list(malformed_requests(info, window, 1200, seed=7))

    def send(case):
        kind, content_type, body = case
        route = "/v1/veto" if len(body) % 2 else "/v1/denoise"
        return (kind, *_post_raw(url, route, body, content_type))

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(send, cases))
    errors = [(kind, status, body[:300]) for kind, status, body in answers if status >= 500]
    assert not errors, errors[:10]
    statuses = Counter(status for _, status, _ in answers)
    assert set(statuses) <= {200, 400, 413, 415, 422}, statuses
    assert statuses[200] < 0.1 * len(cases)
    for kind, status, body in answers:
        if status >= 400:
            assert json.loads(body)["field"], (kind, body[:300])
    kinds = Counter(kind.split(":")[0] for kind, _, _ in answers)
    assert kinds["json"] > 300 and kinds["binary"] > 300, kinds
    start = T0 - info["pad_before_s"]
    status, answer = call(url, "/v1/veto", encode_binary(start, window), "application/octet-stream")
    assert status == 200, answer  # the replica survived and still decides


def _replica_pids() -> list[int]:
    from ray.util.state import list_actors

    actors = list_actors(filters=[("state", "=", "ALIVE")], limit=1000)
    return [a.pid for a in actors if "GlitchflowEndpoint" in (a.class_name or "")]


@pytest.mark.slow
def test_soak_16_clients_valid_requests_no_errors_bounded_memory(endpoint, tiny_twin):
    """16 clients send valid veto/denoise requests (JSON and binary) for
    $GLITCHFLOW_SOAK_SECONDS (60 s): no error, no 5xx, both replicas alive, and the
    replicas' resident memory bounded (peak reported; the last 10 s within 25 % of the
    first 10 s).  Figures go to $GLITCHFLOW_SOAK_JSON when set."""
    import os
    import threading
    import time
    from collections import Counter

    import psutil

    url, info, _ = endpoint
    seconds = float(os.environ.get("GLITCHFLOW_SOAK_SECONDS", "60"))
    start = T0 - info["pad_before_s"]
    window = _window(tiny_twin, info)
    bodies = [
        ("/v1/veto", encode_binary(start, window), "application/octet-stream"),
        ("/v1/denoise", encode_binary(start, window), "application/octet-stream"),
        ("/v1/veto", _json(start, window), "application/json"),
    ]
    pids = _replica_pids()
    assert len(pids) == 2, pids
    procs = [psutil.Process(pid) for pid in pids]
    memory: list[tuple[float, int]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            memory.append((time.monotonic(), sum(p.memory_info().rss for p in procs)))
            time.sleep(0.5)

    statuses: Counter = Counter()
    latencies: list[float] = []
    lock = threading.Lock()
    t_end = time.monotonic() + seconds

    def client(k: int) -> None:
        i = k
        while time.monotonic() < t_end:
            route, body, content_type = bodies[i % len(bodies)]
            t = time.perf_counter()
            status, answer = call(url, route, body, content_type)
            with lock:
                statuses[status] += 1
                latencies.append(time.perf_counter() - t)
            assert status == 200, answer
            i += 1

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(client, range(16)))
    stop.set()
    sampler.join()
    first = max(m for t, m in memory if t < t0 + 10)
    last = max(m for t, m in memory if t > t0 + seconds - 10)
    figures = {
        "seconds": seconds,
        "clients": 16,
        "requests": sum(statuses.values()),
        "statuses": dict(statuses),
        "requests_per_second": sum(statuses.values()) / seconds,
        "p50_ms": 1e3 * float(np.percentile(latencies, 50)),
        "p99_ms": 1e3 * float(np.percentile(latencies, 99)),
        "replicas": len(pids),
        "replica_rss_peak_mib": max(m for _, m in memory) / 2**20,
        "replica_rss_first_10s_mib": first / 2**20,
        "replica_rss_last_10s_mib": last / 2**20,
    }
    print(json.dumps(figures))
    if os.environ.get("GLITCHFLOW_SOAK_JSON"):
        Path(os.environ["GLITCHFLOW_SOAK_JSON"]).write_text(json.dumps(figures, indent=2))
    assert set(statuses) == {200}, statuses
    assert all(p.is_running() for p in procs) and sorted(_replica_pids()) == sorted(pids)
    assert last <= 1.25 * first, figures


def _versions_seen(url: str, calls: int = 24) -> dict[str, str]:
    """replica id -> model version over ``calls`` health checks (the proxy spreads them)."""
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: call(url, "/healthz", token=None)[1], range(calls)))
    return {a["replica"]: a["model_version"] for a in answers}


def _until_all(url: str, version: str, timeout: float = 20.0) -> dict[str, str]:
    import time

    deadline = time.monotonic() + timeout
    while True:
        seen = _versions_seen(url)
        if (len(seen) == 2 and set(seen.values()) == {version}) or time.monotonic() > deadline:
            return seen
        time.sleep(0.2)


def test_reload_reaches_every_replica_and_user_config_reconfigures(
    endpoint, tiny_twin, tiny_model, tiny_subtraction
):
    """/v1/reload on one replica: both replicas serve the moved alias's version, and every
    answer's version is the one of the model that made it; then a new user_config (what
    ``serve deploy`` sends) switches both replicas to a pinned version in place."""
    import mlflow

    url, info, summary = endpoint
    mlflow.set_tracking_uri(summary.tracking_uri)  # the registry finds the logged model
    mlflow.set_registry_uri(summary.tracking_uri)  # through the global URIs
    client = mlflow.MlflowClient(summary.tracking_uri, registry_uri=summary.tracking_uri)
    name = summary.registered.name
    first = client.get_model_version_by_alias(name, "candidate")
    assert set(_until_all(url, str(first.version)).values()) == {str(first.version)}
    second = client.create_model_version(name, first.source, first.run_id)
    client.set_registered_model_alias(name, "candidate", second.version)
    try:
        status, answer = call(url, "/v1/reload", b"", method="POST")
        assert status == 200, answer
        assert answer["previous_version"] == str(first.version)
        assert answer["model_version"] == str(second.version)
        assert answer["generation"] >= 1
        seen = _until_all(url, str(second.version))
        assert len(seen) == 2 and set(seen.values()) == {str(second.version)}, seen
        start = T0 - info["pad_before_s"]
        body = encode_binary(start, _window(tiny_twin, info))
        status, decided = call(url, "/v1/veto", body, "application/octet-stream")
        assert status == 200 and decided["model_version"] == str(second.version)

        # serve deploy / serve.run with a new user_config: Serve reconfigures every replica
        port = int(url.rsplit(":", 1)[1])
        pinned = {"model": f"models:/{name}/{first.version}"}
        assert _deploy(tiny_model, tiny_subtraction, port, user_config=pinned) == url
        seen = _until_all(url, str(first.version))
        assert len(seen) == 2 and set(seen.values()) == {str(first.version)}, seen
    finally:
        client.set_registered_model_alias(name, "candidate", first.version)
