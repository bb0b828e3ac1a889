"""``glitchflow demo``: the whole chain on a small twin, locally, with a printed summary.

Each stage appends a section to the summary; the demo stops at the first
stage that fails and says which.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from glitchflow.config import load_config

log = logging.getLogger(__name__)


def run_demo(config: str | Path | None, workdir: str | Path, overrides=()) -> int:
    """Run the demo stages into ``workdir``; returns a process exit code."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = load_config(config, overrides)
    t0 = time.perf_counter()
    lines = [f"glitchflow demo in {workdir.resolve()}"]

    from glitchflow.io.truth import read_truth
    from glitchflow.synth.twin import generate

    twin = generate(cfg, workdir / "twin")
    truth = read_truth(twin.truth_path)
    counts = truth["family"].value_counts().to_dict()
    lines.append(f"[synth]  {twin.summary()}")
    lines.append("         glitches by family: " + ", ".join(f"{k}={v}" for k, v in counts.items()))

    from glitchflow.pipelines.preprocess import run_preprocess
    from glitchflow.pipelines.runtime import init_ray

    init_ray()
    manifest = run_preprocess(cfg, twin.frames[0].parent, workdir / "dataset")
    lines.append(
        f"[preprocess] {manifest['frames_written']}/{manifest['frames_in']} frames -> "
        f"{manifest['windows_written']} windows of {manifest['window_seconds']} s x "
        f"{len(manifest['channels'])} channels in {manifest['wall_seconds']:.1f} s "
        f"({workdir / 'dataset'})"
    )
    lines.append(f"done in {time.perf_counter() - t0:.1f} s")
    print("\n".join(lines))
    return 0
