"""Request formats of the endpoint: JSON and a compact binary layout (never pickle).

JSON (``application/json``)::

    {"gps_start": 1400000000.0,
     "return_spectrograms": false, "return_cleaned_strain": false,
     "channels": {"V1:LSC_DARM_CORR": {"sample_rate": 1024.0, "data": [..]}, ...}}

Binary (``application/octet-stream``), little-endian::

    header   4s  magic b"GFW1"
             I   flags (bit 0: return spectrograms, bit 1: return cleaned strain)
             d   gps_start (GPS s)
             I   number of channels
    channel  H   name length in bytes, then the UTF-8 name
             B   dtype: 0 = float32, 1 = float64
             d   sample rate (Hz)
             I   number of samples, then the samples

Both parse to the same :class:`ParsedRequest`, so they give identical answers
(send float64 for bit-identical input).  Errors name the field.

Answers are JSON, or with ``Accept: application/octet-stream`` a binary layout
whose arrays (spectrograms, cleaned strain) are raw little-endian samples a
client maps straight into numpy (:func:`decode_answer`)::

    header   4s  magic b"GFA1"
             I   length of the JSON part in bytes
    json         the answer, each array replaced by
                 {"$array": k, "dtype": "<f4" | "<f8", "shape": [...]}
    arrays       array k at the next multiple of 8 bytes, in order
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, Field, ValidationError

from glitchflow.serve.engine import RequestError

MAGIC = b"GFW1"
ANSWER_MAGIC = b"GFA1"
ANSWER_HEADER = struct.Struct("<4sI")
HEADER = struct.Struct("<4sIdI")
CHANNEL = struct.Struct("<BdI")
DTYPES = {0: np.dtype("<f4"), 1: np.dtype("<f8")}
#: more channels than any model takes: refused before reading them
MAX_CHANNELS = 1024


class ChannelData(BaseModel):
    sample_rate: float = Field(gt=0, description="native sample rate (Hz)")
    data: list[float] = Field(description="samples from gps_start, at sample_rate")


class WindowRequestModel(BaseModel):
    """JSON body of /v1/veto and /v1/denoise."""

    model_config = {"extra": "forbid"}

    gps_start: float = Field(description="GPS time of the first sample of every channel (s)")
    channels: dict[str, ChannelData] = Field(description="channel name -> samples")
    return_spectrograms: bool = Field(False, description="denoise: include the spectrograms")
    return_cleaned_strain: bool = Field(
        False, description="denoise: include the cleaned strain samples of the decision window"
    )


@dataclass
class ParsedRequest:
    gps_start: float
    channels: dict[str, tuple[float, np.ndarray]]
    return_spectrograms: bool
    return_cleaned_strain: bool = False


def parse_json(body: bytes) -> ParsedRequest:
    try:
        raw = json.loads(body)
    except RecursionError:
        raise RequestError("body", "JSON nested too deeply", 400) from None
    except ValueError as exc:  # syntax, bad UTF-8, integers past Python's digit limit
        raise RequestError("body", f"malformed JSON: {str(exc)[:200]}", 400) from None
    try:
        model = WindowRequestModel.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "body"
        raise RequestError(field, first["msg"], 422) from None
    return ParsedRequest(
        model.gps_start,
        {
            n: (c.sample_rate, np.asarray(c.data, dtype=np.float64))
            for n, c in model.channels.items()
        },
        model.return_spectrograms,
        model.return_cleaned_strain,
    )


def _bad(field: str, message: str) -> RequestError:
    return RequestError(field, message, 400)


def parse_binary(body: bytes) -> ParsedRequest:
    view = memoryview(body)
    if len(view) < HEADER.size:
        raise RequestError(
            "body", f"{len(view)} bytes: shorter than the {HEADER.size}-byte header", 400
        )
    magic, flags, gps_start, n_channels = HEADER.unpack_from(view, 0)
    if magic != MAGIC:
        raise RequestError("body", f"bad magic {magic!r}, expected {MAGIC!r}", 400)
    if n_channels > MAX_CHANNELS:
        raise RequestError("channels", f"{n_channels} channels declared (at most {MAX_CHANNELS})")
    offset = HEADER.size
    channels: dict[str, tuple[float, np.ndarray]] = {}
    for k in range(n_channels):
        field = f"channels[{k}]"
        try:
            (n_name,) = struct.unpack_from("<H", view, offset)
            offset += 2
            name = bytes(view[offset : offset + n_name]).decode("utf-8")
            offset += n_name
            code, rate, n = CHANNEL.unpack_from(view, offset)
            offset += CHANNEL.size
        except (struct.error, UnicodeDecodeError) as exc:
            raise RequestError(
                field, f"truncated or malformed channel header ({exc})", 400
            ) from None
        dtype = DTYPES.get(code)
        if dtype is None:
            raise RequestError(f"{field}.dtype", f"unknown dtype code {code}", 400)
        end = offset + n * dtype.itemsize
        if end > len(view):
            raise RequestError(
                f"channels.{name}.data", f"{n} samples declared, body too short", 400
            )
        data = np.frombuffer(view[offset:end], dtype=dtype).astype(np.float64)
        offset = end
        if name in channels:
            raise RequestError(f"channels.{name}", "given twice", 400)
        channels[name] = (float(rate), data)
    if offset != len(view):
        raise RequestError(
            "body", f"{len(view) - offset} trailing bytes after the last channel", 400
        )
    return ParsedRequest(float(gps_start), channels, bool(flags & 1), bool(flags & 2))


def encode_binary(
    gps_start: float,
    channels: dict[str, tuple[float, np.ndarray]],
    return_spectrograms: bool = False,
    dtype: str = "float64",
    return_cleaned_strain: bool = False,
) -> bytes:
    """Client side: the binary body for ``channels`` ``{name: (rate, samples)}``."""
    code = 1 if dtype == "float64" else 0
    flags = int(return_spectrograms) | 2 * int(return_cleaned_strain)
    parts = [HEADER.pack(MAGIC, flags, float(gps_start), len(channels))]
    for name, (rate, data) in channels.items():
        raw = name.encode("utf-8")
        values = np.ascontiguousarray(data, dtype=DTYPES[code])
        parts += [struct.pack("<H", len(raw)), raw, CHANNEL.pack(code, float(rate), len(values))]
        parts.append(values.tobytes())
    return b"".join(parts)


def parse(content_type: str | None, body: bytes) -> ParsedRequest:
    """Dispatch on the content type; 415 for anything else."""
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind == "application/json":
        return parse_json(body)
    if kind == "application/octet-stream":
        return parse_binary(body)
    raise RequestError(
        "content-type",
        f"{content_type!r} is not supported: use application/json or application/octet-stream",
        415,
    )


def jsonable(answer):
    """The answer with numpy arrays as (nested) lists: what the JSON layout sends."""
    if isinstance(answer, dict):
        return {k: jsonable(v) for k, v in answer.items()}
    if isinstance(answer, list):
        return [jsonable(v) for v in answer]
    if isinstance(answer, (np.ndarray, np.generic)):
        return answer.tolist()
    return answer


def encode_answer(answer: dict) -> bytes:
    """Server side: the binary answer layout (module docstring) of ``answer``."""
    arrays: list[np.ndarray] = []

    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items()}
        if isinstance(value, list):
            return [strip(v) for v in value]
        if isinstance(value, np.ndarray):
            little = value.astype(value.dtype.newbyteorder("<"), copy=False)
            arrays.append(np.ascontiguousarray(little))
            return {"$array": len(arrays) - 1, "dtype": little.dtype.str, "shape": value.shape}
        if isinstance(value, np.generic):
            return value.item()
        return value

    head = json.dumps(strip(answer)).encode("utf-8")
    parts = [ANSWER_HEADER.pack(ANSWER_MAGIC, len(head)), head]
    size = ANSWER_HEADER.size + len(head)
    for values in arrays:
        gap = -size % 8
        parts += [b"\0" * gap, values.tobytes()]
        size += gap + values.nbytes
    return b"".join(parts)


def decode_answer(body: bytes) -> dict:
    """Client side: a binary answer back to a dict, arrays as read-only numpy views of
    ``body`` (no copy)."""
    magic, length = ANSWER_HEADER.unpack_from(body, 0)
    if magic != ANSWER_MAGIC:
        raise ValueError(f"not a glitchflow binary answer (magic {magic!r})")
    start = ANSWER_HEADER.size
    head = json.loads(body[start : start + length].decode("utf-8"))
    specs: dict[int, dict] = {}

    def collect(value):
        if isinstance(value, dict) and "$array" in value:
            specs[int(value["$array"])] = value
        elif isinstance(value, (dict, list)):
            for v in value.values() if isinstance(value, dict) else value:
                collect(v)

    collect(head)
    views, offset = {}, start + length
    for k in sorted(specs):  # the arrays follow the JSON in index order, 8-byte aligned
        dtype, shape = np.dtype(specs[k]["dtype"]), specs[k]["shape"]
        count = int(np.prod(shape, dtype=np.int64))
        offset += -offset % 8
        views[k] = np.frombuffer(body, dtype, count, offset).reshape(shape)
        offset += count * dtype.itemsize

    def restore(value):
        if isinstance(value, dict) and "$array" in value:
            return views[int(value["$array"])]
        if isinstance(value, dict):
            return {k: restore(v) for k, v in value.items()}
        if isinstance(value, list):
            return [restore(v) for v in value]
        return value

    return restore(head)


def wants_binary(accept: str | None) -> bool:
    """Whether an ``Accept`` header asks for the binary answer layout."""
    kinds = [part.split(";")[0].strip().lower() for part in (accept or "").split(",")]
    return "application/octet-stream" in kinds
