"""Runs on a local multi-node Ray cluster (a head and two worker nodes of one CPU each), for tests/test_ray.py.

Run inside a network namespace of its own with only loopback up, so that every node is 127.0.0.1:
``unshare -n sh -c 'ip link set lo up && python -m tests.ray_cluster ARGS.json'``. ARGS.json holds the main.py
options of the runs (``runs``: name -> argv); it prints one JSON line: name -> [exit status, summary line, actors
lost].
Run ``node_lost`` removes a worker node once its first video is done; run ``poison`` uses actors that die
(as by a decoder's segfault) when given a video named poison.mp4. With ``store`` in ARGS.json, a SeaweedFS S3
server runs in the namespace too (see ``_object_store``); run ``store_node_lost`` adds a worker node and removes it
once its first video is done, and the objects under ``store["download"]`` are copied out at the end. With
``served`` (a folder), an HTTP server in the namespace serves it, ``{http}`` in the runs' arguments is its URL,
and its paths under ``/stalls`` stop sending halfway. Run ``capacity_lost`` removes every worker node once its
first video is done; its entry also says how many seconds after that the run first said so and when it ended.
Run ``resume`` (after it) gets a worker node back first.
"""
from __future__ import annotations

import io
import json
import os
import sys
import time
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Iterator

import fsspec
import ray
from ray.cluster_utils import Cluster

from extractors.cli import parse_options
from extractors.ray_backend import RayExecutor, WorkerActor
from extractors.runner import run
from io_utils.errors import UsageError
from tests.poison import die_on_poison
from tests.storage import http_server, s3_environment, seaweedfs


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


class LosesEveryNode(RayExecutor):
    """Removes every worker node of ``cluster`` when the first video is done (``removed_at``: when)."""

    def __init__(self, cluster: Cluster):
        super().__init__()
        self._cluster, self.removed_at = cluster, None

    def run(self, extraction, jobs, on_result, on_progress=None) -> None:
        def remove_nodes_once(result):
            on_result(result)
            if self.removed_at is None:
                self.removed_at = time.monotonic()
                for node in list(self._cluster.worker_nodes):
                    self._cluster.remove_node(node)

        super().run(extraction, jobs, remove_nodes_once, on_progress)


class _StampedLines(io.StringIO):
    """Standard error that remembers when it was first written to with ``text`` in a line."""

    def __init__(self, text: str):
        super().__init__()
        self._text, self.first_at = text, None

    def write(self, data: str) -> int:
        if self.first_at is None and self._text in data:
            self.first_at = time.monotonic()
        sys.__stderr__.write(data)
        return super().write(data)


def main() -> None:
    with open(sys.argv[1]) as handle:
        spec = json.load(handle)
    with _object_store(spec.get("store")), _served(spec.get("served")) as http:
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
        nodes = [cluster.add_node(num_cpus=1) for _ in range(2)]
        results = {}
        for name, argv in spec["runs"].items():
            argv = [part.replace("{http}", http or "") for part in argv]
            options = parse_options([*argv, "--backend", "ray", "--ray_address", cluster.address])
            if name == "store_node_lost":  # a fresh node to lose: the cluster has two worker nodes again
                nodes[0] = cluster.add_node(num_cpus=1)
            if name == "resume":
                cluster.add_node(num_cpus=1)
            executor = {"node_lost": LosesANode(cluster, nodes[0]), "store_node_lost": LosesANode(cluster, nodes[0]),
                        "capacity_lost": LosesEveryNode(cluster),
                        "poison": RayExecutor(ray.remote(PoisonedWorker))}.get(name, RayExecutor())
            summary, errors = io.StringIO(), _StampedLines("no worker is running")
            with redirect_stdout(summary), redirect_stderr(errors):
                try:
                    code, last = run(options, executor), summary.getvalue().strip().splitlines()[-1]
                except UsageError as error:
                    code, last = 1, f"error: {error}"
            results[name] = [code, last, executor.actors_lost]
            if name == "capacity_lost":
                removed = executor.removed_at
                results[name] += [errors.first_at and errors.first_at - removed, time.monotonic() - removed]
        cluster.shutdown()
        if spec.get("store"):
            _download(spec["store"])
    print(json.dumps(results))


@contextmanager
def _served(folder: str | None) -> Iterator[str | None]:
    """An HTTP server of ``folder`` in this namespace, its ``/stalls`` paths stalling; its URL."""
    if not folder:
        yield None
        return
    with http_server(Path(folder)) as server:
        server.stalls = "/stalls"
        yield server.url


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
