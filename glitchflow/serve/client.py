"""A small Python client of the endpoint (standard library HTTP, binary bodies).

info = get(url, "/v1/model")
channels = window_from_frames(frames_dir, info, window_start=1400000715.0)
answer = post_window(url, "/v1/denoise", info, window_start, channels)
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

import numpy as np

from glitchflow.io.frames import find_frames
from glitchflow.io.span import read_span
from glitchflow.serve.protocol import decode_answer, encode_binary


def _headers(token: str | None, content_type: str | None = None) -> dict:
    headers = {"Content-Type": content_type} if content_type else {}
    token = token or os.environ.get("GLITCHFLOW_SERVE_TOKEN")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def get(url: str, path: str, token: str | None = None) -> dict:
    req = urllib.request.Request(url + path, headers=_headers(token))
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


def window_from_frames(frames_dir, info: dict, window_start: float) -> dict:
    """``{channel: (rate, samples)}`` for the decision window starting at ``window_start``
    (GPS s), read from frames as the endpoint wants them (``GET /v1/model``)."""
    start = window_start - info["pad_before_s"]
    end = start + info["request_duration_s"]
    found = find_frames(frames_dir, start, end + 1)
    span = read_span(found.frames, info["channels"], start, end + 1)
    if len(span.segments) != 1 or span.segments[0].start > start:
        raise ValueError(f"frames in {frames_dir} do not cover [{start}, {end}) without a gap")
    seg = span.segments[0]
    out = {}
    for name in info["channels"]:
        rate = seg.rates[name]
        a = round((start - seg.start) * rate)
        out[name] = (rate, np.asarray(seg.data[name][a : a + info["samples"][name]]))
    return out


def post_window(
    url: str,
    path: str,
    info: dict,
    window_start: float,
    channels: dict,
    token=None,
    cleaned_strain: bool = False,
    binary_answer: bool = False,
) -> dict:
    """POST one window in the binary format; returns the decoded answer (raises on 4xx/5xx
    with the server's message).  ``cleaned_strain``: ask /v1/denoise for the cleaned
    strain samples; ``binary_answer``: take the binary answer layout (arrays arrive as
    numpy arrays, not lists)."""
    body = encode_binary(
        window_start - info["pad_before_s"], channels, return_cleaned_strain=cleaned_strain
    )
    headers = _headers(token, "application/octet-stream")
    if binary_answer:
        headers["Accept"] = "application/octet-stream"
    req = urllib.request.Request(url + path, data=body, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            raw = resp.read()
            return decode_answer(raw) if binary_answer else json.loads(raw)
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"{path}: HTTP {exc.code}: {exc.read().decode()[:500]}") from None


def main(argv: list[str] | None = None) -> int:
    """``python -m glitchflow.serve.client URL FRAMES GPS [--route denoise]``: read the
    decision window starting at GPS from FRAMES as the endpoint wants it, POST it in the
    binary layout and print the answer as JSON."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m glitchflow.serve.client", description=main.__doc__
    )
    parser.add_argument("url", help="the endpoint, e.g. http://127.0.0.1:8000")
    parser.add_argument("frames", help="directory of GWF frames that cover the window")
    parser.add_argument("gps", type=float, help="decision window start (GPS s)")
    parser.add_argument("--route", choices=("veto", "denoise"), default="veto")
    args = parser.parse_args(argv)
    url = args.url.rstrip("/")
    info = get(url, "/v1/model")
    channels = window_from_frames(args.frames, info, args.gps)
    answer = post_window(url, f"/v1/{args.route}", info, args.gps, channels)
    print(json.dumps(answer, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
