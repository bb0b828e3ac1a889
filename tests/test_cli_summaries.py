"""The console lines the commands print from their stage's typed result (no Ray needed):
each reads the result's fields as the stage fills them."""

from __future__ import annotations

from glitchflow.cli_stages import retrain_summary
from glitchflow.pipelines.retrain import RetrainResult


def _retrain(**changes) -> RetrainResult:
    fields = {
        "span": [1400000000.0, 1400000512.0],
        "training_frames": 6,
        "holdout_frames": 2,
        "selected": ["V1:LSC_DARM_CORR"],
        "train_run_id": "abc",
        "tracking_uri": "sqlite:///x.db",
        "decision": "promote",
        "reason": "candidate better by 0.0123",
        "candidate_version": "3",
        "production_version": "2",
        "metric": "log_l1",
        "scores": {"candidate": {"log_l1": 0.1}, "production": {"log_l1": 0.1123}},
        "wall_seconds": 12.5,
    }
    return RetrainResult(**(fields | changes))


def test_the_retrain_line_compares_both_models():
    line = retrain_summary(_retrain())
    assert "candidate version 3 log_l1 0.1000" in line
    assert "vs production version 2 0.1123" in line
    assert line.endswith("-> promote: candidate better by 0.0123 (12.5 s)")


def test_the_retrain_line_without_a_production_model():
    first = _retrain(production_version=None, scores={"candidate": {"log_l1": 0.2}})
    line = retrain_summary(first)
    assert "log_l1 0.2000 (no production model yet)" in line
