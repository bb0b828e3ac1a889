"""Move a registry alias only if it still points where the caller compared against.

MLflow's registry has no compare-and-set, so two retrains that both scored against
production version 3 could both promote, the slower one overwriting the better one.
:func:`promote_if_unchanged` re-reads the alias under an exclusive lock and moves it only
when it is still the version the caller compared with.  The lock is a ``flock`` on a file
beside a ``sqlite:///`` registry (every retrain that can write that database can take it);
for a registry behind an HTTP server the re-read narrows the window but cannot close it,
so run one retrain schedule per registered model there.
"""

from __future__ import annotations

import fcntl
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from glitchflow.tracking.model_store import RegistryError, is_not_found

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Promotion:
    """What :func:`promote_if_unchanged` did: ``moved`` and the alias's version now."""

    moved: bool
    version_now: str | None
    reason: str


def alias_version(client, name: str, alias: str) -> str | None:
    """The version ``name@alias`` points at, None when the model or alias does not exist;
    any other registry failure is a :class:`RegistryError`."""
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except Exception as exc:
        if is_not_found(exc):
            return None
        raise RegistryError(
            f"models:/{name}@{alias}: the registry did not answer ({type(exc).__name__}: "
            f"{str(exc)[:300]}); nothing was changed"
        ) from exc


def _lock_path(tracking_uri: str, name: str) -> Path | None:
    if not tracking_uri.startswith("sqlite:///"):
        return None
    db = Path(tracking_uri[len("sqlite:///") :])
    return db.with_name(f"{db.name}.promote-{name}.lock")


@contextmanager
def promotion_lock(tracking_uri: str, name: str, timeout: float = 120.0) -> Iterator[None]:
    """Exclusive lock for promotions of ``name`` (no-op for a non-sqlite registry)."""
    path = _lock_path(tracking_uri, name)
    if path is None:
        log.info("%s: no promotion lock for this registry; the alias is re-read", tracking_uri)
        yield
        return
    with open(path, "a") as fh:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{path}: another promotion of {name} held the lock for {timeout} s"
                    ) from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def promote_if_unchanged(
    tracking_uri: str, name: str, alias: str, expected: str | None, version: str
) -> Promotion:
    """Point ``name@alias`` at ``version`` if it still points at ``expected`` (None: the
    alias must still be unset); otherwise leave it and say where it points now."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri, registry_uri=tracking_uri)
    with promotion_lock(tracking_uri, name):
        now = alias_version(client, name, alias)
        if now != expected:
            return Promotion(
                False,
                now,
                f"{alias} moved from version {expected} to {now} while this candidate was "
                "compared; run again to compare against it",
            )
        client.set_registered_model_alias(name, alias, version)
    return Promotion(True, str(version), f"{alias} moved from {expected} to {version}")
