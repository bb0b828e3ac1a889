"""The manifest of a preprocessed dataset (``DATA/manifest.json``): what the shards hold,
how every frame and window fared, and the check that the shards are that dataset.

``glitchflow preprocess`` builds it from the per-frame reports; ``train``, ``tune``,
``generate`` and ``retrain`` load it, checked against the shards on disk.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path

from glitchflow.config import Config, config_hash, json_hash, validate_config

SHARDS = "shards"
REPORTS = "reports"
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Manifest:
    """A preprocessed dataset.  Frames and windows are accounted for: ``frames_in`` =
    ``frames_written`` + failed (each failure with its file and reason),
    ``windows_expected`` = ``windows_written`` + skipped (with frame and reason).

    ``config``: the stage config that made it (JSON form) and its ``config_hash``;
    ``channels``: strain first, in the order of every row; ``sample_rates``: Hz;
    ``bad_channels``: frame -> channels zeroed for bad data; ``window_seconds`` and
    ``stride_seconds``: s; ``shard_files``: Parquet file -> rows (None in manifests
    written before it was recorded); ``nodes``: workers that ran; ``wall_seconds``: s."""

    config: dict
    config_hash: str
    channels: list[str]
    sample_rates: dict[str, float]
    frames_in: int
    frames_written: int
    frames_written_files: list[str]
    frames_failed: list[dict]
    windows_expected: int
    windows_written: int
    windows_skipped: list[dict]
    bad_channels: dict[str, list[str]]
    window_seconds: float
    stride_seconds: float
    shards: str = SHARDS
    nodes: tuple[str, ...] = ()
    wall_seconds: float = 0.0
    shard_files: dict[str, int] | None = None

    def stage_config(self) -> Config:
        """The validated config the dataset was made with."""
        return validate_config(self.config)

    def shard_dir(self, data_dir: str | Path) -> Path:
        """The absolute directory of the dataset's Parquet shards."""
        return (Path(data_dir) / self.shards).resolve()

    def to_dict(self) -> dict:
        data = asdict(self)
        data["nodes"] = list(self.nodes)
        return data

    @classmethod
    def from_dict(cls, data: dict, source: str | Path) -> Manifest:
        """Read a manifest; a missing field is refused naming ``source`` and the field."""
        if not isinstance(data, dict):
            raise ValueError(f"{source}: a manifest is a JSON object")
        names = {f.name for f in fields(cls)}
        required = [f.name for f in fields(cls) if f.default is MISSING]
        missing = [name for name in required if name not in data]
        if missing:
            raise ValueError(f"{source}: the manifest has no field {', '.join(missing)}")
        known = {k: v for k, v in data.items() if k in names}
        known["nodes"] = tuple(known.get("nodes", ()))
        return cls(**known)


def shard_rows(shards: Path) -> dict[str, int]:
    """Rows of every Parquet file in ``shards`` (from the file footers), by file name."""
    import pyarrow.parquet as pq

    if not shards.is_dir():
        return {}
    return {p.name: pq.read_metadata(p).num_rows for p in sorted(shards.glob("*.parquet"))}


@dataclass(frozen=True)
class FrameAccounting:
    """How the frames of a run fared, summed from its per-frame reports: ``frames_in`` =
    ``frames_written`` + failed (file and reason), ``windows_expected`` =
    ``windows_written`` + skipped (frame and reason); ``bad_channels``: frame -> channels
    zeroed; ``rates``: channel -> Hz; ``nodes``: workers that wrote reports."""

    frames_in: int
    frames_written: int
    frames_written_files: list[str]
    frames_failed: list[dict]
    windows_expected: int
    windows_written: int
    windows_skipped: list[dict]
    bad_channels: dict[str, list[str]]
    rates: dict[str, float]
    nodes: tuple[str, ...]


