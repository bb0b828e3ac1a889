"""Run preprocessing on a two-node ray.cluster_utils.Cluster (called by the tests)."""

import json
import sys

import ray
from ray.cluster_utils import Cluster

from glitchflow.config import load_config
from glitchflow.pipelines.preprocess import run_preprocess


def main() -> None:
    config, frames, out, overrides = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    try:
        manifest = run_preprocess(load_config(config, overrides), frames, out)
        print(
            "MANIFEST " + json.dumps({"nodes": manifest["nodes"], "n": manifest["windows_written"]})
        )
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main()
