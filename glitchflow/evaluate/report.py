"""``glitchflow evaluate``: the scorecard of an inference run against the truth catalogue.

Reads ``INFER/summary.json``, ``live.csv``, ``vetoes.csv``, the spectrogram
shards and (when present) ``baseline/``; streams the shards file by file
(bounded memory) and writes ``OUT/report.json``, ``OUT/report.md`` and the
plots ``roc.png``, ``accuracy.png``, ``denoise.png``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as pads
import torch

from glitchflow.config import Config
from glitchflow.evaluate.hveto import merge_segments
from glitchflow.evaluate.report_views import plot_report, write_markdown
from glitchflow.evaluate.scorecard import (
    at_deadtimes,
    baseline_roc,
    efficiency_at_deadtime,
    family_table,
    glitch_groups,
    ideal_bound,
    local_bins,
    touching,
    veto_figures,
    witnessed_extents,
)
from glitchflow.evaluate.subtraction import evaluate_subtraction
from glitchflow.io.atomic import write_json_atomic
from glitchflow.io.spectrograms import tensor_column
from glitchflow.io.truth import read_truth
from glitchflow.models.clusters import cluster_areas, has_cluster
from glitchflow.models.decisions import find_clusters, predicted_glitch, residual
from glitchflow.models.operating_point import OperatingPoint

log = logging.getLogger(__name__)


def read_segments(path: Path) -> np.ndarray:
    table = pd.read_csv(path)
    return merge_segments(table[["start", "end"]].to_numpy(dtype=float).reshape(-1, 2))


def assign_windows(times: np.ndarray, starts: np.ndarray, window: float) -> np.ndarray:
    """Index of the window whose centre is nearest each time (-1 when none covers it)."""
    if not len(starts):
        return np.full(len(times), -1)
    centres = starts + window / 2
    idx = np.abs(times[:, None] - centres[None, :]).argmin(axis=1)
    covered = (times >= starts[idx]) & (times < starts[idx] + window)
    return np.where(covered, idx, -1)


def glitch_free(starts: np.ndarray, window: float, truth: pd.DataFrame, margin: float = 1.0):
    """Mask of windows that no strain glitch (peak +- duration/2 + margin) touches."""
    table = truth[truth["strain_snr"] > 0]
    lo = table["gps_peak"].to_numpy() - table["duration"].to_numpy() / 2 - margin
    hi = table["gps_peak"].to_numpy() + table["duration"].to_numpy() / 2 + margin
    ends = starts + window
    touched = (lo[None, :] < ends[:, None]) & (hi[None, :] > starts[:, None])
    return ~touched.any(axis=1)


def operating_point(summary: dict) -> dict:
    """The thresholds an inference run used (``OperatingPoint.describe()``); runs written
    before the veto was calibrated hold ``{"snr2", "min_area"}`` for both decisions."""
    th = summary["thresholds"]
    return th if "veto_snr2" in th else OperatingPoint.from_thresholds(th).describe()


class Accumulator:
    """Streaming sums over windows: ROC extents, accuracy counts, denoise and energy."""

    def __init__(
        self,
        cfg: Config,
        summary: dict,
        witnessed: pd.DataFrame,
        free: set,
        targets: np.ndarray,
    ) -> None:
        ev = cfg.evaluate
        self.step = float(summary["time_step"])
        self.freqs = np.asarray(summary["frequencies"])
        th = operating_point(summary)
        self.snr2 = float(th["denoise_snr2"])
        self.min_area = int(th["denoise_min_area"])
        self.veto_snr2 = float(th["veto_snr2"])
        self.veto_min_area = int(th["veto_min_area"])
        self.padding = float(summary["infer_config"]["veto_padding"])
        # the model's own operating point is always a point of its ROC
        self.roc_thresholds = sorted({*map(float, ev.roc_thresholds), self.veto_snr2})
        first, last, count = ev.accuracy_thresholds
        self.acc_thresholds = np.linspace(first, last, int(count))
        self.extents = {t: [] for t in self.roc_thresholds}
        #: the perfect-model reference: real-strain clusters touching ``targets`` ``(m, 2)``
        #: (GPS extents of the witnessed glitches in strain)
        self.targets = targets
        self.perfect = {t: [] for t in self.roc_thresholds}
        self.acc = np.zeros((len(self.acc_thresholds), 2))
        self.windows = 0
        self.witnessed = witnessed
        self.free = free
        self.energy = np.zeros(2)  # real, cleaned over glitch-free windows
        self.per_glitch: list[dict] = []

    def add(self, starts: np.ndarray, real: torch.Tensor, gen: torch.Tensor) -> None:
        for thr in self.roc_thresholds:
            self.extents[thr] += map(tuple, self._veto_extents(gen, thr, starts))
            real_extents = self._veto_extents(real, thr, starts)
            self.perfect[thr] += map(tuple, real_extents[touching(real_extents, self.targets)])
        resid = residual(real, gen).abs()
        for k, thr in enumerate(self.acc_thresholds):
            real_has = has_cluster(real, thr, self.min_area)
            gen_has = has_cluster(gen, thr, self.min_area)
            resid_has = has_cluster(resid, thr, self.min_area)
            self.acc[k, 0] += float((real_has == gen_has).sum())
            self.acc[k, 1] += float((~resid_has).sum())
        self.windows += len(starts)
        cleaned = torch.clamp(real - predicted_glitch(gen), min=0.0)
        for b, start in enumerate(starts):
            if round(float(start), 4) in self.free:
                self.energy += [float(real[b].sum()), float(cleaned[b].sum())]
        _, area = cluster_areas(resid, self.snr2)
        lookup = {round(float(s), 4): b for b, s in enumerate(starts)}
        for row in self.witnessed.itertuples():
            b = lookup.get(round(float(row.window_start), 4))
            if b is None:
                continue
            half = min(row.duration / 2, 1.0) + 0.1
            cols = local_bins(row.gps_peak, half, float(starts[b]), self.step, real.shape[-1])
            real_max = float(real[b][:, cols].max())
            resid_max = float(resid[b][:, cols].max())
            left = bool((area[b][:, cols] >= self.min_area).any())
            self.per_glitch.append(
                {
                    "id": int(row.id),
                    "family": row.family,
                    "strain_snr": float(row.strain_snr),
                    "real_max_snr2": real_max,
                    "residual_max_snr2": resid_max,
                    "cleaned": not left,
                }
            )

    def _veto_extents(self, spec: torch.Tensor, thr: float, starts: np.ndarray) -> np.ndarray:
        """``(n, 2)`` GPS extents (padded) of the veto clusters of ``spec`` at ``thr``."""
        found = find_clusters(spec, thr, self.veto_min_area, starts, self.step, self.freqs)
        return np.array(
            [(c.gps_start - self.padding, c.gps_end + self.padding) for cs in found for c in cs]
        ).reshape(-1, 2)

    def accuracy_curves(self) -> dict:
        n = max(self.windows, 1)
        return {
            "snr2_threshold": self.acc_thresholds.tolist(),
            "veto_accuracy": (self.acc[:, 0] / n).tolist(),
            "denoise_accuracy": (self.acc[:, 1] / n).tolist(),
        }


def denoise_figures(per_glitch: list[dict], snr2: float, energy: np.ndarray) -> dict:
    """Cleaning figures over witnessed glitches, and the glitch-free energy change."""
    table = pd.DataFrame(per_glitch)
    visible = table[table["real_max_snr2"] >= snr2] if len(table) else table
    reduction = (
        1.0 - visible["residual_max_snr2"] / visible["real_max_snr2"]
        if len(visible)
        else pd.Series(dtype=float)
    )
    return {
        "witnessed_glitches": len(table),
        "cleaned_fraction": float(table["cleaned"].mean()) if len(table) else float("nan"),
        "visible_glitches": len(visible),
        "visible_cleaned_fraction": float(visible["cleaned"].mean())
        if len(visible)
        else float("nan"),
        "median_max_snr2_reduction": float(reduction.median()) if len(visible) else float("nan"),
        "glitch_free_energy_change": float(energy[1] / energy[0] - 1.0)
        if energy[0] > 0
        else float("nan"),
    }


@dataclass(frozen=True)
class EvaluationReport:
    """The scorecard of an inference run against the twin's truth (OUT/report.json).

    ``learned`` and ``baseline`` (the hveto rounds, None without ``--hveto`` at infer):
    efficiency on witnessed and unwitnessed glitches, deadtime (fraction of livetime),
    glitch time covered, and efficiency at the fixed deadtimes (``at_deadtime``);
    ``learned_roc``: the same at every generated-SNR^2 threshold; ``perfect_model``: the
    ROC and fixed-deadtime efficiencies of the real strain's clusters at the witnessed
    glitches (what a veto whose segments cover each glitch reaches with a perfect model);
    ``comparison``: each veto (and the perfect model) at the other's deadtime; ``ideal``:
    a veto that knows every witness trigger;
    ``per_family``: glitches vetoed per family; ``denoise``: the spectrogram residual's
    figures; ``per_glitch``: one row per witnessed glitch; ``operating_point``: the
    model's calibrated threshold; ``subtraction``: ``glitchflow clean``'s figures against
    the truth strain (None without ``--clean``).  Times in GPS s, livetime in s."""

    truth: str
    infer: str
    model: dict
    livetime_s: float
    strain_snr_threshold: float
    snr2_threshold: float
    operating_point: dict
    windows: int
    learned: dict
    learned_roc: list[dict]
    perfect_model: dict
    ideal: dict
    denoise: dict
    accuracy_curves: dict
    per_glitch: list[dict]
    baseline: dict | None
    per_family: dict
    comparison: dict | None = None
    subtraction: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def run_evaluate(
    cfg: Config,
    truth_path: str | Path,
    infer_dir: str | Path,
    out: str | Path,
    clean_dir: str | Path | None = None,
) -> EvaluationReport:
    """Score an inference run (and a ``glitchflow clean`` run) against the truth; write the
    report; return it.  The subtraction is scored against the truth frames beside
    ``truth_path`` (key ``subtraction``)."""
    infer_dir, out = Path(infer_dir), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary_path = infer_dir / "summary.json"
    if not summary_path.is_file():
        raise FileNotFoundError(f"{summary_path}: not an inference directory (run infer first)")
    summary = json.loads(summary_path.read_text())
    truth = read_truth(truth_path)
    ev = cfg.evaluate
    live = read_segments(infer_dir / "live.csv")
    vetoes = read_segments(infer_dir / "vetoes.csv")
    groups = glitch_groups(truth, live, ev.strain_snr_threshold)
    windows = pd.read_csv(infer_dir / "windows.csv")
    window = float(summary["infer_config"]["window"])
    starts = windows["gps_start"].to_numpy(dtype=float)
    witnessed = groups["witnessed"].copy()
    idx = assign_windows(witnessed["gps_peak"].to_numpy(dtype=float), starts, window)
    witnessed["window_start"] = np.where(idx >= 0, starts[np.maximum(idx, 0)], np.nan)
    free = {round(float(s), 4) for s in starts[glitch_free(starts, window, truth)]}
    acc = Accumulator(cfg, summary, witnessed, free, witnessed_extents(truth))
    acc = accumulate_windows(acc, infer_dir, summary)
    learned = veto_figures(groups, vetoes, live)
    learned_roc, perfect_roc = (
        [
            {"snr2_threshold": t, **veto_figures(groups, np.array(e).reshape(-1, 2), live)}
            for t, e in extents.items()
        ]
        for extents in (acc.extents, acc.perfect)
    )
    report = {
        "truth": str(truth_path),
        "infer": str(infer_dir),
        "model": summary["model"],
        "livetime_s": float(np.sum(live[:, 1] - live[:, 0])) if len(live) else 0.0,
        "strain_snr_threshold": ev.strain_snr_threshold,
        "snr2_threshold": acc.snr2,
        "operating_point": operating_point(summary),
        "windows": acc.windows,
        "learned": learned | {"at_deadtime": at_deadtimes(learned_roc, ev.fixed_deadtimes)},
        "learned_roc": learned_roc,
        "perfect_model": {
            "roc": perfect_roc,
            "at_deadtime": at_deadtimes(perfect_roc, ev.fixed_deadtimes),
        },
        "ideal": ideal_bound(groups["witnessed"], cfg.scan.snr2_threshold),
        "denoise": denoise_figures(acc.per_glitch, acc.snr2, acc.energy),
        "accuracy_curves": acc.accuracy_curves(),
        "per_glitch": acc.per_glitch,
        "baseline": None,
    }
    base_file = infer_dir / "baseline" / "baseline.json"
    if base_file.is_file():
        report |= baseline_sections(cfg, infer_dir, base_file, groups, live, learned, learned_roc)
        report["comparison"]["perfect_model_efficiency_at_baseline_deadtime"] = (
            efficiency_at_deadtime(perfect_roc, report["baseline"]["deadtime"])
        )
    report["per_family"] = family_table(report)
    if clean_dir is not None:
        report["subtraction"] = evaluate_subtraction(
            Path(truth_path).parent,
            clean_dir,
            cfg.signal.strain_channel,
            cfg.signal,
            ev.strain_snr_threshold,
            acc.snr2,
        )
    write_json_atomic(out / "report.json", report, default=float)
    write_markdown(report, out / "report.md")
    if clean_dir is not None:
        with open(out / "report.md", "a") as md:
            md.write(subtraction_markdown(report["subtraction"]))
    plot_report(report, out)
    return EvaluationReport(**report)


def accumulate_windows(acc: Accumulator, infer_dir: Path, summary: dict) -> Accumulator:
    """Feed every spectrogram shard of an inference run (real and generated strain) to
    ``acc``, shard by shard (memory stays at one shard)."""
    shape = tuple(summary["window_shape"])
    shards = infer_dir / "spectrograms"
    for path in sorted(shards.glob("*.parquet")) if shards.is_dir() else []:
        table = pads.dataset(str(path), format="parquet").to_table(
            columns=["gps_start", "real", "generated"]
        )
        real = torch.from_numpy(tensor_column(table, "real", shape).astype(np.float32))
        gen = torch.from_numpy(tensor_column(table, "generated", shape).astype(np.float32))
        acc.add(table.column("gps_start").to_numpy(), real, gen)
    return acc


def baseline_sections(cfg, infer_dir: Path, base_file: Path, groups, live, learned, learned_roc):
    """The report's ``baseline`` (hveto figures, ROC, efficiency at fixed deadtimes) and
    ``comparison`` (each veto at the other's deadtime) sections."""
    ev = cfg.evaluate
    base = json.loads(base_file.read_text())
    segments = read_segments(infer_dir / "baseline" / "vetoes.csv")
    roc = baseline_roc(base, groups, live, ev.roc_thresholds)
    fig = veto_figures(groups, segments, live)
    comparison = {
        "baseline_deadtime": fig["deadtime"],
        "baseline_efficiency": fig["witnessed_efficiency"],
        "learned_efficiency_at_baseline_deadtime": efficiency_at_deadtime(
            learned_roc, fig["deadtime"]
        ),
        "learned_deadtime": learned["deadtime"],
        "learned_efficiency": learned["witnessed_efficiency"],
        "baseline_efficiency_at_learned_deadtime": efficiency_at_deadtime(roc, learned["deadtime"]),
    }
    baseline = fig | {"roc": roc, "at_deadtime": at_deadtimes(roc, ev.fixed_deadtimes)}
    return {"baseline": baseline, "comparison": comparison}


def subtraction_markdown(sub: dict) -> str:
    """The ``subtraction`` section of report.md: per family and the glitch-free PSD ratio."""
    lines = [
        "",
        "## Subtraction (witnessed glitches, residual = cleaned - glitch-free strain)",
        "",
        "| family | glitches | residual SNR < 5 | median SNR reduction | median SNR in -> out "
        "| spectrogram cleaned |",
        "|---|---|---|---|---|---|",
    ]
    for family, f in sub["families"].items():
        if not f["glitches"]:
            lines.append(f"| {family} | 0 | - | - | - | - |")
            continue
        lines.append(
            f"| {family} | {f['glitches']} | {100 * f['fraction_below_snr5']:.0f}% | "
            f"{100 * f['median_reduction']:.0f}% | {f['median_injected_snr']:.1f} -> "
            f"{f['median_residual_snr']:.1f} | "
            f"{_pct_or_dash(f.get('spectrogram_cleaned_fraction'))} |"
        )
    dev = sub["psd_ratio_max_deviation"]
    lines += [
        "",
        f"Glitch-free PSD ratio cleaned/raw, 1/3-octave bands 20-1000 Hz: max |ratio - 1| = "
        f"{'n/a' if dev is None else f'{dev:.4f}'}",
        "",
        f"Spectrogram cleaned (loudest Q-tile of cleaned strain in the glitch window below "
        f"SNR^2 {sub.get('spectrogram_snr2', 16):g}): "
        f"{_pct_or_dash(sub.get('spectrogram_cleaned_fraction'))} of witnessed glitches.",
        "",
    ]
    return "\n".join(lines)


def _pct_or_dash(x) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"