def frame_accounting(found, report_dir: Path) -> FrameAccounting:
    """Sum the per-frame reports in ``report_dir`` (one JSON per frame, written by the
    stage's workers): every frame ``found`` (:class:`~glitchflow.io.frames.FoundFrames`)
    is written or failed, with a reason."""
    reports = {}
    for path in sorted(report_dir.glob("*.json")):
        rep = json.loads(path.read_text())
        reports[rep["frame"]] = rep
    failed = [{"file": e.path, "reason": e.reason} for e in found.failures]
    written = []
    for frame in found.frames:
        rep = reports.get(frame.path)
        if rep is None:
            failed.append({"file": frame.path, "reason": "no report: the block did not run"})
        elif rep["windows_written"] == 0 and rep["windows_expected"] > 0:
            reason = "; ".join(rep["errors"]) or (
                rep["skipped"][0]["reason"] if rep["skipped"] else ""
            )
            failed.append({"file": frame.path, "reason": reason or "no window written"})
        else:
            written.append(frame.path)
    rates: dict[str, float] = {}
    for rep in reports.values():
        rates.update(rep.get("rates", {}))
    return FrameAccounting(
        frames_in=len(found.frames) + len(found.failures),
        frames_written=len(written),
        frames_written_files=written,
        frames_failed=failed,
        windows_expected=int(sum(r["windows_expected"] for r in reports.values())),
        windows_written=int(sum(r["windows_written"] for r in reports.values())),
        windows_skipped=[
            {"frame": rep["frame"], **item} for rep in reports.values() for item in rep["skipped"]
        ],
        bad_channels={
            rep["frame"]: rep["bad_channels"] for rep in reports.values() if rep["bad_channels"]
        },
        rates=rates,
        nodes=tuple(sorted({rep.get("worker", "") for rep in reports.values()})),
    )


def build_manifest(
    cfg: Config, found, channels: list[str], report_dir: Path, shards: Path, wall: float
) -> Manifest:
    """The manifest of the dataset whose frame reports are in ``report_dir`` and whose
    Parquet files are in ``shards`` (see :func:`frame_accounting`)."""
    acc = frame_accounting(found, report_dir)
    return Manifest(
        config=cfg.model_dump(mode="json"),
        config_hash=config_hash(cfg),
        channels=channels,
        sample_rates={c: acc.rates[c] for c in channels if c in acc.rates},
        frames_in=acc.frames_in,
        frames_written=acc.frames_written,
        frames_written_files=acc.frames_written_files,
        frames_failed=acc.frames_failed,
        windows_expected=acc.windows_expected,
        windows_written=acc.windows_written,
        windows_skipped=acc.windows_skipped,
        bad_channels=acc.bad_channels,
        window_seconds=cfg.preprocess.window,
        stride_seconds=cfg.preprocess.stride,
        shards=SHARDS,
        nodes=acc.nodes,
        wall_seconds=round(wall, 3),
        shard_files=shard_rows(shards),
    )


def load_manifest(data_dir: str | Path) -> Manifest:
    """The manifest of a preprocessed dataset, checked against its shards.

    Refused with a message naming the problem: no manifest (the run did not finish), a
    manifest whose config does not match its own hash, shard files that another run
    added or that are missing, row counts that differ from the manifest's, or rows whose
    channel order is not the manifest's.  Training on mixed or partial data is silent
    damage; this makes it loud."""
    path = Path(data_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no manifest; run `glitchflow preprocess` first (a run that did not "
            "finish publishes nothing)"
        )
    manifest = Manifest.from_dict(json.loads(path.read_text()), path)
    problems = dataset_problems(Path(data_dir), manifest)
    if problems:
        raise ValueError(
            f"{data_dir}: the shards do not match manifest.json: {'; '.join(problems)}. "
            "Re-run `glitchflow preprocess --overwrite` into this directory."
        )
    return manifest


def dataset_problems(data_dir: Path, manifest: Manifest) -> list[str]:
    """Why the shards under ``data_dir`` are not the dataset ``manifest`` describes."""
    import pyarrow.parquet as pq

    problems = []
    try:
        if json_hash(manifest.config) != manifest.config_hash:
            problems.append("its config does not match its config_hash")
        manifest.stage_config()  # still a valid config
    except (KeyError, ValueError) as exc:
        problems.append(f"its config is unreadable ({str(exc)[:200]})")
    expected = manifest.shard_files
    if expected is None:  # written before manifests listed their shards
        return problems
    shards = data_dir / manifest.shards
    found = {p.name: p for p in shards.glob("*.parquet")} if shards.is_dir() else {}
    extra = sorted(set(found) - set(expected))
    missing = sorted(set(expected) - set(found))
    if extra:
        problems.append(f"{len(extra)} shard files not of this run (e.g. {extra[0]})")
    if missing:
        problems.append(f"{len(missing)} shard files missing (e.g. {missing[0]})")
    order = ";".join(manifest.channels)
    for name in sorted(set(found) & set(expected)):
        rows = pq.read_metadata(found[name]).num_rows
        if rows != expected[name]:
            problems.append(f"{name} has {rows} rows, the manifest says {expected[name]}")
            continue
        channels = set(pq.read_table(found[name], columns=["channels"]).column(0).to_pylist())
        if channels - {order}:
            problems.append(f"{name} holds rows with another channel order than {order}")
    total = sum(expected.values())
    if total != manifest.windows_written:
        problems.append(f"shards list {total} rows, windows_written is {manifest.windows_written}")
    return problems
