"""``--backend ray``: the worker loop as Ray actors across a cluster, with the local pool's contract.

One actor per GPU of the cluster (``num_gpus=1``), or with ``--cpu`` ``--num_workers`` actors of
``--cpus_per_worker`` CPUs. Each actor runs the same worker as a local process (``extractors.worker.serve``:
the model loaded once, decoding prefetched, claims, atomic outputs), and the driver runs the same scheduling
loop (``extractors/scheduling.py``); only the transport differs: the messages travel through a small mailbox
actor instead of a pipe. So the driver hands out videos as actors free up, an actor lost with its node has its
videos handed to the others, and a video that takes down two actors is marked failed.

Every node must see the repository (it is put on the actors' ``PYTHONPATH``), the checkpoints (the driver finds
or downloads them once, into ``--weights_dir`` or the torch hub cache: a shared path) and ``--output_path``
(a shared file system; an actor that cannot write there stops the run with one line).
"""
from __future__ import annotations

import asyncio
import os
import pickle
import signal
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import ray.util.scheduling_strategies

from extractors.config import RunConfig
from extractors.scheduling import Assign, Fatal, OnProgress, OnResult, Stop, Worker, WorkerMessage, schedule
from extractors.worker import Extraction, serve
from io_utils.errors import UsageError
from io_utils.remote_outputs import RemoteFolder
from io_utils.video_list import VideoJob

_REPOSITORY = str(Path(__file__).resolve().parents[1])


@ray.remote(num_cpus=0)
class Mailboxes:
    """Messages from the actors to the driver (one inbox) and the driver's replies (one box per actor), as pickled
    bytes: the mailbox never unpickles them, so its process imports none of the models' libraries."""

    def __init__(self):
        self._inbox: asyncio.Queue | None = None
        self._replies: dict[int, asyncio.Queue] = {}

    def _queue(self, worker_id: int | None) -> asyncio.Queue:  # queues belong to the actor's event loop
        if worker_id is None:
            self._inbox = self._inbox or asyncio.Queue()
            return self._inbox
        return self._replies.setdefault(worker_id, asyncio.Queue())

    async def send(self, worker_id: int, message: bytes) -> None:
        await self._queue(None).put((worker_id, message))

    async def take(self, timeout_s: float) -> list[tuple[int, bytes]]:
        """Every message waiting, after waiting up to ``timeout_s`` for the first."""
        inbox = self._queue(None)
        try:
            messages = [await asyncio.wait_for(inbox.get(), timeout_s)]
        except asyncio.TimeoutError:
            return []
        while not inbox.empty():
            messages.append(inbox.get_nowait())
        return messages

    async def reply(self, worker_id: int, message: bytes) -> None:
        await self._queue(worker_id).put(message)

    async def receive(self, worker_id: int) -> bytes:
        return await self._queue(worker_id).get()


class _MailboxConnection:
    """What ``serve`` needs of a pipe, over the mailboxes."""

    def __init__(self, mailboxes, worker_id: int):
        self._mailboxes, self._worker_id = mailboxes, worker_id

    def send(self, message: WorkerMessage) -> None:
        ray.get(self._mailboxes.send.remote(self._worker_id, pickle.dumps(message)))

    def recv(self) -> Assign | Stop:
        return pickle.loads(ray.get(self._mailboxes.receive.remote(self._worker_id)))


class WorkerActor:
    """The body of a worker actor (``RayWorker`` is its Ray actor class)."""

    def run(self, extraction: Extraction, worker_id: int, mailboxes, threads: int) -> None:
        connection = _MailboxConnection(mailboxes, worker_id)
        problem = _unwritable(extraction)
        if problem:
            connection.send(Fatal(problem))
            return
        device = "cuda:0" if ray.get_gpu_ids() else "cpu"  # Ray shows an actor its own GPU only
        serve(extraction, device, threads, connection)


RayWorker = ray.remote(WorkerActor)


def _unwritable(extraction: Extraction) -> str | None:
    """Why this node cannot write the outputs (of any feature type of the run), if it cannot."""
    config = extraction.config
    if config.on_extraction == "print":
        return None
    for layout in (part.layout for part in extraction.every):
        if layout.remote:
            try:
                RemoteFolder(layout.remote).check_writable()
            except UsageError as error:
                return f"node {socket.gethostname()}: {error}"
            continue
        try:
            layout.folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=layout.folder):
                pass
        except OSError as error:
            return (f"--output_path {config.output_path} cannot be written on node {socket.gethostname()} ({error}); "
                    "with --backend ray it must be a folder every node sees")
    return None


@dataclass
class _Actor:
    id: int
    handle: Any
    finished: Any  # the ObjectRef of its run


