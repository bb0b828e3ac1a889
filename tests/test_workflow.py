"""Pipeline files: validation, step choice and order, arguments, stop at a failing step."""

from __future__ import annotations

import pytest
import yaml

from glitchflow.cli import build_parser, main
from glitchflow.config import ConfigError
from glitchflow.workflow import load_pipeline, run_pipeline, select_steps, step_argv
from tests.conftest import CONFIGS


def test_the_shipped_pipeline_file_is_valid_and_every_step_parses():
    spec = load_pipeline(CONFIGS / "pipeline.yaml")
    assert select_steps(spec, None, None)[0] == "synth"
    parser = build_parser()
    for name in spec.steps:
        argv = step_argv(spec, name, CONFIGS)
        args = parser.parse_args(argv)
        assert args.command == spec.steps[name].command
        assert "{workdir}" not in " ".join(argv)
    assert select_steps(spec, None, "train,infer") == ["train", "infer"]
    with pytest.raises(ConfigError, match="unknown steps"):
        select_steps(spec, None, "train,nope")
    with pytest.raises(ConfigError, match="unknown pipeline"):
        select_steps(spec, "nope", None)


def test_bad_pipeline_files_name_the_problem(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"steps": {"a": {"command": "fly"}}}))
    with pytest.raises(ConfigError, match=r"steps\.a\.command"):
        load_pipeline(path)
    path.write_text(
        yaml.safe_dump({"steps": {"a": {"command": "synth"}}, "pipelines": {"p": ["a", "b"]}})
    )
    with pytest.raises(ConfigError, match="unknown steps"):
        load_pipeline(path)


def test_steps_run_in_order_and_a_failing_step_stops_the_pipeline(tmp_path, capsys):
    spec = {
        "config": str(CONFIGS / "demo.yaml"),
        "workdir": str(tmp_path / "run"),
        "steps": {
            "synth": {
                "command": "synth",
                "args": {"out": "{workdir}/twin", "quiet": True},
                "overrides": ["twin.duration=64", "twin.frame_duration=32"],
            },
            "broken": {
                "command": "evaluate",
                "args": {
                    "truth": "{workdir}/twin/truth.csv",
                    "infer": "{workdir}/none",
                    "out": "{workdir}/eval",
                },
            },
            "never": {"command": "synth", "args": {"out": "{workdir}/never"}},
        },
        "pipelines": {"all": ["synth", "broken", "never"]},
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(spec))
    # the broken step prints one line naming the problem and exits 2; nothing after it runs
    assert run_pipeline(path, main, "all", None, ["seed=5"]) == 2
    assert "not an inference directory" in capsys.readouterr().err
    assert len(list((tmp_path / "run" / "twin" / "frames").glob("*.gwf"))) == 2
    assert not (tmp_path / "run" / "never").exists()


def _subcommands(parser) -> dict:
    import argparse

    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def test_overwrite_reaches_every_step_that_takes_it_and_no_other(tmp_path):
    """`glitchflow run --overwrite` re-runs steps over their previous outputs: each step
    whose command refuses an occupied OUT gets --overwrite, the others are untouched."""
    from glitchflow.cli import OVERWRITE_COMMANDS

    parsers = _subcommands(build_parser())
    takes_it = {n for n, p in parsers.items() if "--overwrite" in p._option_string_actions}
    assert takes_it - {"run"} == OVERWRITE_COMMANDS  # run hands it to its steps

    seen = []

    def record(argv):
        seen.append(argv)
        parsers[argv[0]].parse_args(argv[1:])  # every argv still parses
        return 0

    spec = load_pipeline(CONFIGS / "pipeline.yaml")
    run_pipeline(CONFIGS / "pipeline.yaml", record, "full", overwrite=OVERWRITE_COMMANDS)
    assert [a[0] for a in seen] == [spec.steps[s].command for s in spec.pipelines["full"]]
    for argv in seen:
        assert ("--overwrite" in argv) == (argv[0] in OVERWRITE_COMMANDS), argv
    seen.clear()
    run_pipeline(CONFIGS / "pipeline.yaml", record, "full")
    assert not any("--overwrite" in argv for argv in seen)
