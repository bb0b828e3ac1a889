"""``glitchflow run PIPELINE.yaml``: named pipelines of stage steps, chosen and ordered.

A pipeline file names steps (each one ``glitchflow`` subcommand with its
arguments and overrides) and pipelines (ordered lists of step names)::

    config: demo.yaml                 # glitchflow config, relative to this file
    workdir: pipeline-run             # {workdir} in arguments
    default: full
    steps:
      synth: {command: synth, args: {out: "{workdir}/twin"}}
      scan:  {command: scan, args: {frames: "{workdir}/twin/frames", out: "{workdir}/scan"}}
    pipelines:
      full: [synth, scan]

``--pipeline NAME`` picks a pipeline, ``--steps a,b`` runs those steps in that
order instead; trailing ``key=value`` overrides go to every step.  Each step
runs through :func:`glitchflow.cli.main`, the same code as the command line
and the job entrypoints; outputs reach the next step by path or MLflow name.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from glitchflow.config import ConfigError

log = logging.getLogger(__name__)

COMMANDS = (
    "synth",
    "scan",
    "preprocess",
    "train",
    "tune",
    "infer",
    "evaluate",
    "generate",
    "retrain",
)


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid")

    command: Literal[COMMANDS]  # type: ignore[valid-type]
    args: dict[str, str | int | float | bool] = Field(default_factory=dict)
    overrides: list[str] = Field(default_factory=list)


class PipelineFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    config: str | None = None
    workdir: str = "pipeline-run"
    default: str | None = None
    steps: dict[str, Step]
    pipelines: dict[str, list[str]] = Field(default_factory=dict)


def load_pipeline(path: str | Path) -> PipelineFile:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
        spec = PipelineFile.model_validate(raw)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except ValidationError as exc:
        lines = [f"{path}: invalid pipeline file"]
        lines += [f"  {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        raise ConfigError("\n".join(lines)) from None
    for name, steps in spec.pipelines.items():
        unknown = [s for s in steps if s not in spec.steps]
        if unknown:
            raise ConfigError(f"{path}: pipeline {name!r} names unknown steps {unknown}")
    return spec


def select_steps(spec: PipelineFile, pipeline: str | None, steps: str | None) -> list[str]:
    """The steps to run, in order: ``--steps`` wins, then ``--pipeline``, then the default."""
    if steps:
        chosen = [s.strip() for s in steps.split(",") if s.strip()]
        unknown = [s for s in chosen if s not in spec.steps]
        if unknown:
            raise ConfigError(f"unknown steps {unknown}; known: {sorted(spec.steps)}")
        return chosen
    name = pipeline or spec.default
    if name is None:
        raise ConfigError(f"choose --pipeline ({sorted(spec.pipelines)}) or --steps")
    if name not in spec.pipelines:
        raise ConfigError(f"unknown pipeline {name!r}; known: {sorted(spec.pipelines)}")
    return list(spec.pipelines[name])


def step_argv(spec: PipelineFile, name: str, base: Path, overrides=()) -> list[str]:
    """``glitchflow`` argv of one step, with ``{workdir}`` filled in."""
    step = spec.steps[name]
    workdir = spec.workdir if Path(spec.workdir).is_absolute() else str(base / spec.workdir)
    argv = [step.command]
    if spec.config:
        argv += ["--config", str(base / spec.config)]
    for key, value in step.args.items():
        flag = f"--{key.replace('_', '-')}"
        if value is True:
            argv.append(flag)
        elif value is not False:
            argv += [flag, str(value).replace("{workdir}", workdir)]
    return argv + [o.replace("{workdir}", workdir) for o in step.overrides] + list(overrides)


def run_pipeline(
    path, run_step, pipeline=None, steps=None, overrides=(), address=None, overwrite=frozenset()
) -> int:
    """Run the chosen steps in order with ``run_step(argv) -> exit code`` (the CLI's
    ``main``); stop at the first failing step (its exit code).  Steps whose command is in
    ``overwrite`` get ``--overwrite`` (they replace their previous outputs)."""

    path = Path(path).resolve()
    spec = load_pipeline(path)
    chosen = select_steps(spec, pipeline, steps)
    log.info("pipeline %s: %s", path.name, " -> ".join(chosen))
    for name in chosen:
        argv = step_argv(spec, name, path.parent, overrides)
        if address and spec.steps[name].command not in ("synth", "evaluate"):
            argv[1:1] = ["--address", address]
        if spec.steps[name].command in overwrite:
            argv.insert(1, "--overwrite")
        t0 = time.perf_counter()
        log.info("step %s: glitchflow %s", name, " ".join(argv))
        try:
            code = run_step(argv)
        except Exception:
            log.error("pipeline stopped: step %s raised", name)
            raise
        log.info("step %s: exit %s after %.1f s", name, code, time.perf_counter() - t0)
        if code:
            log.error("pipeline stopped: step %s failed (exit %s)", name, code)
            return code
    return 0
