"""The subtraction fit on Ray Train: the machinery of ``glitchflow train`` for an exact solver.

The couplings are a linear least-squares fit, so there is no gradient to descend: each
Ray Train worker runs :func:`~glitchflow.pipelines.clean_passes.block_pass` on its share
of the blocks (block ``i`` on worker ``i % world_size``) and the workers exchange their
blocks' normal equations and fits through the process group that ``TorchTrainer`` sets
up (``torch.distributed`` all-gather: the collective that DDP runs on gradients, here on
the sufficient statistics).  Every worker then holds every block's result in block order
and solves the same equations (so the sums, and the couplings, do not depend on the
number of workers).

After each stage (:data:`~glitchflow.pipelines.clean_passes.STAGES`) rank 0 reports a
checkpoint of the :class:`~glitchflow.pipelines.clean_passes.FitState`; with
``FailureConfig(max_failures=clean.max_failures)`` a worker that dies restarts the group,
which resumes after the last finished stage.  The driver reads the final state from the
run's checkpoint (:func:`fit_on_ray_train`).
"""

from __future__ import annotations

import logging
import pickle
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path

from glitchflow.config import Config, validate_config
from glitchflow.pipelines.clean_passes import STAGES, FitState, advance, block_pass, stage_work
from glitchflow.pipelines.runtime import die_once, fit_releasing_controller

log = logging.getLogger(__name__)

STATE_FILE = "fit_state.pkl"


def _gather(mine: list[tuple[int, dict]], world: int) -> list[dict]:
    """Every worker's ``(block index, result)`` pairs, on every worker, in block order."""
    pairs = list(mine)
    if world > 1:
        import torch.distributed as dist

        everyone: list = [None] * world
        dist.all_gather_object(everyone, mine)
        pairs = [p for part in everyone for p in part]
    return [res for _, res in sorted(pairs, key=lambda p: p[0])]


def _restore(checkpoint) -> FitState:
    if checkpoint is None:
        return FitState()
    with checkpoint.as_directory() as directory:
        return pickle.loads((Path(directory) / STATE_FILE).read_bytes())


def fit_loop_per_worker(config: dict) -> None:
    """Ray Train worker: the stages of the fit not yet in the checkpoint, one report each.

    ``config``: ``cfg`` (config as JSON), ``frames`` ((path, start, duration) of every
    frame), ``witnesses``, ``train`` / ``val`` (blocks as lists of frame paths), and for
    the fault-tolerance test ``crash_after_stage`` with ``crash_marker``."""
    import ray.train
    from ray.experimental import tqdm_ray

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    cfg = validate_config(config["cfg"])
    state = _restore(ray.train.get_checkpoint())
    if state.done:
        log.info("fit-clean: worker %d resumes after %s", rank, STAGES[state.done - 1])
        state = replace(state, resumed_after=state.done)
    while not state.finished:
        stage = STAGES[state.done]
        blocks, kwargs = stage_work(state, cfg, config["train"], config["val"])
        t0 = time.perf_counter()
        mine, share = [], range(rank, len(blocks), world)
        # a bar per worker, drawn by the driver (worker logging does not reach it)
        bar = tqdm_ray.tqdm(total=len(share), desc=f"fit-clean {stage} [worker {rank}]")
        for i in share:
            res = block_pass(
                config["cfg"], blocks[i], config["frames"], config["witnesses"], **kwargs[i]
            )
            mine.append((i, res))
            bar.update(1)
        bar.close()
        state = advance(state, _gather(mine, world), cfg, config["witnesses"])
        metrics = {
            "stage": state.done,
            "blocks": len(blocks),
            "seconds": round(time.perf_counter() - t0, 2),
            "triggers": int(sum(state.counts.values())),
        }
        _report(state, metrics, rank)
        _crash_if_asked(config, state.done, rank)


def _report(state: FitState, metrics: dict, rank: int) -> None:
    import ray.train

    if rank != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as tmp:
        with open(Path(tmp) / STATE_FILE, "wb") as fh:
            pickle.dump(state, fh, protocol=pickle.HIGHEST_PROTOCOL)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def _crash_if_asked(config: dict, done: int, rank: int) -> None:
    """A real worker death after stage ``crash_after_stage``, once (fault-tolerance test)."""
    if config.get("crash_after_stage") == done and rank == 0:
        die_once(config["crash_marker"], str(done))


def fit_on_ray_train(
    cfg: Config,
    frames: list,
    witnesses: list[str],
    train: list[list[str]],
    val: list[list[str]],
    out: Path,
    crash_after_stage: int | None = None,
) -> FitState:
    """Run the fit's stages on a ``TorchTrainer`` of ``clean.resources`` workers (CPU:
    the fit is numpy) with ``FailureConfig(max_failures=clean.max_failures)``; checkpoints
    under ``out/ray_results``.  Returns the finished :class:`FitState`."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    c = cfg.clean
    loop = {
        "cfg": cfg.model_dump(mode="json"),
        "frames": frames,
        "witnesses": list(witnesses),
        "train": train,
        "val": val,
    }
    if crash_after_stage is not None:
        loop |= {"crash_after_stage": crash_after_stage, "crash_marker": str(out / ".crashed")}
    trainer = TorchTrainer(
        fit_loop_per_worker,
        train_loop_config=loop,
        scaling_config=ScalingConfig(
            num_workers=c.resources.workers,
            resources_per_worker={"CPU": c.resources.cpus_per_worker},
        ),
        run_config=RunConfig(
            # a fresh name per fit: Ray Train resumes a run of the same name and storage
            name=f"fit-clean-{uuid.uuid4().hex[:12]}",
            storage_path=str((out / "ray_results").resolve()),
            checkpoint_config=CheckpointConfig(num_to_keep=1),
            failure_config=FailureConfig(max_failures=c.max_failures),
        ),
    )
    result = fit_releasing_controller(trainer)
    if result.checkpoint is None:
        raise RuntimeError(f"fit-clean: the Ray Train run left no checkpoint ({result.error})")
    state = _restore(result.checkpoint)
    if not state.finished:
        raise RuntimeError(
            f"fit-clean: the Ray Train run stopped with {state.done} of {len(STAGES)} "
            f"stages done ({result.error})"
        )
    return state
