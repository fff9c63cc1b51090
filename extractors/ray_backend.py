"""``--backend ray``: the worker loop as Ray actors across a cluster, with the local pool's contract.

One actor per GPU of the cluster (``num_gpus=1``), or with ``--cpu`` ``--num_workers`` actors of
``--cpus_per_worker`` CPUs. Each actor runs the same worker as a local process (``extractors.worker.serve``:
the model loaded once, decoding prefetched, claims, atomic outputs), and the same messages travel through a
small mailbox actor instead of a pipe, so the driver hands out videos as actors free up and keeps the same
book (``extractors/scheduling.py``): an actor lost with its node has its videos handed to the others, a video
that takes down two actors is marked failed.

Every node must see the repository (it is put on the actors' ``PYTHONPATH``), the checkpoints (the driver finds
or downloads them once, into ``--weights_dir`` or the torch hub cache: a shared path) and ``--output_path``
(a shared file system; an actor that cannot write there stops the run with one line).
"""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
import ray.util.scheduling_strategies

from extractors.config import RunConfig
from extractors.scheduling import JobBook, OnProgress, OnResult
from extractors.worker import clean_up_after, serve
from io_utils.errors import UsageError
from io_utils.outputs import output_folder
from io_utils.video_list import VideoJob

_REPOSITORY = str(Path(__file__).resolve().parents[1])
_POLL_S = 0.5


@ray.remote(num_cpus=0)
class Mailboxes:
    """Messages from the actors to the driver (one inbox) and the driver's replies (one box per actor)."""

    def __init__(self):
        self._inbox: asyncio.Queue | None = None
        self._replies: dict[int, asyncio.Queue] = {}

    def _queue(self, worker_id: int | None) -> asyncio.Queue:  # queues belong to the actor's event loop
        if worker_id is None:
            self._inbox = self._inbox or asyncio.Queue()
            return self._inbox
        return self._replies.setdefault(worker_id, asyncio.Queue())

    async def send(self, worker_id: int, message: tuple) -> None:
        await self._queue(None).put((worker_id, message))

    async def take(self, timeout_s: float) -> list[tuple[int, tuple]]:
        """Every message waiting, after waiting up to ``timeout_s`` for the first."""
        inbox = self._queue(None)
        try:
            messages = [await asyncio.wait_for(inbox.get(), timeout_s)]
        except asyncio.TimeoutError:
            return []
        while not inbox.empty():
            messages.append(inbox.get_nowait())
        return messages

    async def reply(self, worker_id: int, message: tuple) -> None:
        await self._queue(worker_id).put(message)

    async def receive(self, worker_id: int) -> tuple:
        return await self._queue(worker_id).get()


class _MailboxConnection:
    """What ``serve`` needs of a pipe, over the mailboxes."""

    def __init__(self, mailboxes, worker_id: int):
        self._mailboxes, self._worker_id = mailboxes, worker_id

    def send(self, message: tuple) -> None:
        ray.get(self._mailboxes.send.remote(self._worker_id, message))

    def recv(self) -> tuple:
        return ray.get(self._mailboxes.receive.remote(self._worker_id))


class WorkerActor:
    """The body of a worker actor (``RayWorker`` is its Ray actor class)."""

    def run(self, config: RunConfig, worker_id: int, mailboxes, threads: int) -> None:
        connection = _MailboxConnection(mailboxes, worker_id)
        problem = _unwritable(config)
        if problem:
            connection.send(("fatal", problem))
            return
        connection.send(("hello", socket.gethostname(), os.getpid()))  # whose claims it will hold
        device = "cuda:0" if ray.get_gpu_ids() else "cpu"  # Ray shows an actor its own GPU only
        serve(config, device, threads, connection)


RayWorker = ray.remote(WorkerActor)


def _unwritable(config: RunConfig) -> str | None:
    """Why this node cannot write the outputs, if it cannot."""
    if config.on_extraction == "print":
        return None
    folder = output_folder(config.output_path, config.feature_type, config.output_direct)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        return (f"--output_path {config.output_path} cannot be written on node {socket.gethostname()} ({error}); "
                "with --backend ray it must be a folder every node sees")
    return None


@dataclass
class _Actor:
    handle: Any
    finished: Any  # the ObjectRef of its run
    jobs: set[int] = field(default_factory=set)
    stopping: bool = False
    where: tuple[str, int] | None = None  # its host and process id, once it has said hello


