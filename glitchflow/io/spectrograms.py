"""Reading the inference spectrogram shards (Parquet) without Ray.

Ray Data writes fixed-shape numpy columns as a tensor extension type whose
storage is a list of flat values; :func:`read_columns` returns such columns
as ``(rows, *shape)`` numpy arrays with only pyarrow, so evaluation and
plotting need no cluster.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads


def _flat_values(array: pa.Array) -> np.ndarray:
    while isinstance(array.type, pa.ExtensionType):
        array = array.storage
    while (
        pa.types.is_list(array.type)
        or pa.types.is_large_list(array.type)
        or (pa.types.is_fixed_size_list(array.type))
    ):
        array = array.flatten()
    return array.to_numpy(zero_copy_only=False)


def tensor_column(table: pa.Table, name: str, shape: Sequence[int]) -> np.ndarray:
    """Column ``name`` of ``table`` as a ``(rows, *shape)`` array."""
    column = table.column(name)
    parts = [_flat_values(chunk) for chunk in column.chunks]
    flat = np.concatenate(parts) if parts else np.zeros(0)
    return flat.reshape(len(table), *shape)


def read_columns(
    directory: str | Path,
    columns: Sequence[str],
    gps_starts: Sequence[float] | None = None,
) -> pa.Table:
    """Columns of every Parquet file under ``directory``, sorted by ``gps_start``;
    only the rows whose ``gps_start`` is in ``gps_starts`` when given."""
    dataset = pads.dataset(str(directory), format="parquet")
    names = list(dict.fromkeys(["gps_start", *columns]))
    flt = None
    if gps_starts is not None:
        flt = pc.field("gps_start").isin(pa.array(np.asarray(gps_starts, dtype=float)))
    table = dataset.to_table(columns=names, filter=flt)
    return table.sort_by("gps_start")
