"""Subtraction quality on held-out twin spans: residual glitch SNR against truth, per family.

Fits the witness couplings (``glitchflow fit-clean``) on the twin of
``configs/science.yaml`` (or takes ``--model``), then cleans spans that nothing
was fitted or tuned on (other seeds, later GPS times; Virgo-like and demo
rates) and scores each against its truth frames
(:func:`~glitchflow.evaluate.subtraction.evaluate_subtraction`): per family the
fraction of witnessed glitches (strain SNR >= 8) left with residual SNR < 5 and
the median SNR reduction; the glitch-free PSD ratio cleaned/raw per
1/3-octave band (20-1000 Hz); and ``glitchflow clean``'s real-time factor
(data seconds per wall second on this machine), beside gating's deadtime
(time a gate at each witnessed glitch would throw away) against none.

    .venv/bin/python benchmarks/denoise_quality.py --json bench-out/denoise_quality.json
    .venv/bin/python benchmarks/denoise_quality.py --model fit/model.pt --json ...
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import write_json  # noqa: E402
from benchmarks.veto_quality import HELD_OUT  # noqa: E402  (the same held-out spans)

WITNESSES = ["V1:LSC_DARM_CORR", "V1:ENV_CEB_MAG_N", "V1:Sa_NE_F0_Z_500Hz"]
LINEAR = ("blip", "environmental")


def fit_science(work: Path) -> Path:
    from glitchflow.config import load_config
    from glitchflow.pipelines.clean_fit import run_fit_clean
    from glitchflow.synth.twin import generate

    cfg = load_config(ROOT / "configs" / "science.yaml")
    twin = work / "science"
    if not (twin / "truth.csv").exists():
        generate(cfg, twin, writers=2)
    channels = work / "channels.json"
    channels.write_text(json.dumps({"channels": WITNESSES}))
    fit = run_fit_clean(cfg, twin / "frames", str(channels), work / "fit", False, overwrite=True)
    return Path(fit.model)


def gating_deadtime(truth, span_seconds: float, min_snr: float) -> float:
    """Fraction of the span a gate over each witnessed glitch (its duration + 0.5 s) removes."""
    from glitchflow.synth.twin import WITNESSED_FAMILIES

    rows = truth[truth.family.isin(WITNESSED_FAMILIES) & (truth.strain_snr >= min_snr)]
    lo = (rows.gps_peak - rows.duration / 2 - 0.25).to_numpy()
    hi = (rows.gps_peak + rows.duration / 2 + 0.25).to_numpy()
    order = np.argsort(lo)
    total, end = 0.0, -np.inf
    for a, b in zip(lo[order], hi[order]):
        a = max(a, end)
        if b > a:
            total += b - a
            end = b
    return total / span_seconds


def score_span(spec, model: Path, work: Path) -> dict:
    from glitchflow.config import load_config
    from glitchflow.evaluate.subtraction import evaluate_subtraction
    from glitchflow.io.truth import read_truth
    from glitchflow.pipelines.clean import run_clean
    from glitchflow.synth.twin import generate

    name, config, seed, gps, duration = spec
    cfg = load_config(
        ROOT / "configs" / config,
        [f"seed={seed}", f"twin.gps_start={gps}", f"twin.duration={duration}"],
    )
    span = work / name
    if not (span / "truth.csv").exists():
        generate(cfg, span, progress=False, writers=2)
    t0 = time.perf_counter()
    run_clean(cfg, span / "frames", str(model), span / "clean", overwrite=True)
    wall = time.perf_counter() - t0
    report = evaluate_subtraction(span, span / "clean", cfg.signal.strain_channel, cfg.signal)
    truth = read_truth(span / "truth.csv")
    return {
        "span": name,
        "seed": seed,
        "duration_s": duration,
        "families": report["families"],
        "psd_ratio_max_deviation": report["psd_ratio_max_deviation"],
        "psd_ratio_bands": report["psd_ratio_bands"],
        "spectrogram_cleaned_fraction": report["spectrogram_cleaned_fraction"],
        "clean_wall_s": round(wall, 2),
        "clean_real_time_factor": round(duration / wall, 2),
        "gating_deadtime": round(gating_deadtime(truth, duration, 8.0), 5),
        "subtraction_deadtime": 0.0,
        "glitches": report["glitches"],
    }


def targets(spans: list[dict]) -> dict:
    """The issue's targets over all held-out glitches pooled, and per span."""
    pooled = {}
    for family in ("blip", "environmental", "scattered_light"):
        rows = [g for s in spans for g in s["glitches"] if g["family"] == family]
        if not rows:
            continue
        res = np.array([g["residual_snr"] for g in rows])
        red = np.array([g["reduction"] for g in rows])
        pooled[family] = {
            "glitches": len(rows),
            "fraction_below_snr5": round(float(np.mean(res < 5)), 4),
            "median_reduction": round(float(np.median(red)), 4),
        }
    for family in pooled:  # the seed's spectrogram figure, recomputed on cleaned strain
        rows = [g for s in spans for g in s["glitches"] if g["family"] == family]
        pooled[family]["spectrogram_cleaned_fraction"] = round(
            float(np.mean([g["cleaned_max_snr2"] < 16.0 for g in rows])), 4
        )
    worst_psd = max((s["psd_ratio_max_deviation"] or 0) for s in spans)
    rtf = min(s["clean_real_time_factor"] for s in spans)
    return {
        "pooled": pooled,
        "linear_below_snr5_ge_0.9": all(
            pooled.get(f, {}).get("fraction_below_snr5", 0) >= 0.9 for f in LINEAR
        ),
        "scattered_below_snr5_ge_0.5": pooled.get("scattered_light", {}).get(
            "fraction_below_snr5", 0
        )
        >= 0.5,
        "linear_median_reduction_ge_0.9": all(
            pooled.get(f, {}).get("median_reduction", 0) >= 0.9 for f in LINEAR
        ),
        "psd_ratio_max_deviation": worst_psd,
        "psd_ratio_within_0.02": worst_psd <= 0.02,
        "clean_real_time_factor_min": rtf,
        "clean_ge_50x_real_time": rtf >= 50,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="subtraction model.pt")
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench-out" / "denoise_quality")
    parser.add_argument("--spans", type=int, default=len(HELD_OUT), help="held-out spans to use")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from glitchflow.pipelines.runtime import init_ray

    init_ray()
    args.workdir.mkdir(parents=True, exist_ok=True)
    model = args.model or fit_science(args.workdir)
    spans = [score_span(spec, model, args.workdir) for spec in HELD_OUT[: args.spans]]
    print(f"{'span':10} {'family':16} {'n':>3} {'<SNR5':>6} {'median red.':>11}")
    for s in spans:
        for family, f in s["families"].items():
            if f["glitches"]:
                print(
                    f"{s['span']:10} {family:16} {f['glitches']:3d} "
                    f"{100 * f['fraction_below_snr5']:5.0f}% {100 * f['median_reduction']:10.0f}%"
                )
        print(
            f"{s['span']:10} PSD ratio max |r-1| {s['psd_ratio_max_deviation']}, clean "
            f"{s['clean_real_time_factor']}x real time, gating deadtime "
            f"{100 * s['gating_deadtime']:.2f}% (subtraction: 0%)"
        )
    summary = targets(spans)
    print(json.dumps(summary, indent=1))
    write_json({"model": str(model), "spans": spans, "targets": summary}, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
