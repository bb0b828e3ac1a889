"""Seeded malformed request bodies for the endpoint (JSON and the binary layout).

:func:`malformed_requests` yields ``(kind, content_type, body)``; every one is
wrong in some way (syntax, types, sizes, values, layout) or a random mutation
of a valid body, so the endpoint must answer each with a 4xx (or, for a
mutation that happens to stay valid, a 200), never a 5xx.
"""

from __future__ import annotations

import json
import struct

import numpy as np

from glitchflow.serve.protocol import CHANNEL, HEADER, MAGIC, encode_binary

JSON = "application/json"
BINARY = "application/octet-stream"


def _nested(depth: int, open_: str = "[", close: str = "]") -> bytes:
    return (open_ * depth + close * depth).encode()


def _json_cases(rng: np.random.Generator, info: dict, valid: dict) -> list[tuple[str, bytes]]:
    name = info["channels"][1]
    rate = info["sample_rates"][name]
    n = info["samples"][name]
    huge = "9" * int(rng.integers(4400, 6000))
    return [
        ("nested-array", _nested(int(rng.integers(2_000, 200_000)))),
        ("nested-object", ('{"a":' * int(rng.integers(2_000, 50_000)) + "1").encode()),
        ("huge-int-gps", f'{{"gps_start": {huge}, "channels": {{}}}}'.encode()),
        (
            "huge-int-rate",
            f'{{"gps_start": 1, "channels": {{"{name}": '
            f'{{"sample_rate": {huge}, "data": [1]}}}}}}'.encode(),
        ),
        ("huge-float", b'{"gps_start": 1e999, "channels": {}}'),
        ("not-json", rng.bytes(int(rng.integers(1, 2000)))),
        ("empty", b""),
        ("truncated", json.dumps(valid).encode()[: int(rng.integers(1, 200))]),
        ("wrong-type-gps", json.dumps({"gps_start": "now", "channels": {}}).encode()),
        ("wrong-type-channels", json.dumps({"gps_start": 1.0, "channels": [1, 2]}).encode()),
        ("missing-channels", json.dumps({"gps_start": 1.0}).encode()),
        ("extra-field", json.dumps({"gps_start": 1.0, "channels": {}, "x": 1}).encode()),
        ("array-body", b"[1, 2, 3]"),
        ("null-body", b"null"),
        (
            "unknown-channel",
            json.dumps(
                {"gps_start": 1.0, "channels": {"V1:NOPE": {"sample_rate": 1.0, "data": [1.0]}}}
            ).encode(),
        ),
        (
            "negative-rate",
            json.dumps(
                {"gps_start": 1.0, "channels": {name: {"sample_rate": -rate, "data": [0.0] * 4}}}
            ).encode(),
        ),
        (
            "short-data",
            json.dumps(
                {"gps_start": 1.0, "channels": {name: {"sample_rate": rate, "data": [0.0] * 7}}}
            ).encode(),
        ),
        (
            "nan-data",
            json.dumps(
                {
                    "gps_start": 1.0,
                    "channels": {name: {"sample_rate": rate, "data": [float("nan")]}},
                }
            ).encode(),
        ),
        (
            "string-data",
            json.dumps(
                {"gps_start": 1.0, "channels": {name: {"sample_rate": rate, "data": ["x"] * 3}}}
            ).encode(),
        ),
        (
            "nested-data",
            json.dumps(
                {"gps_start": 1.0, "channels": {name: {"sample_rate": rate, "data": [[1.0]] * 3}}}
            ).encode(),
        ),
        ("inf-gps", b'{"gps_start": Infinity, "channels": {}}'),
        ("bad-utf8", b'{"gps_start": 1.0, "channels": {"\xff\xfe": 1}}'),
        (
            "long-data-small",
            json.dumps(
                {
                    "gps_start": 1.0,
                    "channels": {name: {"sample_rate": rate, "data": [0.5] * (n + 1)}},
                }
            ).encode(),
        ),
    ]


