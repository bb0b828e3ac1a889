"""The inference spectrogram shards (Parquet): written and read with pyarrow alone.

:func:`write_shards` stores a batch of windows (scalar columns and fixed-shape
``(rows, *shape)`` arrays) as Parquet files of at most ``rows_per_file`` rows,
each written atomically under a name the caller chooses, so a retried block
replaces its own files instead of adding to them.  Fixed-shape columns are
fixed-size lists of their flat values, the shape kept in the field's metadata;
:func:`read_columns` and :func:`tensor_column` read them back as ``(rows,
*shape)`` arrays (and Ray Data's tensor extension type too), so evaluation and
plotting need no cluster.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from glitchflow.io.atomic import atomic_path

#: field metadata key holding a fixed-shape column's per-row shape (e.g. b"64,256")
SHAPE_KEY = b"shape"


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


def tensor_column(table: pa.Table, name: str, shape: Sequence[int] | None = None) -> np.ndarray:
    """Column ``name`` of ``table`` as a ``(rows, *shape)`` array; ``shape`` defaults to
    the per-row shape :func:`write_shards` kept in the field's metadata."""
    if shape is None:
        metadata = table.schema.field(name).metadata or {}
        if SHAPE_KEY not in metadata:
            raise ValueError(f"column {name!r} keeps no shape in its metadata: pass shape")
        shape = tuple(int(d) for d in metadata[SHAPE_KEY].decode().split(","))
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


def _arrow_column(name: str, values: np.ndarray) -> tuple[pa.Field, pa.Array]:
    """One numpy column as an Arrow field and array: 1-D as is (objects as strings or
    Python values), more dimensions as fixed-size lists of each row's flat values."""
    if values.ndim == 1:
        array = pa.array(values.tolist() if values.dtype == object else values)
        return pa.field(name, array.type), array
    shape = values.shape[1:]
    width = int(np.prod(shape))
    flat = pa.array(np.ascontiguousarray(values).reshape(-1))
    array = pa.FixedSizeListArray.from_arrays(flat, width)
    metadata = {SHAPE_KEY: ",".join(str(d) for d in shape).encode()}
    return pa.field(name, array.type, metadata=metadata), array


def write_shards(
    directory: str | Path, stem: str, columns: dict[str, np.ndarray], rows_per_file: int
) -> list[Path]:
    """Write ``columns`` (each ``(rows, ...)``, the same ``rows``) with
    :func:`write_table_shards`, fixed-shape columns as fixed-size lists with their shape
    in the field's metadata.  Returns the paths (none for zero rows)."""
    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"columns of different lengths: {lengths}")
    if not lengths or not next(iter(lengths.values())):
        return write_table_shards(directory, stem, None, rows_per_file)
    fields, arrays = zip(*(_arrow_column(n, np.asarray(v)) for n, v in columns.items()))
    table = pa.Table.from_arrays(list(arrays), schema=pa.schema(list(fields)))
    return write_table_shards(directory, stem, table, rows_per_file)


def block_stem(gps_start: float) -> str:
    """File stem of a block's shards: ``windows-<GPS start of its first frame>``."""
    return "windows-" + f"{gps_start:.3f}".rstrip("0").rstrip(".")


def write_table_shards(
    directory: str | Path, stem: str, table: pa.Table | None, rows_per_file: int
) -> list[Path]:
    """Write ``table`` as ``directory/stem-KKKKK.parquet`` files of at most
    ``rows_per_file`` rows; each file appears whole or not at all, and files of ``stem``
    from an earlier write that this one did not replace are removed (a retried block
    replaces its own files).  ``directory`` is created if missing, its parent must exist
    (:mod:`glitchflow.pipelines.staging`).  Returns the paths (none for ``None`` or zero
    rows)."""
    if rows_per_file < 1:
        raise ValueError(f"rows_per_file must be >= 1, got {rows_per_file}")
    rows = 0 if table is None else table.num_rows
    directory = Path(directory)
    directory.mkdir(exist_ok=True)  # not its parents: a discarded run's must stay gone
    paths = []
    for k, first in enumerate(range(0, rows, rows_per_file)):
        path = directory / f"{stem}-{k:05d}.parquet"
        with atomic_path(path) as tmp:
            pq.write_table(table.slice(first, rows_per_file), tmp)
        paths.append(path)
    own = re.compile(re.escape(stem) + r"-\d{5}\.parquet")
    for stale in {p for p in directory.iterdir() if own.fullmatch(p.name)} - set(paths):
        stale.unlink()
    return paths
