"""Where a stage's outputs are written before they count: claiming OUT, a run's private
staging directory, publishing it whole, and the guard its actors check before writing.

A stage that writes from Ray actors (preprocess, infer, clean) writes into a staging
directory ``OUT/.staging-<stage>-<host>-<pid>-<id>`` and moves its products into OUT only
when they are complete (:func:`publish`).  When the driver is killed, its actors live on
in the cluster until Ray reaps them and may still be working through their blocks; they
call :func:`check_staging` before each block and never create a missing parent, so once
the next run has discarded the dead run's staging directory (:func:`staging_dir`) they
stop instead of re-creating it or writing next to the new run's products.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

#: attempts at removing a discarded staging directory (a dying actor may still be
#: finishing a file in it) and the pause between them, s
DISCARD_ATTEMPTS = 5
DISCARD_PAUSE_S = 0.5


class RunAbandonedError(RuntimeError):
    """The run that an actor writes for is gone (its staging directory was discarded)."""


def claim_out(out: str | Path, products: list[str], stage: str, overwrite: bool) -> Path:
    """Make ``out`` ready for a stage that writes ``products`` (names under ``out``).

    Products of a previous run would mix with this run's (shards are written next to
    the ones already there, readers take them all), so they are refused with a clear error,
    or removed first when ``overwrite`` is set.  Other files in ``out`` are left alone.
    """
    out = Path(out).resolve()
    present = sorted(name for name in products if (out / name).exists())
    if present and not overwrite:
        raise FileExistsError(
            f"{out}: holds the {', '.join(present)} of a previous {stage} run, which would mix "
            "with this run's; pass --overwrite to replace them, or choose another --out"
        )
    for name in present:
        path = out / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    if present:
        log.info("%s: replaced the previous run's %s in %s", stage, ", ".join(present), out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def discard(path: Path) -> bool:
    """Remove the directory ``path`` for good; True when it is gone.

    It is first renamed (one atomic step), so a writer that still holds its old path (an
    actor of a dead run) finds nothing there and, creating no parents, cannot bring it
    back; files such a writer still has open are removed on a later attempt."""
    doomed = path.with_name(path.name + ".discarded")
    try:
        os.replace(path, doomed)
    except FileNotFoundError:
        return not path.exists()
    for _ in range(DISCARD_ATTEMPTS):
        shutil.rmtree(doomed, ignore_errors=True)
        if not doomed.exists():
            return True
        time.sleep(DISCARD_PAUSE_S)
    log.warning("%s: could not be removed (still being written?); the next run retries", doomed)
    return False


def staging_dir(out: Path, stage: str) -> Path:
    """A fresh hidden directory ``OUT/.staging-<stage>-<host>-<pid>-<id>`` that this run
    writes into before :func:`publish` moves its products into ``out``.  Staging
    directories left on this host by runs that died (killed mid-write) are discarded:
    their contents were never published, so nothing trusted them."""
    import socket
    import uuid

    host = socket.gethostname().replace("-", "_")
    for old in out.glob(f".staging-{stage}-*"):
        parts = old.name.split("-")  # ..., host, pid, id[.discarded]
        mine = len(parts) >= 5 and parts[-3] == host and parts[-2].isdigit()
        if mine and not _alive(int(parts[-2])):
            log.warning("%s: removing the unpublished output of a run that died", old)
            discard(old)  # also an earlier discard that did not finish
    path = out / f".staging-{stage}-{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    path.mkdir(parents=True)
    return path


@contextmanager
def staged(out: Path, stage: str, products: list[str]) -> Iterator[Path]:
    """A :func:`staging_dir` for the ``with`` block's writes: its ``products`` are
    published (:func:`publish`, in that order) when the block completes, and the whole
    directory is discarded if the block raises (an error, or Ctrl-C in the driver), so a
    failed run leaves no unpublished output behind, even in a process that lives on."""
    path = staging_dir(out, stage)
    try:
        yield path
        publish(path, out, products)
    except BaseException:
        log.warning("%s run failed: discarding its unpublished output %s", stage, path)
        discard(path)
        raise


def check_staging(staging: str | Path) -> None:
    """Raise :class:`RunAbandonedError` unless ``staging`` (a run's staging directory, or
    a directory the driver made in it) still exists: an actor calls this before each
    block it writes."""
    if not Path(staging).is_dir():
        raise RunAbandonedError(
            f"{staging}: the staging directory of this actor's run is gone (the run was "
            "killed and a later run discarded its unpublished output); writing nothing"
        )


def publish(staging: Path, out: Path, names: list[str]) -> None:
    """Move ``staging/name`` to ``out/name`` for each of ``names`` (in that order: put the
    file that readers check first, e.g. the manifest, last) and remove ``staging``.  Each
    move is one ``os.replace`` on the same filesystem; the targets were claimed
    (:func:`claim_out`), so nothing is overwritten."""
    for name in names:
        if (staging / name).exists():
            os.replace(staging / name, out / name)
    discard(staging)
