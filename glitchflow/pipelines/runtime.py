"""Ray start-up and the checks every stage runs before it asks for resources."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

from glitchflow.io.frames import make_runs

log = logging.getLogger(__name__)

#: file systems that every node of a cluster can see
SHARED_FS = {"nfs", "nfs4", "lustre", "gpfs", "cephfs", "beegfs", "glusterfs", "panfs", "wekafs"}


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that is free now (from the OS's ephemeral range)."""
    import socket

    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def local_ray_options(num_cpus: int | None = None, log_to_driver: bool = True) -> dict:
    """``ray.init`` keywords for a private in-process instance on loopback.

    ``address="local"`` never attaches to another head that happens to run on the
    machine. The dashboard is on because it serves the state API through which Ray
    Train releases the placement groups of a stopped or killed run; without it, a Tune
    trial stopped early keeps its CPUs and the next trial waits forever. The state API
    finds its server through ``RAY_API_SERVER_ADDRESS`` (else a machine-wide marker file
    that another instance may own), so that variable is pinned to this instance's
    dashboard, in the driver and in every worker.
    """
    port = free_port()
    api_server = f"http://127.0.0.1:{port}"
    os.environ["RAY_API_SERVER_ADDRESS"] = api_server
    return {
        "address": "local",
        "num_cpus": num_cpus,
        "include_dashboard": True,
        "dashboard_host": "127.0.0.1",
        "dashboard_port": port,
        "_node_ip_address": "127.0.0.1",
        "log_to_driver": log_to_driver,
        "runtime_env": {"env_vars": {"RAY_API_SERVER_ADDRESS": api_server}},
    }


#: set (to 1) by ``glitchflow --verbose``: Ray's own logs and worker output on the console
VERBOSE_ENV = "GLITCHFLOW_VERBOSE"
#: Ray's loggers, which do not propagate to the root logger
RAY_LOGGERS = ("ray", "ray.data", "ray.train", "ray.tune", "ray.serve")


def verbose() -> bool:
    """Whether Ray's INFO logs and worker output belong on the console."""
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def route_ray_logs(log_file: Path | None = None) -> None:
    """Keep Ray's INFO chatter (Ray Data execution plans and progress lines, Serve
    deployment logs) off the console unless :func:`verbose`: its console handlers show
    WARNING and above, and ``log_file`` (when given) receives everything at INFO."""
    import logging

    import ray.data  # noqa: F401  (configures its logger on import: adjust it after that)

    file_handler = None
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(log_file)
        file_handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
        file_handler.setLevel(logging.INFO)
    for name in RAY_LOGGERS:
        logger = logging.getLogger(name)
        for handler in logger.handlers:
            console = isinstance(handler, logging.StreamHandler) and not isinstance(
                handler, logging.FileHandler
            )
            if console and not verbose():
                handler.setLevel(logging.WARNING)
        if file_handler is not None and not logger.propagate:
            logger.addHandler(file_handler)


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Connect to ``address`` (or ``$RAY_ADDRESS``), else start a private local instance
    (:func:`local_ray_options`).  Worker output reaches the console only when
    :func:`verbose`; otherwise it stays in the Ray session's log directory (logged)."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=verbose())
    else:
        ray.init(**local_ray_options(num_cpus, log_to_driver=verbose()))
    route_ray_logs()
    log.info("ray: %s", ray.cluster_resources())
    if not verbose():
        try:  # where Ray keeps worker output (private API: only for this message)
            from ray._private.worker import _global_node

            logs = f"{_global_node.get_session_dir_path()}/logs"
        except Exception:
            logs = "the Ray session's logs directory"
        log.info("ray worker logs: %s (glitchflow --verbose shows them here)", logs)


#: seconds a stage waits for every actor of its pool to start (then fails, naming it)
ACTOR_POOL_START_S = 600


def block_actor_pool(size: int):
    """Ray Data's actor pool for the stages whose items describe blocks of frames (paths)
    and whose actors read the frames themselves (preprocess, infer, clean): one block in
    flight per actor.  Prefetching a path list buys nothing, and with Ray Data's default
    of two the first actor up took both halves of a short run."""
    import ray

    return ray.data.ActorPoolStrategy(size=size, max_tasks_in_flight_per_actor=1)


def run_items(blocks: list, workers: int) -> list[dict]:
    """Ray Data rows for a :func:`block_actor_pool`: runs of consecutive blocks of frames
    (:func:`~glitchflow.io.frames.make_runs`), each row a JSON list of its blocks' frame
    paths, so that an actor reads a boundary frame once for both of its blocks."""
    runs = make_runs(blocks, workers)
    return [{"blocks": json.dumps([[f.path for f in b] for b in run])} for run in runs]


def run_blocks(batch: dict) -> Iterator[list[str]]:
    """The frame paths of each block of a batch of :func:`run_items` rows, in time order."""
    for run in batch["blocks"]:
        yield from json.loads(run)


def map_block_runs(blocks: list, actor: type, kwargs: dict, resources) -> list[dict]:
    """Every block of frames through a :func:`block_actor_pool` of ``resources.workers``
    actors of class ``actor`` (built with ``kwargs``; called with :func:`run_items` rows,
    which it reads with :func:`run_blocks`), the pool whole before the first run; the
    rows the actors return, in no particular order.  ``resources``: a
    :class:`~glitchflow.config.ResourcesConfig`."""
    import ray

    with whole_actor_pool():
        items = run_items(blocks, resources.workers)
        ds = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            actor,
            fn_constructor_kwargs=kwargs,
            batch_size=1,
            compute=block_actor_pool(min(resources.workers, len(items))),
            num_cpus=resources.cpus_per_worker,
            num_gpus=resources.gpus_per_worker,
        )
        return ds.take_all()


