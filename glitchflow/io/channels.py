"""Which channels a stage reads: strain first, then the auxiliary channels, from a
channel-selection file (``glitchflow scan``'s output), the config, or the frames."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from glitchflow.config import Config
from glitchflow.io.frames import FrameFile, frame_channels

log = logging.getLogger(__name__)


def channels_from_file(path: str | Path) -> list[str]:
    """Channel names of a channel-selection file (``glitchflow scan``'s channels.json):
    ``{"channels": [name or {"name": ...}, ...]}``."""
    data = json.loads(Path(path).read_text())
    entries = data.get("channels") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a JSON object with a 'channels' list")
    return [e["name"] if isinstance(e, dict) else str(e) for e in entries]


def resolve_channels(cfg: Config, frames: list[FrameFile], channels_file: str | None) -> list[str]:
    """Strain first, then the auxiliary channels: from a channel-selection file, the
    config, or (by default) every channel of the first readable frame, sorted."""
    strain = cfg.signal.strain_channel
    if channels_file:
        aux = channels_from_file(channels_file)
    elif cfg.preprocess.channels is not None:
        aux = list(cfg.preprocess.channels)
    else:
        aux = None
        for frame in frames:
            try:
                aux = sorted(frame_channels(frame.path))
                break
            except Exception as exc:  # a bad first frame must not stop discovery
                log.warning("cannot list channels of %s: %s", frame.path, exc)
        if aux is None:
            raise ValueError("no readable frame to list channels from")
    return [strain] + [c for c in aux if c != strain]
