"""Run a stage on a two-node ray.cluster_utils.Cluster (called by the tests in a subprocess).

usage: run_on_cluster.py STAGE CONFIG FRAMES OUT OVERRIDES_JSON
"""

import json
import sys

import ray
from ray.cluster_utils import Cluster

from glitchflow.config import load_config


def main() -> None:
    stage, config, frames, out = sys.argv[1:5]
    overrides = json.loads(sys.argv[5])
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    try:
        cfg = load_config(config, overrides)
        if stage == "preprocess":
            from glitchflow.pipelines.preprocess import run_preprocess

            manifest = run_preprocess(cfg, frames, out)
            result = {"nodes": list(manifest.nodes), "n": manifest.windows_written}
        elif stage == "scan":
            from glitchflow.pipelines.scan import run_scan

            result = run_scan(cfg, frames, out, overwrite=True).to_dict()
        elif stage == "train":
            from glitchflow.pipelines.train import run_training

            summary = run_training(
                cfg, frames, out, overwrite=True
            )  # FRAMES is the dataset directory here
            import mlflow

            run = mlflow.MlflowClient(summary.tracking_uri).get_run(summary.run_id)
            result = {
                "epochs_run": summary.epochs_run,
                "workers": run.data.params["workers"],
                "test": summary.test,
            }
        else:
            raise SystemExit(f"unknown stage {stage}")
        print("RESULT " + json.dumps(result))
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main()
