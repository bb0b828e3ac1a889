"""Cluster configs: they parse, pin the same Ray as pyproject, name entrypoints and import
paths that exist, and ask for the resources their commands need."""

from __future__ import annotations

import importlib
import re
import shlex

import pytest
import yaml

from glitchflow.config import load_config
from glitchflow.config.base import apply_overrides, validate_model
from tests.conftest import REPO
from tests.test_packaging import _ray_pin

CLUSTER = REPO / "cluster"
YAMLS = sorted(CLUSTER.rglob("*.yaml"))


def _docs(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _walk(node, key):
    """Every value under ``key`` anywhere in a YAML tree."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                yield v
            yield from _walk(v, key)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item, key)


def test_there_are_launcher_kuberay_and_slurm_configs():
    names = {p.relative_to(CLUSTER).as_posix() for p in CLUSTER.rglob("*") if p.is_file()}
    assert {"launcher/aws.yaml", "launcher/onprem.yaml", "kuberay/raycluster.yaml"} <= names
    assert {f"kuberay/rayjob-{s}.yaml" for s in ("preprocess", "train", "tune")} <= names
    assert {"kuberay/rayservice.yaml", "slurm/glitchflow.sbatch", "Dockerfile"} <= names


def _version() -> str:
    import tomllib

    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: p.relative_to(CLUSTER).as_posix())
def test_yaml_parses_and_pins_the_ray_version(path):
    pin = _ray_pin()
    docs = _docs(path)
    assert docs
    for doc in docs:
        for version in _walk(doc, "rayVersion"):
            assert version == pin
        for image in _walk(doc, "image"):  # an exact tag (package and Ray) or a digest
            assert "@sha256:" in image or image.endswith(f":{_version()}-ray{pin}-gpu"), image


def _entrypoint_args(entry: str) -> tuple[str, list[str], list[str]]:
    words = shlex.split(entry)
    assert words[0] == "python"
    script = words[1]
    overrides = [w for w in words[2:] if "=" in w and not w.startswith("--")]
    options = [w for w in words[2:] if w not in overrides]
    return script, options, overrides


@pytest.mark.parametrize("stage", ["preprocess", "train", "tune"])
def test_rayjob_entrypoints_exist_and_fit_their_workers(stage):
    (doc,) = _docs(CLUSTER / "kuberay" / f"rayjob-{stage}.yaml")
    script, options, overrides = _entrypoint_args(doc["spec"]["entrypoint"])
    assert (REPO / script).is_file() and script == f"jobs/{stage}.py"
    config = options[options.index("--config") + 1]
    assert (REPO / config).is_file()
    cfg = load_config(REPO / config, overrides)  # every override is a valid config key
    groups = doc["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    gpus = sum(
        g["replicas"] * int(c["resources"]["limits"].get("nvidia.com/gpu", 0))
        for g in groups
        for c in g["template"]["spec"]["containers"]
    )
    cpus = sum(
        g["replicas"] * int(c["resources"]["limits"]["cpu"])
        for g in groups
        for c in g["template"]["spec"]["containers"]
    )
    if stage == "preprocess":
        res = cfg.preprocess.resources
        need_gpu, need_cpu = res.workers * res.gpus_per_worker, res.workers * res.cpus_per_worker
    else:
        tr = cfg.train
        trials = cfg.tune.max_concurrent_trials if stage == "tune" else 1
        need_gpu = trials * tr.workers * (1 if tr.use_gpu else 0)
        need_cpu = trials * tr.workers * tr.cpus_per_worker
    assert need_gpu <= gpus and need_cpu <= cpus, (need_gpu, gpus, need_cpu, cpus)


def test_online_rayjob_runs_the_online_service_within_its_workers():
    (doc,) = _docs(CLUSTER / "kuberay" / "rayjob-online.yaml")
    script, options, overrides = _entrypoint_args(doc["spec"]["entrypoint"])
    assert script == "jobs/online.py" and (REPO / script).is_file()
    for flag in ("--frames", "--model", "--out", "--config"):
        assert flag in options
    cfg = load_config(REPO / options[options.index("--config") + 1], overrides)
    groups = doc["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    cpus = sum(
        g["replicas"] * int(c["resources"]["limits"]["cpu"])
        for g in groups
        for c in g["template"]["spec"]["containers"]
    )
    assert cfg.online.workers * cfg.online.cpus_per_worker <= cpus
    assert doc["spec"]["backoffLimit"] > 0  # restarted jobs resume where they stopped
    for group in [doc["spec"]["rayClusterSpec"]["headGroupSpec"], *groups]:
        pod = group["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"]
        mounts = {m["mountPath"]: m for c in pod["containers"] for m in c["volumeMounts"]}
        assert mounts["/frames"]["readOnly"]


def _pod_specs(node):
    """Every pod spec (a dict holding ``containers``) in a YAML tree."""
    if isinstance(node, dict):
        if "containers" in node:
            yield node
        for value in node.values():
            yield from _pod_specs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _pod_specs(item)


@pytest.mark.parametrize(
    "path", sorted((CLUSTER / "kuberay").glob("ray*.yaml")), ids=lambda p: p.name
)
def test_kuberay_pods_run_unprivileged(path):
    pods = [pod for doc in _docs(path) for pod in _pod_specs(doc)]
    assert pods
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in pod["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_network_policy_keeps_ray_ports_inside_the_cluster():
    (policy,) = _docs(CLUSTER / "kuberay" / "networkpolicy.yaml")
    assert policy["kind"] == "NetworkPolicy" and policy["spec"]["policyTypes"] == ["Ingress"]
    rules = policy["spec"]["ingress"]
    opened = {p["port"] for rule in rules if "ports" in rule for p in rule["ports"]}
    assert opened <= {6379, 8265, 8000}  # no rule opens a Ray port to everyone
    assert all("from" in rule and rule["from"] for rule in rules)


def test_rayservice_import_path_and_serve_settings():
    from glitchflow.config import ServeConfig

    for path in (CLUSTER / "kuberay" / "rayservice.yaml", REPO / "configs" / "serve_app.yaml"):
        doc = _docs(path)[0]
        serve_cfg = doc["spec"]["serveConfigV2"] if "spec" in doc else doc
        apps = (
            yaml.safe_load(serve_cfg)["applications"]
            if isinstance(serve_cfg, str)
            else (serve_cfg["applications"])
        )
        for app in apps:
            module, attr = app["import_path"].split(":")
            mod = importlib.import_module(module)
            assert callable(getattr(mod, attr))
            parsed = mod.ServeArgs.model_validate(app["args"])
            assert (REPO / parsed.config).is_file()
            base = load_config(REPO / parsed.config).model_dump(mode="json")
            serve = apply_overrides(base, parsed.overrides)["serve"]
            validate_model(ServeConfig, serve, str(path))
            if "spec" in doc:
                gpus = serve.get("gpus_per_replica", 0)
                groups = doc["spec"]["rayClusterConfig"]["workerGroupSpecs"]
                have = max(
                    int(c["resources"]["limits"].get("nvidia.com/gpu", 0))
                    for g in groups
                    for c in g["template"]["spec"]["containers"]
                )
                assert gpus <= have


def test_slurm_script_starts_head_then_workers_and_runs_a_job_script():
    text = (CLUSTER / "slurm" / "glitchflow.sbatch").read_text()
    assert re.search(r"ray start --head", text) and re.search(r"ray start --address", text)
    assert "#SBATCH --nodes" in text and 'python "$@"' in text
