"""Runs on a local multi-node Ray cluster (a head and two worker nodes of one CPU each), for tests/test_ray.py.

Run inside a network namespace of its own with only loopback up, so that every node is 127.0.0.1:
``unshare -n sh -c 'ip link set lo up && python -m tests.ray_cluster ARGS.json'``. ARGS.json holds the main.py
options of the runs (``runs``: name -> argv); it prints one JSON line: name -> [exit status, summary line, actors
lost].
Run ``node_lost`` removes a worker node once its first video is done; run ``poison`` uses actors that die
(as by a decoder's segfault) when given a video named poison.mp4. With ``store`` in ARGS.json, a SeaweedFS S3
server runs in the namespace too (see ``_object_store``); run ``store_node_lost`` adds a worker node and removes it
once its first video is done, and the objects under ``store["download"]`` are copied out at the end.
"""
from __future__ import annotations

import io
import json
import os
import sys
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from typing import Iterator

import fsspec
import ray
from ray.cluster_utils import Cluster

from extractors.cli import parse_options
from extractors.config import resolve_config
from extractors.ray_backend import RayExecutor, WorkerActor
from extractors.runner import run
from tests.poison import die_on_poison
from tests.storage import s3_environment, seaweedfs


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
        spec = json.load(handle)
    with _object_store(spec.get("store")):
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
        nodes = [cluster.add_node(num_cpus=1) for _ in range(2)]
        results = {}
        for name, argv in spec["runs"].items():
            config = resolve_config(parse_options([*argv, "--backend", "ray", "--ray_address", cluster.address]))
            if name == "store_node_lost":  # a fresh node to lose: the cluster has two worker nodes again
                nodes[0] = cluster.add_node(num_cpus=1)
            executor = {"node_lost": LosesANode(cluster, nodes[0]), "store_node_lost": LosesANode(cluster, nodes[0]),
                        "poison": RayExecutor(ray.remote(PoisonedWorker))}.get(name, RayExecutor())
            summary = io.StringIO()
            with redirect_stdout(summary):
                code = run(config, executor)
            results[name] = [code, summary.getvalue().strip().splitlines()[-1], executor.actors_lost]
        cluster.shutdown()
        if spec.get("store"):
            _download(spec["store"])
    print(json.dumps(results))


@contextmanager
def _object_store(store: dict | None) -> Iterator[None]:
    """``store``: a SeaweedFS S3 server in this namespace for the whole script (``folder``: its data), set in the
    environment before the nodes start (they inherit it), holding ``uploads`` (local path -> bucket/key)."""
    if not store:
        yield
        return
    with seaweedfs(Path(store["folder"])) as endpoint:
        os.environ.update(s3_environment(endpoint))
        bucket = fsspec.filesystem("s3")
        for local, key in store["uploads"].items():
            bucket.makedirs(key.split("/")[0], exist_ok=True)
            bucket.put(local, key)
        yield


def _download(store: dict) -> None:
    """Every object under ``store["download"]`` (bucket/prefix) into the local folder ``store["download_to"]``."""
    bucket = fsspec.filesystem("s3")
    prefix = store["download"].rstrip("/")
    for key in bucket.find(prefix):
        local = Path(store["download_to"]) / key[len(prefix) + 1:]
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(bucket.cat_file(key))


if __name__ == "__main__":
    main()