class RayExecutor:
    """``worker_class``: the actor class (tests wrap it). ``actors_lost`` counts the actors that died."""

    def __init__(self, worker_class=RayWorker):
        self.worker_class = worker_class
        self.actors_lost = 0

    def run(self, extraction: Extraction, jobs: list[VideoJob], on_result: OnResult,
            on_progress: OnProgress | None = None) -> None:
        config = extraction.config
        started_ray = _connect(config)
        try:
            transport = _Mailboxes(self, extraction)
            slots = ["cpu"] * config.num_workers if config.cpu else ["gpu"] * _cluster_gpus()
            schedule(transport, slots, jobs, [part.layout for part in extraction.every], on_result, on_progress,
                     config.stall_timeout)
        finally:
            if started_ray:
                ray.shutdown()


def _connect(config: RunConfig) -> bool:
    """Join the cluster (``--ray_address``, ``$RAY_ADDRESS``, a running one) or start one; True if this run
    started (or joined) Ray itself and so must shut it down."""
    if ray.is_initialized():
        return False
    handler = signal.getsignal(signal.SIGTERM)
    try:
        options = dict(runtime_env={"env_vars": {"PYTHONPATH": _REPOSITORY}}, log_to_driver=config.verbose,
                       include_dashboard=False, logging_level="ERROR")
        address = config.ray_address or os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, **options)
        else:
            try:
                ray.init(address="auto", **options)
            except ConnectionError:  # no cluster running: one for this run
                ray.init(**options)
    finally:
        signal.signal(signal.SIGTERM, handler)  # ray.init takes SIGTERM over; a stopped run must clean up
    return True


def _cluster_gpus() -> int:
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if not gpus:
        raise UsageError("the Ray cluster has no GPU; pass --cpu (with --num_workers) to run on its CPUs")
    return gpus


class _Mailboxes:
    """The scheduler's transport to worker actors: one mailbox actor on the driver's node carries every message."""

    def __init__(self, executor: RayExecutor, extraction: Extraction):
        self._executor, self._extraction = executor, extraction
        here = ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(),
                                                                              soft=False)
        self._mailboxes = Mailboxes.options(scheduling_strategy=here).remote()  # lost only with the driver
        self._next_id = 0

    def start(self, slot: str) -> Worker:
        config = self._extraction.config
        resources = {"num_cpus": config.cpus_per_worker} if slot == "cpu" else {"num_gpus": 1}
        handle = self._executor.worker_class.options(**resources, max_restarts=0).remote()
        worker_id, self._next_id = self._next_id, self._next_id + 1
        threads = config.cpus_per_worker if slot == "cpu" else 0
        finished = handle.run.remote(self._extraction, worker_id, self._mailboxes, threads)
        return Worker(slot, _Actor(worker_id, handle, finished))

    def receive(self, workers: list[Worker], timeout_s: float) -> tuple[list[tuple[Worker, WorkerMessage]],
                                                                         list[Worker]]:
        messages = ray.get(self._mailboxes.take.remote(timeout_s))
        done, _ = ray.wait([worker.channel.finished for worker in workers], num_returns=len(workers), timeout=0)
        if done:
            messages += ray.get(self._mailboxes.take.remote(0))  # the last words of the actors that ended
        by_id = {worker.channel.id: worker for worker in workers}
        received = [(by_id[worker_id], pickle.loads(message)) for worker_id, message in messages if worker_id in by_id]
        return received, [worker for worker in workers if worker.channel.finished in done]

    def send(self, worker: Worker, message: Assign | Stop) -> None:
        self._mailboxes.reply.remote(worker.channel.id, pickle.dumps(message))

    def retire(self, worker: Worker) -> str:
        """The actor is killed, also after a normal end: its resources go to a replacement now, not whenever
        Python lets go of its handle (a replacement waiting for them would wait forever). After a task error its
        process may live on too."""
        try:
            ray.get(worker.channel.finished)
            why = "the Ray actor ended early"
        except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as error:
            self._executor.actors_lost += 1
            why = f"the Ray actor died ({type(error).__name__})"
        ray.kill(worker.channel.handle, no_restart=True)
        return why

    def room_for_another(self) -> bool:
        """Whether the cluster has the resources of one more actor now (after losing a node it may not)."""
        config, available = self._extraction.config, ray.available_resources()
        return (available.get("CPU", 0) >= config.cpus_per_worker if config.cpu
                else available.get("GPU", 0) >= 1)

    def no_capacity(self) -> str | None:
        """Why no actor can be placed anywhere, if the nodes alive have not the resources of one in all."""
        config, resources = self._extraction.config, ray.cluster_resources()
        cpus, gpus = resources.get("CPU", 0), resources.get("GPU", 0)
        if (cpus >= config.cpus_per_worker) if config.cpu else (gpus >= 1):
            return None
        needs = f"{config.cpus_per_worker} CPU" if config.cpu else "1 GPU"
        nodes = sum(node["Alive"] for node in ray.nodes())
        return (f"the Ray cluster has {cpus:g} CPU and {gpus:g} GPU on {nodes} node(s) alive, and an actor needs "
                f"{needs}")

    def kill(self, worker: Worker) -> None:
        ray.kill(worker.channel.handle, no_restart=True)

    def stop(self, workers: list[Worker]) -> None:
        for worker in workers:
            self.kill(worker)
        ray.wait([worker.channel.finished for worker in workers], num_returns=len(workers), timeout=10)
