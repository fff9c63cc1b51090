"""Runs on a local multi-node Ray cluster (a head and two worker nodes of one CPU each), for tests/test_ray.py.

Run inside a network namespace of its own with only loopback up, so that every node is 127.0.0.1:
``unshare -n sh -c 'ip link set lo up && python -m tests.ray_cluster ARGS.json'``. ARGS.json holds the main.py
options of the runs (``runs``: name -> argv); it prints one JSON line: name -> [exit status, summary line, actors
lost].
Run ``node_lost`` removes a worker node once its first video is done; run ``poison`` uses actors that die
(as by a decoder's segfault) when given a video named poison.mp4.
"""
from __future__ import annotations

import io
import json
import sys
from contextlib import redirect_stdout

import ray
from ray.cluster_utils import Cluster

from extractors.cli import parse_options
from extractors.config import resolve_config
from extractors.ray_backend import RayExecutor, WorkerActor
from extractors.runner import run
from tests.poison import die_on_poison


class PoisonedWorker(WorkerActor):
    def run(self, *args) -> None:
        die_on_poison()
        super().run(*args)


class LosesANode(RayExecutor):
    """Removes ``node`` from ``cluster`` when the first video is done."""

    def __init__(self, cluster: Cluster, node):
        super().__init__()
        self._cluster, self._node = cluster, node

    def run(self, extraction, jobs, on_result, on_progress=None) -> None:
        def remove_node_once(result):
            on_result(result)
            if self._node is not None:
                self._cluster.remove_node(self._node)
                self._node = None

        super().run(extraction, jobs, remove_node_once, on_progress)


def main() -> None:
    with open(sys.argv[1]) as handle:
        runs = json.load(handle)["runs"]
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    nodes = [cluster.add_node(num_cpus=1) for _ in range(2)]
    results = {}
    for name, argv in runs.items():
        config = resolve_config(parse_options([*argv, "--backend", "ray", "--ray_address", cluster.address]))
        executor = {"node_lost": LosesANode(cluster, nodes[0]),
                    "poison": RayExecutor(ray.remote(PoisonedWorker))}.get(name, RayExecutor())
        summary = io.StringIO()
        with redirect_stdout(summary):
            code = run(config, executor)
        results[name] = [code, summary.getvalue().strip().splitlines()[-1], executor.actors_lost]
    cluster.shutdown()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