class RayExecutor:
    def __init__(self, config: RunConfig, worker_class=RayWorker):
        self.config = config
        self.worker_class = worker_class  # the actor class (tests wrap it)
        self._next_id = 0
        self.actors_lost = 0

    def run(self, jobs: list[VideoJob], on_result: OnResult, on_progress: OnProgress | None = None) -> None:
        started_ray = self._connect()
        here = ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(),
                                                                              soft=False)
        mailboxes = Mailboxes.options(scheduling_strategy=here).remote()  # on the driver's node: lost only with it
        count = self._actor_count()
        book = JobBook(jobs, on_result, on_progress, count)
        actors: dict[int, _Actor] = {}
        try:
            for _ in range(count):
                self._start(actors, mailboxes)
            while actors:
                self._answer(ray.get(mailboxes.take.remote(_POLL_S)), actors, book, mailboxes)
                finished, _ = ray.wait([actor.finished for actor in actors.values()], num_returns=len(actors),
                                       timeout=0)
                for ref in finished:
                    self._answer(ray.get(mailboxes.take.remote(0)), actors, book, mailboxes)  # its last words
                    self._retire(ref, actors, book, mailboxes)
        except BaseException:  # Ctrl-C, or a worker's fatal error: stop every actor, remove what they left
            for actor in actors.values():
                ray.kill(actor.handle, no_restart=True)
            ray.wait([actor.finished for actor in actors.values()], num_returns=len(actors), timeout=10)
            for actor in actors.values():
                self._clean_up(actor, jobs)
            raise
        finally:
            if started_ray:
                ray.shutdown()

    def _connect(self) -> bool:
        """Join the cluster (``--ray_address``, ``$RAY_ADDRESS``, a running one) or start one; True if this run
        started (or joined) Ray itself and so must shut it down."""
        if ray.is_initialized():
            return False
        handler = signal.getsignal(signal.SIGTERM)
        try:
            self._init_ray()
        finally:
            signal.signal(signal.SIGTERM, handler)  # ray.init takes SIGTERM over; a stopped run must clean up
        return True

    def _init_ray(self) -> None:
        options = dict(runtime_env={"env_vars": {"PYTHONPATH": _REPOSITORY}}, log_to_driver=self.config.verbose,
                       include_dashboard=False, logging_level="ERROR")
        address = self.config.ray_address or os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, **options)
            return
        try:
            ray.init(address="auto", **options)
        except ConnectionError:  # no cluster running: one for this run
            ray.init(**options)

    def _actor_count(self) -> int:
        if self.config.cpu:
            return self.config.num_workers
        gpus = int(ray.cluster_resources().get("GPU", 0))
        if not gpus:
            raise UsageError("the Ray cluster has no GPU; pass --cpu (with --num_workers) to run on its CPUs")
        return gpus

    def _start(self, actors: dict[int, _Actor], mailboxes) -> None:
        cpu = self.config.cpu
        resources = {"num_cpus": self.config.cpus_per_worker} if cpu else {"num_gpus": 1}
        handle = self.worker_class.options(**resources, max_restarts=0).remote()
        worker_id, self._next_id = self._next_id, self._next_id + 1
        threads = self.config.cpus_per_worker if cpu else 0
        actors[worker_id] = _Actor(handle, handle.run.remote(self.config, worker_id, mailboxes, threads))

    @staticmethod
    def _answer(messages: list[tuple[int, tuple]], actors: dict[int, _Actor], book: JobBook, mailboxes) -> None:
        for worker_id, message in messages:
            actor = actors.get(worker_id)
            if actor is None:
                continue  # from an actor already retired
            if message[0] == "hello":
                actor.where = message[1:]
                continue
            reply = book.answer(actor.jobs, message)
            if reply is not None:
                actor.stopping = reply[0] == "stop"
                mailboxes.reply.remote(worker_id, reply)

    def _retire(self, ref, actors: dict[int, _Actor], book: JobBook, mailboxes) -> None:
        """An actor's run ended: normally, or with its node or process gone; then its videos go to the others."""
        worker_id = next(key for key, actor in actors.items() if actor.finished == ref)
        actor = actors.pop(worker_id)
        try:
            ray.get(ref)
            died = None
        except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as error:
            died = f"the Ray actor died ({type(error).__name__})"
            self.actors_lost += 1
            ray.kill(actor.handle, no_restart=True)  # after a task error the process may live on
        if died is None and actor.stopping and not actor.jobs:
            return
        self._clean_up(actor, book.jobs)  # its claims would keep the retries away (another host: for 10 minutes)
        book.lost(actor.jobs, died or "the Ray actor ended early")
        still_asking = [other for other in actors.values() if not other.stopping]
        if book.pending and (not still_asking or self._room_for_an_actor()):
            self._start(actors, mailboxes)  # without room, it starts when an actor that was told to stop ends

    def _clean_up(self, actor: _Actor, jobs: list[VideoJob]) -> None:
        """Remove the temporary files and claims a dead actor left of the videos it held."""
        if actor.where is not None:
            host, pid = actor.where
            for index in actor.jobs:
                clean_up_after(self.config, jobs[index], pid, host)

    def _room_for_an_actor(self) -> bool:
        """Whether the cluster has the resources of one more actor now (after losing a node it may not)."""
        available = ray.available_resources()
        return (available.get("CPU", 0) >= self.config.cpus_per_worker if self.config.cpu
                else available.get("GPU", 0) >= 1)
