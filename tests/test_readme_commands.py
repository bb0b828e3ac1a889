"""Every ``glitchflow`` command in the README (and every ``ray job submit`` entrypoint
call) names real subcommands, real flags, config files that exist and config overrides
that validate: the README cannot drift from the parser and the config schema unseen.

Optional parts written ``[--flag value]`` are checked too (brackets dropped)."""

from __future__ import annotations

import re
import shlex

import pytest

from glitchflow.cli import build_parser
from glitchflow.cli_stages import command_overrides
from glitchflow.config import load_config
from tests.conftest import REPO


def _readme_commands() -> list[list[str]]:
    """glitchflow argument lists of the README's bash blocks (continuations joined)."""
    text = (REPO / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip().rstrip("&").strip()
            if line.startswith("ray job submit"):
                _, _, entry = line.partition(" -- ")
                script = re.match(r"python jobs/(\w+)\.py\s+(.*)", entry)
                if script:
                    line = f"glitchflow {script.group(1).replace('_', '-')} {script.group(2)}"
            line = line.removeprefix(".venv/bin/")
            if line.startswith("glitchflow "):
                line = re.sub(r"\[([^\[\]]*)\]", r"\1", line)
                commands.append(shlex.split(line)[1:])
    return commands


COMMANDS = _readme_commands()


def test_the_readme_shows_every_stage():
    shown = {argv[0] for argv in COMMANDS}
    expected = {"synth", "scan", "preprocess", "train", "tune", "infer", "evaluate"}
    assert expected | {"generate", "serve", "online", "run", "retrain", "clean"} <= shown


@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(a)[:60] for a in COMMANDS])
def test_readme_command_parses_and_its_config_validates(argv):
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"`glitchflow {' '.join(argv)}` does not parse (exit {exc.code})")
    config = getattr(args, "config", None)
    if config is not None:
        assert (REPO / config).is_file(), f"{config} does not exist"
        load_config(REPO / config, command_overrides(args))
