"""The configuration side of a search: a trial's config, the default point, the best config.

Pure config functions (no Ray), shared by :mod:`.tune` (which runs the
search) and :mod:`.tune_results` (which reads it back).
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from glitchflow.config import Config, with_overrides
from glitchflow.models.registry import architecture


def trial_config(base: Config, params: dict) -> Config:
    """The base config with a trial's sampled values; epochs = the ASHA ``max_t``."""
    params = dict(params)
    if "train.loss.ssim_weight" in params and "train.loss.l1_weight" not in params:
        params["train.loss.l1_weight"] = 1.0 - float(params["train.loss.ssim_weight"])
    elif "train.loss.l1_weight" in params and "train.loss.ssim_weight" not in params:
        params["train.loss.ssim_weight"] = 1.0 - float(params["train.loss.l1_weight"])
    params["train.epochs"] = base.tune.scheduler.max_t
    items = [f"{k}={json.dumps(v)}" for k, v in params.items()]
    return with_overrides(base, items, "tune trial")


def default_point(cfg: Config) -> dict:
    """The base config's own values of the searched keys (the default architecture);
    an architecture switch left unset (``train.model.attention: null``) is the value the
    architecture takes by default, so the space does not grow a third "unset" choice."""
    data = cfg.model_dump(mode="json")
    defaults = architecture(cfg.train.model.name).defaults
    point = {}
    for key in cfg.tune.space:
        node = data
        for part in key.split("."):
            node = node[part]
        if node is None and key.startswith("train.model."):
            node = defaults.get(key.rpartition(".")[2])
        point[key] = node
    return point


def write_best_config(cfg: Config, params: dict, path: Path) -> None:
    best = trial_config(cfg, params)
    path.write_text(yaml.safe_dump(best.model_dump(mode="json"), sort_keys=False))
