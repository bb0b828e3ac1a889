"""The scorecard's views: ``report.md`` and the plots ``roc.png``, ``accuracy.png``,
``denoise.png`` (the figures themselves are computed in :mod:`.report`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def _pct(x: float | None) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{100 * x:.1f}%"


def write_markdown(report: dict, path: Path) -> None:
    lr, d = report["learned"], report["denoise"]
    rows = [("learned veto", lr)]
    if report["baseline"]:
        rows.append(("hveto baseline", report["baseline"]))
    lines = [
        "# glitchflow scorecard",
        "",
        f"Model {report['model']['uri']} on {report['livetime_s']:.0f} s live; glitches with "
        f"strain SNR >= {report['strain_snr_threshold']:g}; SNR^2 threshold "
        f"{report['snr2_threshold']:g}.",
        "",
        "| method | witnessed eff. | unwitnessed eff. | overall eff. | deadtime | eff/dead "
        "| use % | glitch time covered |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, f in rows:
        lines.append(
            f"| {name} | {_pct(f['witnessed_efficiency'])} ({f['witnessed_vetoed']}/"
            f"{f['witnessed_glitches']}) | {_pct(f['unwitnessed_efficiency'])} | "
            f"{_pct(f['overall_efficiency'])} | {_pct(f['deadtime'])} | "
            f"{f['efficiency_over_deadtime']:.1f} | {f['use_percentage']:.0f} | "
            f"{_pct(f['witnessed_coverage'])} |"
        )
    if report.get("comparison"):
        c = report["comparison"]
        lines += [
            "",
            f"At the baseline's deadtime ({_pct(c['baseline_deadtime'])}) the learned veto's "
            f"efficiency is {_pct(c['learned_efficiency_at_baseline_deadtime'])} against the "
            f"baseline's {_pct(c['baseline_efficiency'])}; a perfect model's veto (the real "
            "strain's clusters at the witnessed glitches, segments covering each glitch) "
            f"would reach {_pct(c.get('perfect_model_efficiency_at_baseline_deadtime'))}.",
        ]
    lines += veto_detail_lines(report)
    lines += [
        "",
        "## Denoising",
        "",
        f"- witnessed glitches cleaned below threshold: {_pct(d['cleaned_fraction'])} "
        f"({d['witnessed_glitches']}); of those visible in strain: "
        f"{_pct(d['visible_cleaned_fraction'])} ({d['visible_glitches']})",
        f"- median reduction of the local max SNR^2: {_pct(d['median_max_snr2_reduction'])}",
        f"- energy change on glitch-free windows: {_pct(d['glitch_free_energy_change'])}",
    ]
    path.write_text("\n".join(lines) + "\n")


def veto_detail_lines(report: dict) -> list[str]:
    """Markdown: the operating point, efficiency at fixed deadtimes, per family, ideal bound."""
    op, ideal = report["operating_point"], report["ideal"]
    methods = [("learned veto", report["learned"])]
    if report["baseline"]:
        methods.append(("hveto baseline", report["baseline"]))
    deadtimes = list(report["learned"]["at_deadtime"])
    lines = [
        "",
        "## Operating point",
        "",
        f"Learned veto: generated SNR^2 >= {op['veto_snr2']:.3g} in a cluster of >= "
        f"{op['veto_min_area']} pixels ("
        + ("calibrated on glitch-free validation time" if op["calibrated"] else "not calibrated")
        + ").",
        "",
        "## Efficiency at fixed deadtimes (witnessed glitches, from the ROC)",
        "",
        "| method | " + " | ".join(f"{100 * float(d):g}% deadtime" for d in deadtimes) + " |",
        "|---|" + "---|" * len(deadtimes),
    ]
    if report.get("perfect_model"):
        methods.append(("perfect model", report["perfect_model"]))
    for name, fig in methods:
        lines.append(
            f"| {name} | " + " | ".join(_pct(v) for v in fig["at_deadtime"].values()) + " |"
        )
    lines += [
        "",
        "## Per family (strain SNR above threshold)",
        "",
        "| family | glitches | learned | hveto | learned at hveto's deadtime "
        "| perfect model at hveto's deadtime | ideal bound |",
        "|---|---|---|---|---|---|---|",
    ]
    for family, row in report["per_family"].items():
        learned, base = row["learned"], row.get("baseline")
        lines.append(
            f"| {family} | {learned['glitches']} | {_pct(learned['efficiency'])} "
            f"({learned['vetoed']}) | "
            + (f"{_pct(base['efficiency'])} ({base['vetoed']})" if base else "n/a")
            + f" | {_pct(row.get('learned_efficiency_at_baseline_deadtime'))} | "
            f"{_pct(row.get('perfect_model_efficiency_at_baseline_deadtime'))} | "
            f"{_pct(row['ideal_efficiency'])} |"
        )
    lines += [
        "",
        f"Ideal bound: {_pct(ideal['witnessed_efficiency'])} of witnessed glitches have a witness "
        f"above the trigger threshold (SNR^2 {ideal['trigger_snr2_threshold']:g}, optimal "
        f"witness SNR >= {ideal['witness_snr_threshold']:.2f}) in its own channel.",
    ]
    return lines


def _finish(fig, ax, xlabel: str, ylabel: str, title: str, path: Path) -> None:
    import matplotlib.pyplot as plt

    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_report(report: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(6, 4.5))
    curves = [("learned veto", report["learned_roc"], "tab:blue")]
    if report["baseline"]:
        curves.append(("hveto baseline", report["baseline"]["roc"], "tab:orange"))
    if report.get("perfect_model"):
        curves.append(("perfect model", report["perfect_model"]["roc"], "tab:grey"))
    for name, roc, colour in curves:
        pts = sorted((p["deadtime"], p["witnessed_efficiency"]) for p in roc)
        x, y = [100 * p[0] for p in pts], [100 * p[1] for p in pts]
        style = "s--" if name.startswith("perfect") else "o-"
        ax.plot(x, y, style, color=colour, label=name, ms=4 if style == "s--" else 6)
    for name, point, colour in (
        ("learned veto (operating point)", report["learned"], "tab:blue"),
        ("hveto baseline (its rounds)", report["baseline"], "tab:orange"),
    ):
        if point and point["deadtime"] > 0:
            ax.plot(
                100 * point["deadtime"],
                100 * point["witnessed_efficiency"],
                "*",
                ms=16,
                color=colour,
                markeredgecolor="k",
                label=name,
            )
    for d in report["learned"]["at_deadtime"]:
        ax.axvline(100 * float(d), color="grey", ls=":", lw=1)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.grid(True, which="both", alpha=0.3)
    ax.set_ylim(0, 102)
    _finish(
        fig,
        ax,
        "deadtime (%)",
        "efficiency on witnessed glitches (%)",
        "ROC: SNR^2 threshold swept",
        out / "roc.png",
    )

    c = report["accuracy_curves"]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(c["snr2_threshold"], c["veto_accuracy"], label="veto accuracy")
    ax.plot(c["snr2_threshold"], c["denoise_accuracy"], label="denoise accuracy")
    ax.set_ylim(0, 1.02)
    _finish(
        fig,
        ax,
        "SNR^2 threshold",
        "accuracy",
        "per-window accuracies (the seed's curves)",
        out / "accuracy.png",
    )

    table = pd.DataFrame(report["per_glitch"])
    fig, ax = plt.subplots(figsize=(5.5, 5))
    if len(table):
        ax.loglog(table["real_max_snr2"], table["residual_max_snr2"].clip(lower=0.1), "o", ms=4)
        lim = max(float(table["real_max_snr2"].max()), 10.0)
        ax.plot([0.1, lim], [0.1, lim], "k:", lw=1)
        ax.axhline(report["snr2_threshold"], color="tab:red", ls="--", lw=1)
    _finish(
        fig,
        ax,
        "real strain max SNR^2 near the glitch",
        "residual max SNR^2",
        "denoising of witnessed glitches",
        out / "denoise.png",
    )