def log_shards_written(what: str, rows: list[dict]) -> None:
    """Log the totals of :func:`map_block_runs` rows of per-block ``windows``/``files``."""
    log.info(
        "%s: %d windows in %d shard files from %d blocks",
        what,
        sum(int(r["windows"]) for r in rows),
        sum(int(r["files"]) for r in rows),
        len(rows),
    )


@contextlib.contextmanager
def whole_actor_pool(timeout_s: int = ACTOR_POOL_START_S):
    """Datasets made and run inside send their first block only once every actor of their
    pool is up (``DataContext.wait_for_min_actors_s``): on a cluster a short run then
    spreads over every node's actors instead of going to whichever started first."""
    import ray

    ctx = ray.data.DataContext.get_current()
    before = ctx.wait_for_min_actors_s
    ctx.wait_for_min_actors_s = max(before, int(timeout_s))
    try:
        yield
    finally:
        ctx.wait_for_min_actors_s = before


def check_resources(cpus: float, gpus: float = 0.0, what: str = "stage") -> None:
    """Fail fast, with numbers, when the cluster cannot hold a stage (Ray would wait forever)."""
    import ray

    have = ray.cluster_resources()
    if cpus > have.get("CPU", 0) + 1e-9 or gpus > have.get("GPU", 0) + 1e-9:
        raise RuntimeError(
            f"{what} needs {cpus:g} CPU and {gpus:g} GPU but the cluster has "
            f"{have.get('CPU', 0):g} CPU and {have.get('GPU', 0):g} GPU; lower the workers or "
            "resources in the config"
        )


def check_stage_resources(resources, what: str) -> None:
    """:func:`check_resources` for a :class:`~glitchflow.config.ResourcesConfig` pool."""
    cpus = resources.workers * resources.cpus_per_worker
    check_resources(cpus, resources.workers * resources.gpus_per_worker, what)


def file_system_type(path: str | Path) -> str:
    """Type of the mounted file system holding ``path`` (from /proc/mounts), or 'unknown'."""
    try:
        target = Path(path).resolve()
        best, kind = "", "unknown"
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) > 2 and str(target).startswith(parts[1]) and len(parts[1]) > len(best):
                best, kind = parts[1], parts[2]
        return kind
    except OSError:
        return "unknown"


def check_shared_storage(*paths: str | Path) -> list[str]:
    """Warn when a multi-node cluster writes to a node-local path; returns the warnings."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    hosts = {n.get("NodeManagerAddress") for n in nodes}
    if len(nodes) < 2:
        return []
    warnings = []
    for path in paths:
        text = str(path)
        if "://" in text:
            continue
        kind = file_system_type(text)
        if kind not in SHARED_FS and not kind.startswith("fuse"):
            msg = (
                f"{text} is on a node-local file system ({kind}) but the cluster has "
                f"{len(nodes)} nodes on {len(hosts)} host(s): workers on other hosts cannot "
                "see it; use shared storage (NFS, Lustre, ...) or an s3:// / gs:// URI"
            )
            log.warning(msg)
            warnings.append(msg)
    return warnings


def release_orphaned_placement_groups() -> list[str]:
    """Remove placement groups that a dead driver left behind and no live actor uses.

    Ray Train creates its workers' placement group so that it outlives a
    controller restart; a driver killed mid-run (an interrupted Tune search)
    takes the actor that would remove it down with it, and the group keeps its
    CPUs/GPUs for good.  A placement group id ends with its job id, so groups
    of dead jobs are found from the job table.  Returns the removed ids.
    """
    import ray
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    try:
        dead = {j["JobID"] for j in ray._private.state.jobs() if j["IsDead"]}
        from ray.util.state import list_actors

        used = {
            a.placement_group_id
            for a in list_actors(filters=[("state", "=", "ALIVE")], limit=10000)
            if a.placement_group_id
        }
    except Exception as exc:  # no job table or state API (no dashboard): leave them
        log.warning("cannot look for orphaned placement groups: %s", exc)
        return []
    removed = []
    for pg_id, info in ray.util.placement_group_table().items():
        if info["state"] != "CREATED" or pg_id in used or pg_id[-8:] not in dead:
            continue
        remove_placement_group(PlacementGroup(ray.PlacementGroupID(bytes.fromhex(pg_id))))
        removed.append(pg_id)
    if removed:
        log.warning("released %d placement groups left by dead drivers", len(removed))
    return removed


def fit_releasing_controller(trainer):
    """``trainer.fit()``, then drop the SIGINT handler Ray Train installs on the main thread.

    That handler holds the run's controller actor, which holds the workers'
    placement group: left in place, every later Ray Train or Tune run in the same
    process finds those CPUs/GPUs taken and waits forever.
    """
    import signal
    import threading

    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if main else None
    try:
        return trainer.fit()
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)


def die_once(marker: str | Path, note: str) -> None:
    """A real worker death, once, for the fault-tolerance tests: unless ``marker`` exists,
    write ``note`` to it, wait for the checkpoint just reported to persist (a crash within
    ~2 s of ``ray.train.report`` loses it), and exit the process."""
    marker = Path(marker)
    if not marker.exists():
        marker.write_text(note)
        time.sleep(3.0)
        os._exit(1)
