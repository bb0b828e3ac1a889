"""What ``glitchflow online`` publishes, one output frame per input-frame slot, in GPS order.

* ``OUT/frames/{OBS}-GLITCHFLOW_ONLINE-{GPS}-{DUR}.gwf``: the same cadence as
  the input, holding the state channel ``{IFO}:DQ_GLITCHFLOW_STATE``
  (``state_rate`` Hz, int32 bit mask: bit 0 = analysed, bit 1 = vetoed; so
  **0 = not analysed, 1 = analysed and clean, 3 = analysed and vetoed**; a
  search keeps the time where the value is exactly 1) and
  ``{IFO}:GLITCHFLOW_MODEL_VERSION`` (1 Hz, the registry version of the model
  that decided the frame; -1 when the model is a file).
* ``OUT/segments.jsonl``: append-only log, one JSON line per published slot
  (``start``, ``end``, ``kind`` = frame / missing / failed, ``analysed`` and
  ``vetoes`` as ``[[start, end], ...]`` GPS s, ``model_version``, ``frame``,
  ``latency_s``).  The line is written and synced *before* its frame is renamed
  into place; on restart, lines past the last published frame are dropped, so
  the log and the frames always agree.
* ``OUT/vetoes.h5`` (a gwpy DataQualityFlag: known = analysed, active =
  vetoes), ``OUT/live.csv`` and ``OUT/vetoes.csv`` (the files of
  ``glitchflow infer``), rewritten atomically every ``online.flag_every`` s and
  on exit.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from glitchflow.evaluate.hveto import intersect, merge_segments
from glitchflow.io.frame_writer import write_frame
from glitchflow.io.frames import FrameFile, frame_name
from glitchflow.pipelines.infer_products import (
    veto_segments_from_clusters,
    write_flag,
    write_segments,
)
from glitchflow.signal.gating import state_bits

log = logging.getLogger(__name__)

FRAMES = "frames"
LOG = "segments.jsonl"


@dataclass
class Slot:
    """One output frame: a GPS span and what became of it.

    ``kind``: ``frame`` (an input frame was analysed), ``missing`` (no input
    frame arrived within the horizon) or ``failed`` (the input frame was unreadable).
    """

    start: float
    end: float
    kind: str
    frame: str = ""
    appeared: float | None = None  # wall time the input frame appeared (s since epoch)
    analysed: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    vetoes: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    model_version: str = ""


def slot_segments(
    start: float, end: float, windows: list[dict], padding: float
) -> tuple[np.ndarray, np.ndarray]:
    """Analysed and veto segments (GPS s, ``(k, 2)``) inside ``[start, end)`` from the
    decided windows around it: as ``glitchflow infer``, vetoes are the clusters' time
    extents +- ``padding`` merged and clipped to the analysed time."""
    if not windows:
        return np.zeros((0, 2)), np.zeros((0, 2))
    span = np.array([[start, end]], dtype=float)
    live = merge_segments(np.array([[w["gps_start"], w["gps_end"]] for w in windows], float))
    vetoes = veto_segments_from_clusters([w["clusters"] for w in windows], padding, live)
    return intersect(live, span), intersect(vetoes, span)


def _version_number(label: str) -> int:
    return int(label) if str(label).isdigit() else -1


class OnlinePublisher:
    """Writes output frames and the segment log in GPS order; resumes after a restart.

    Args:
        out: output directory.
        detector: IFO prefix of the state channels (``V1``).
        observatory: first field of output frame names (``V``).
        state_channel, state_rate, frame_tag: from the ``online`` config.
    """

    def __init__(
        self,
        out: Path,
        detector: str,
        observatory: str,
        state_channel: str,
        state_rate: float,
        frame_tag: str,
    ) -> None:
        self.out = Path(out)
        self.frames_dir = self.out / FRAMES
        self.frames_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.out / LOG
        self.state_name = f"{detector}:{state_channel}"
        self.version_name = f"{detector}:GLITCHFLOW_MODEL_VERSION"
        self.state_rate = state_rate
        self.observatory = observatory
        self.tag = frame_tag

    # ------------------------------------------------------------------ resume
    def resume(self) -> float | None:
        """End (GPS s) of the last published frame, or None; drops log lines past it
        (written just before a crash, their frames never published)."""
        ends = []
        for path in self.frames_dir.glob("*.gwf"):
            try:
                ends.append(FrameFile.from_path(path).end)
            except Exception:  # a foreign file: not ours to judge
                continue
        for part in self.frames_dir.glob("*.part"):
            part.unlink()  # a frame interrupted mid-write was never published
        until = max(ends) if ends else None
        if self.log_path.exists():
            lines = self.log_path.read_text().splitlines()
            kept = [
                ln for ln in lines if ln and until is not None and json.loads(ln)["end"] <= until
            ]
            if len(kept) != len(lines):
                log.warning(
                    "online: dropped %d log lines past the last published frame",
                    len(lines) - len(kept),
                )
                tmp = self.log_path.with_suffix(".tmp")
                tmp.write_text("".join(ln + "\n" for ln in kept))
                os.replace(tmp, self.log_path)
        return until

    # ------------------------------------------------------------------ publish
    def publish(self, slot: Slot) -> dict:
        """Log line (synced), then the output frame (atomic rename); returns the log record."""
        n = max(1, round((slot.end - slot.start) * self.state_rate))
        state = state_bits(n, self.state_rate, slot.start, slot.analysed, slot.vetoes)
        n_version = max(1, round(slot.end - slot.start))
        version = np.full(n_version, _version_number(slot.model_version), dtype=np.int32)
        record = {
            "start": slot.start,
            "end": slot.end,
            "kind": slot.kind,
            "frame": Path(slot.frame).name if slot.frame else "",
            "analysed": np.asarray(slot.analysed).tolist(),
            "vetoes": np.asarray(slot.vetoes).tolist(),
            "model_version": slot.model_version,
        }
        name = frame_name(self.observatory, self.tag, slot.start, slot.end - slot.start)
        now = time.time()
        record["latency_s"] = None if slot.appeared is None else round(now - slot.appeared, 4)
        with open(self.log_path, "a") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        write_frame(
            self.frames_dir / name,
            slot.start,
            {
                self.state_name: (state.astype(np.int32), self.state_rate),
                self.version_name: (version, n_version / (slot.end - slot.start)),
            },
        )
        if slot.appeared is not None:
            record["latency_s"] = round(time.time() - slot.appeared, 4)
        return record

    # ------------------------------------------------------------------ flag
    def records(self) -> list[dict]:
        if not self.log_path.exists():
            return []
        return [json.loads(ln) for ln in self.log_path.read_text().splitlines() if ln]

    def roll_flag(self) -> dict:
        """Rewrite ``vetoes.h5``, ``live.csv`` and ``vetoes.csv`` from the log (atomically)."""
        records = self.records()
        live = _merged([s for r in records for s in r["analysed"]])
        vetoes = _merged([s for r in records for s in r["vetoes"]])
        for name, segs in (("live.csv", live), ("vetoes.csv", vetoes)):
            tmp = self.out / f".{name}.tmp"
            write_segments(tmp, segs)
            os.replace(tmp, self.out / name)
        tmp = self.out / ".vetoes.h5.tmp"
        flag = f"{self.state_name.split(':')[0]}:GLITCHFLOW-ONLINE-VETO:1"
        write_flag(tmp, flag, vetoes, live)
        os.replace(tmp, self.out / "vetoes.h5")
        return {"live_s": float(np.sum(np.diff(live))), "veto_segments": len(vetoes)}


def _merged(segments: list) -> np.ndarray:
    if not segments:
        return np.zeros((0, 2))
    return merge_segments(np.array(segments, dtype=float))
