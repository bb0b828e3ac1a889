"""Veto quality on held-out twin spans: the learned veto against the hveto baseline.

Trains (or takes, with ``--model``) the model of ``configs/science.yaml`` (two
hours of twin at the Virgo-like rate) and scores it, with the hveto rounds of
the science span's own scan, on spans nothing was trained or tuned on: other
seeds and later GPS times, at the Virgo-like rate and at the demo's rates.
Witnessed glitches are those with strain SNR >= ``evaluate.strain_snr_threshold``.

Per span: efficiency and deadtime at the calibrated operating point, efficiency
at 1 % deadtime (from the ROC), the time the witnessed glitches occupy (truth
``duration``), per-family efficiency of both methods at the baseline's
deadtime, unwitnessed glitches vetoed against the deadtime, and the glitch
time the vetoes cover.

    .venv/bin/python benchmarks/veto_quality.py --json bench-out/veto_quality.json
    .venv/bin/python benchmarks/veto_quality.py --model science/train/best_model.pt --hveto \\
        science/scan/hveto.json --json bench-out/veto_quality.json
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import write_json  # noqa: E402

#: held-out spans: (name, config, seed, GPS start, duration s); none overlaps the science
#: span (GPS 1400100000 + 7168 s) or uses its seed
HELD_OUT = [
    ("virgo-a", "science.yaml", 7001, 1400120000, 1024),
    ("virgo-b", "science.yaml", 7002, 1400130000, 1024),
    ("virgo-c", "science.yaml", 7003, 1400140000, 1024),
    ("demo-a", "demo.yaml", 8001, 1400150000, 512),
    ("demo-b", "demo.yaml", 8002, 1400160000, 512),
]


def train_science(work: Path) -> tuple[Path, Path, dict]:
    """synth + scan + preprocess + train of configs/science.yaml; stage wall times."""
    from glitchflow.config import load_config
    from glitchflow.pipelines.preprocess import run_preprocess
    from glitchflow.pipelines.scan import run_scan
    from glitchflow.pipelines.train import run_training
    from glitchflow.synth.twin import generate

    cfg = load_config(ROOT / "configs" / "science.yaml")
    walls = {}
    t0 = time.perf_counter()
    twin = generate(cfg, work / "twin", writers=2)
    walls["synth_s"] = time.perf_counter() - t0
    frames = twin.frames[0].parent
    t0 = time.perf_counter()
    run_scan(cfg, frames, work / "scan", overwrite=True)
    walls["scan_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    run_preprocess(
        cfg, frames, work / "dataset", str(work / "scan" / "selected_channels.json"), overwrite=True
    )
    walls["preprocess_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    trained = run_training(cfg, work / "dataset", work / "train", overwrite=True)
    walls["train_s"] = time.perf_counter() - t0
    walls["total_s"] = sum(walls.values())
    walls["veto"] = trained.veto
    return Path(trained.best_checkpoint), work / "scan" / "hveto.json", walls


def glitch_time_fraction(truth, live: np.ndarray, snr: float) -> float:
    """Share of the live time inside witnessed glitches (strain SNR >= ``snr``),
    ``gps_peak +- duration / 2``."""
    from glitchflow.evaluate.hveto import duration, intersect, merge_segments

    rows = truth[(truth["strain_snr"] >= snr) & (truth["witnesses"].fillna("").str.len() > 0)]
    half = rows["duration"].to_numpy() / 2
    seg = np.stack([rows["gps_peak"] - half, rows["gps_peak"] + half], axis=1)
    return duration(intersect(merge_segments(seg), live)) / duration(live)


def score_span(
    name, config, seed, start, length, model: Path, hveto: Path, work: Path, reuse: bool = False
) -> dict:
    from glitchflow.config import load_config
    from glitchflow.evaluate.report import read_segments, run_evaluate
    from glitchflow.evaluate.scorecard import efficiency_at_deadtime
    from glitchflow.io.truth import read_truth
    from glitchflow.pipelines.infer import run_inference
    from glitchflow.synth.twin import generate

    overrides = [f"seed={seed}", f"twin.gps_start={start}", f"twin.duration={length}"]
    cfg = load_config(ROOT / "configs" / config, overrides)
    span = work / name
    truth_path = span / "twin" / "truth.csv"
    if not (reuse and (span / "infer" / "summary.json").is_file() and truth_path.is_file()):
        twin = generate(cfg, span / "twin", writers=2)
        run_inference(
            cfg, twin.frames[0].parent, str(model), span / "infer", hveto=hveto, overwrite=True
        )
    report = run_evaluate(cfg, truth_path, span / "infer", span / "evaluate")
    learned, base = report.learned, report.baseline
    live = read_segments(span / "infer" / "live.csv")
    occupied = glitch_time_fraction(read_truth(truth_path), live, cfg.evaluate.strain_snr_threshold)
    families = {
        f: {
            "learned_at_baseline_deadtime": row.get("learned_efficiency_at_baseline_deadtime"),
            "perfect_model_at_baseline_deadtime": row.get(
                "perfect_model_efficiency_at_baseline_deadtime"
            ),
            "baseline": row["baseline"]["efficiency"] if row.get("baseline") else None,
            "learned": row["learned"]["efficiency"],
            "glitches": row["learned"]["glitches"],
        }
        for f, row in report.per_family.items()
    }
    witnessed = [f for f in families if f != "unwitnessed"]
    return {
        "span": name,
        "config": config,
        "seed": seed,
        "gps_start": start,
        "duration_s": length,
        "witnessed_glitches": learned["witnessed_glitches"],
        "efficiency": learned["witnessed_efficiency"],
        "deadtime": learned["deadtime"],
        "efficiency_at_1pct_deadtime": efficiency_at_deadtime(report.learned_roc, 0.01),
        "glitch_time_fraction": occupied,
        "coverage": learned["witnessed_coverage"],
        "unwitnessed_efficiency": learned["unwitnessed_efficiency"],
        "baseline_efficiency": base["witnessed_efficiency"],
        "baseline_deadtime": base["deadtime"],
        "baseline_coverage": base["witnessed_coverage"],
        "learned_at_baseline_deadtime": report.comparison[
            "learned_efficiency_at_baseline_deadtime"
        ],
        # what a model reproducing each witnessed glitch exactly would reach there
        "perfect_model_at_baseline_deadtime": report.comparison[
            "perfect_model_efficiency_at_baseline_deadtime"
        ],
        "per_family": families,
        "every_family_at_least_baseline": all(
            (families[f]["learned_at_baseline_deadtime"] or 0.0)
            >= (families[f]["baseline"] or 0.0) - 1e-9
            for f in witnessed
        ),
    }


def targets(spans: list[dict]) -> dict:
    virgo = [s for s in spans if s["config"] == "science.yaml"]
    demo = [s for s in spans if s["config"] == "demo.yaml"]
    return {
        "virgo_eff_ge_0.9_at_deadtime_le_1pct": all(
            s["efficiency_at_1pct_deadtime"] >= 0.9 for s in virgo
        ),
        "demo_eff_ge_0.9_at_deadtime_le_1.5x_glitch_time": all(
            s["efficiency"] >= 0.9 and s["deadtime"] <= 1.5 * s["glitch_time_fraction"]
            for s in demo
        ),
        "every_family_ge_baseline_at_its_deadtime": all(
            s["every_family_at_least_baseline"] for s in spans
        ),
        "no_false_skill": no_false_skill(spans),
    }


def no_false_skill(spans: list[dict]) -> bool:
    """Unwitnessed glitches vetoed, pooled over the spans, within chance: at most the
    count the deadtimes predict plus two Poisson sigmas."""
    vetoed = expected = 0.0
    for s in spans:
        row = s["per_family"].get("unwitnessed")
        if row:
            vetoed += row["learned"] * row["glitches"]
            expected += s["deadtime"] * row["glitches"]
    return vetoed <= expected + 2 * np.sqrt(expected) + 1e-9


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="checkpoint (skip training)")
    parser.add_argument("--hveto", type=Path, default=None, help="the model's scan hveto.json")
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench-out" / "veto_quality")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--reuse", action="store_true", help="re-score spans already inferred in --workdir"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from glitchflow.pipelines.runtime import init_ray

    init_ray()
    report: dict = {}
    if args.model is None:
        model, hveto, walls = train_science(args.workdir / "science")
        report["science_pipeline"] = walls
    else:
        model, hveto = args.model, args.hveto
    spans = [score_span(*h, model, hveto, args.workdir, args.reuse) for h in HELD_OUT]
    report |= {"model": str(model), "spans": spans, "targets": targets(spans)}
    print(
        f"{'span':>8} {'glitches':>8} {'eff':>6} {'dead':>7} {'eff@1%':>7} {'glitch t':>8} "
        f"{'cover':>6} {'unwit':>6} | {'hveto':>6} {'dead':>7} {'cover':>6} "
        f"{'learned@hveto dead':>18} {'perfect@hveto dead':>18}"
    )
    for s in spans:
        print(
            f"{s['span']:>8} {s['witnessed_glitches']:>8} {s['efficiency']:>6.1%} "
            f"{s['deadtime']:>7.2%} {s['efficiency_at_1pct_deadtime']:>7.1%} "
            f"{s['glitch_time_fraction']:>8.2%} {s['coverage']:>6.1%} "
            f"{s['unwitnessed_efficiency']:>6.1%} | {s['baseline_efficiency']:>6.1%} "
            f"{s['baseline_deadtime']:>7.2%} {s['baseline_coverage']:>6.1%} "
            f"{s['learned_at_baseline_deadtime']:>18.1%} "
            f"{s['perfect_model_at_baseline_deadtime']:>18.1%}"
        )
        print(
            "         per family learned@hveto deadtime / hveto: "
            + ", ".join(
                f"{f} {v['learned_at_baseline_deadtime'] or 0:.0%}/{v['baseline'] or 0:.0%}"
                for f, v in s["per_family"].items()
                if f != "unwitnessed"
            )
        )
    for key, met in report["targets"].items():
        print(f"target {key}: {'met' if met else 'NOT met'}")
    write_json(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
