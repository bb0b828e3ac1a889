"""Writing GWF frames through lal + lalframe directly.

gwpy's writer goes through astropy units and the whole gwpy package: 0.8 s of imports
the first time a fresh Ray worker writes a frame (every ``clean``, ``infer`` and
``generate`` actor) and 50 ms of conversion per frame.  This writer makes the same
frames (processed-data time series, LAL units, detector flags from the channel
prefixes, lalframe's own per-type compression) from numpy arrays.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

#: numpy dtype -> LAL type name of the Create*TimeSeries / FrameAdd*TimeSeriesProcData pair
LAL_TYPE_NAMES = {
    np.dtype(np.int16): "INT2",
    np.dtype(np.int32): "INT4",
    np.dtype(np.int64): "INT8",
    np.dtype(np.uint16): "UINT2",
    np.dtype(np.uint32): "UINT4",
    np.dtype(np.uint64): "UINT8",
    np.dtype(np.float32): "REAL4",
    np.dtype(np.float64): "REAL8",
    np.dtype(np.complex64): "COMPLEX8",
    np.dtype(np.complex128): "COMPLEX16",
}

#: unit symbols -> powers of LAL's base units (m, kg, s, A, K, strain, count)
UNIT_SYMBOLS: dict[str, dict[str, int]] = {
    "m": {"m": 1},
    "kg": {"kg": 1},
    "s": {"s": 1},
    "A": {"A": 1},
    "K": {"K": 1},
    "strain": {"strain": 1},
    "count": {"count": 1},
    "counts": {"count": 1},
    "ct": {"count": 1},
    "Hz": {"s": -1},
    "T": {"kg": 1, "s": -2, "A": -1},
    "N": {"kg": 1, "m": 1, "s": -2},
    "V": {"kg": 1, "m": 2, "s": -3, "A": -1},
    "W": {"kg": 1, "m": 2, "s": -3},
    "rad": {},
}
_BASE_ORDER = ("m", "kg", "s", "A", "K", "strain", "count")
_TOKEN = re.compile(r"^([A-Za-z]+)(?:\^(-?\d+))?$")


def lal_unit_string(unit: str | None) -> str:
    """``unit`` (``'m/s^2'``, ``'T'``, ``'counts'``, ``'strain'``; None or '' for none) as
    a LAL unit string in base units (``'m s^-2'``, ``'kg s^-2 A^-1'``), as gwpy writes it.
    Raises ValueError naming the unit when a symbol is not known."""
    powers: dict[str, int] = {}
    parts = (unit or "").split("/")
    for k, part in enumerate(parts):
        sign = 1 if k == 0 else -1
        for token in part.replace("**", "^").replace("*", " ").split():
            if token == "1" and k == 0:
                continue
            match = _TOKEN.match(token)
            if not match or match.group(1) not in UNIT_SYMBOLS:
                raise ValueError(f"unit {unit!r}: unknown symbol {token!r} for a frame")
            power = sign * int(match.group(2) or 1)
            for base, p in UNIT_SYMBOLS[match.group(1)].items():
                powers[base] = powers.get(base, 0) + p * power
    return " ".join(
        base if powers[base] == 1 else f"{base}^{powers[base]}"
        for base in _BASE_ORDER
        if powers.get(base, 0)
    )


def _detector_flags(names) -> int:
    import lal

    prefixes = [d.frDetector.prefix for d in lal.CachedDetectors]
    flags = 0
    for ifo in {n.split(":", 1)[0] for n in names if ":" in n}:
        if ifo in prefixes:
            flags |= 1 << 2 * prefixes.index(ifo)
    return flags


def write_frame(
    path: str | os.PathLike,
    gps_start: float,
    channels: dict[str, tuple[np.ndarray, float]],
    units: dict[str, str] | None = None,
) -> None:
    """Write ``{name: (samples (n,), sample_rate_Hz)}`` starting at ``gps_start`` (GPS s) as
    one GWF file, atomically (``path`` appears complete or not at all).  ``units``: per
    channel, e.g. ``'strain'``, ``'m/s^2'``.  Raises ValueError naming the channel for a
    sample type or unit a frame cannot hold."""
    import lal
    import lalframe

    epoch = lal.LIGOTimeGPS(gps_start)
    duration = max(len(data) / rate for data, rate in channels.values())
    frame = lalframe.FrameNew(epoch, duration, "glitchflow", 0, 0, _detector_flags(channels))
    for name, (data, rate) in channels.items():
        data = np.ascontiguousarray(data)
        kind = LAL_TYPE_NAMES.get(data.dtype)
        if kind is None:
            raise ValueError(f"{name}: samples of type {data.dtype} cannot be written to a frame")
        try:
            unit = lal.Unit(lal_unit_string((units or {}).get(name)))
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
        create = getattr(lal, f"Create{kind}TimeSeries")
        series = create(name, epoch, 0.0, 1.0 / rate, unit, len(data))
        series.data.data = data
        getattr(lalframe, f"FrameAdd{kind}TimeSeriesProcData")(frame, series)
    tmp = Path(path).with_suffix(".gwf.part")
    lalframe.FrameWrite(frame, str(tmp))
    os.replace(tmp, path)