def _binary_cases(rng: np.random.Generator, info: dict) -> list[tuple[str, bytes]]:
    name = info["channels"][1].encode()
    good_header = HEADER.pack(MAGIC, 0, 1.0, 1)

    def channel(n_declared: int, n_sent: int, code: int = 1, rate: float = 1.0, raw=name):
        data = np.zeros(n_sent, dtype="<f8").tobytes()
        return struct.pack("<H", len(raw)) + raw + CHANNEL.pack(code, rate, n_declared) + data

    return [
        ("bad-magic", HEADER.pack(b"GFW9", 0, 1.0, 0)),
        ("short-header", good_header[: int(rng.integers(0, HEADER.size))]),
        ("random", rng.bytes(int(rng.integers(1, 4000)))),
        ("unknown-dtype", good_header + channel(1, 1, code=int(rng.integers(2, 256)))),
        ("length-past-body", good_header + channel(int(rng.integers(10, 2**32)), 3)),
        ("duplicate-names", HEADER.pack(MAGIC, 0, 1.0, 2) + channel(2, 2) + channel(2, 2)),
        ("huge-channel-count", HEADER.pack(MAGIC, 0, 1.0, int(rng.integers(5000, 2**32)))),
        ("name-past-body", good_header + struct.pack("<H", 60000) + b"V1"),
        ("bad-utf8-name", good_header + channel(1, 1, raw=b"\xff\xfe\xfd")),
        ("trailing-bytes", good_header + channel(1, 1) + rng.bytes(int(rng.integers(1, 50)))),
        ("nan-rate", good_header + channel(4, 4, rate=float("nan"))),
        ("nan-gps", HEADER.pack(MAGIC, 0, float("nan"), 0)),
        ("zero-channels", HEADER.pack(MAGIC, 0, 1.0, 0)),
    ]


def _mutate(rng: np.random.Generator, body: bytes) -> bytes:
    """Flip, drop or insert a few bytes, or cut the body short."""
    data = bytearray(body)
    how = int(rng.integers(4))
    if how == 0:
        for _ in range(int(rng.integers(1, 8))):
            data[int(rng.integers(len(data)))] = int(rng.integers(256))
    elif how == 1:
        cut = int(rng.integers(len(data)))
        data = data[:cut]
    elif how == 2:
        at = int(rng.integers(len(data)))
        data[at:at] = rng.bytes(int(rng.integers(1, 16)))
    else:
        at = int(rng.integers(min(len(data), 64)))  # the header and first channel header
        data[at] = int(rng.integers(256))
    return bytes(data)


def malformed_requests(info: dict, window: dict, n: int, seed: int = 0):
    """``n`` seeded malformed requests ``(kind, content_type, body)``; about one in ten is a
    mutated valid binary body (float32, so bodies stay small)."""
    rng = np.random.default_rng(seed)
    valid_json = {
        "gps_start": 1.0,
        "channels": {c: {"sample_rate": r, "data": [0.0] * 8} for c, (r, _) in window.items()},
    }
    valid_binary = encode_binary(1.0, window, dtype="float32")
    content_types = [None, "text/plain", "application/xml", "multipart/form-data"]
    for _ in range(n):
        roll = rng.uniform()
        if roll < 0.45:
            cases = _json_cases(rng, info, valid_json)
            kind, body = cases[int(rng.integers(len(cases)))]
            yield f"json:{kind}", JSON, body
        elif roll < 0.85:
            cases = _binary_cases(rng, info)
            kind, body = cases[int(rng.integers(len(cases)))]
            yield f"binary:{kind}", BINARY, body
        elif roll < 0.95:
            yield "binary:mutated", BINARY, _mutate(rng, valid_binary)
        else:
            ctype = content_types[int(rng.integers(len(content_types)))]
            yield f"content-type:{ctype}", ctype, b'{"gps_start": 1.0, "channels": {}}'
