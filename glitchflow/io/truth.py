"""The twin's truth catalogue: one row per injected glitch (CSV, Parquet beside it).

Columns (units):

============  ==============================================================
id            integer, in GPS order
family        blip | scattered_light | environmental | unwitnessed |
              witness_only | decoy
gps_peak      GPS time of the peak in strain, or in the glitching channel
              when it does not reach strain (s)
duration      4 tau for sine-Gaussians (tau = Q / (sqrt2 pi f)); burst
              length for scattered light (s)
frequency     central frequency; peak arch frequency for scattered light (Hz)
q             quality factor (0 for scattered light)
strain_snr    optimal SNR in strain against the strain PSD (0: not in strain)
witnesses     ';'-separated physical channels carrying the glitch (empty for
              unwitnessed); strain-derived channels are not listed
witness_snrs  ';'-separated optimal SNRs in those channels
coupling      strain amplitude per unit witness amplitude (0: no coupling)
channels      ';'-separated channels the glitch was injected into
============  ==============================================================
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

TRUTH_COLUMNS = [
    "id",
    "family",
    "gps_peak",
    "duration",
    "frequency",
    "q",
    "strain_snr",
    "witnesses",
    "witness_snrs",
    "coupling",
    "channels",
]


def write_truth(rows: list[dict], path: str | os.PathLike) -> pd.DataFrame:
    """Write the catalogue to ``path`` (CSV) and the same table as Parquet beside it."""
    table = pd.DataFrame(rows, columns=TRUTH_COLUMNS)
    table.to_csv(path, index=False)
    table.to_parquet(Path(path).with_suffix(".parquet"), index=False)
    return table


def read_truth(path: str | os.PathLike) -> pd.DataFrame:
    """Read a truth catalogue (CSV or Parquet), checking its columns."""
    path = Path(path)
    table = (
        pd.read_parquet(path)
        if path.suffix == ".parquet"
        else pd.read_csv(path, keep_default_na=False, dtype={"witnesses": str, "witness_snrs": str})
    )
    missing = [c for c in TRUTH_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: truth catalogue lacks columns {missing}")
    return table


def true_witness_channels(table: pd.DataFrame) -> set[str]:
    """Channels that witness glitches which reach strain (strain_snr > 0)."""
    names: set[str] = set()
    for value in table.loc[table["strain_snr"] > 0, "witnesses"]:
        names.update(n for n in str(value).split(";") if n)
    return names
