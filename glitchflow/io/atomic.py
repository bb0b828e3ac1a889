"""Write a file so that a reader sees the old content or the new one, never half of it.

Each writer goes to a temporary file in the same directory, is flushed to disk and is
renamed over the target (``os.replace`` is atomic on one filesystem).  A process killed
mid-write leaves a ``.<name>.tmp-<pid>`` file that nothing reads.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without an error the
    file written there replaces ``path``; on an error it is removed."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Replace ``path`` with ``text`` (UTF-8) atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(path: str | Path, obj, **dumps) -> Path:
    """Replace ``path`` with ``json.dumps(obj, indent=2, **dumps)`` atomically."""
    return write_text_atomic(path, json.dumps(obj, indent=2, **dumps))
