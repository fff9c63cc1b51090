"""How a run's videos reach its workers, whatever carries the messages: the messages, the book of which videos
are still to hand out, and the one scheduling loop that the local pool and Ray both run.

Workers pull: a worker says :class:`Ready` when it needs a video, so one that finishes early takes more. The
messages are the same whatever carries them: a pipe to a local process (``extractors/pool.py``), or a Ray
actor's mailbox (``extractors/ray_backend.py``); a :class:`Transport` is what differs. A worker that dies is
replaced; the videos it held are retried once each, alone, and a video that kills a worker again is marked
failed. What a dead worker left of its videos (temporary files, claims) is removed.
"""
from __future__ import annotations

import os
import socket
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Union

from io_utils.errors import UsageError
from io_utils.output_stores import output_store
from io_utils.outputs import OutputLayout
from io_utils.video_list import VideoJob


@dataclass(frozen=True)
class _AboutAVideo:
    job_id: int  # the video's index in the run's list


# The dialogue: a worker says Hello, then Ready whenever it wants a video; the scheduler answers Assign (or Stop
# when there is no more work); the worker reports a Result per video, Progress now and then, or Fatal.
@dataclass(frozen=True)
class Hello:
    """A worker's first message: where it runs, so that what it leaves can be cleaned up if it dies."""

    host: str
    pid: int


@dataclass(frozen=True)
class Ready:
    """The worker wants another video (its decoding thread is about to need one)."""


@dataclass(frozen=True)
class Assign(_AboutAVideo):
    """A video to extract; ``alone``: finish it before starting another (a retry after a worker died holding it)."""

    job: VideoJob
    alone: bool = False


@dataclass(frozen=True)
class Stop:
    """There is no more work."""


@dataclass(frozen=True)
class Result(_AboutAVideo):
    """A video is finished: ``status`` is done, skipped or failed; ``record``: what the manifest keeps of a video
    that is done."""

    status: str
    reason: str = ""
    record: dict | None = None


@dataclass(frozen=True)
class Progress(_AboutAVideo):
    """How far the worker has got into a video (seconds of it done, and in all), now and then."""

    done_s: float
    total_s: float


@dataclass(frozen=True)
class Fatal:
    """The worker cannot work at all (its model does not load, it cannot write the outputs): the run stops."""

    message: str


WorkerMessage = Union[Hello, Ready, Result, Progress, Fatal]
OnResult = Callable[[Result], None]
OnProgress = Callable[[Progress], None]


class Executor(Protocol):
    def run(self, extraction: Any, jobs: list[VideoJob], on_result: OnResult, on_progress: OnProgress | None = None
            ) -> None:
        """Extract every job (``extraction``: what each worker is given, ``extractors.worker.Extraction``),
        calling ``on_result`` exactly once per job and ``on_progress`` now and then while one is extracted, in the
        calling process."""


@dataclass(eq=False)
class Worker:
    """One worker as the scheduler sees it, whatever carries its messages."""

    slot: str  # what a replacement is started with (the device)
    channel: Any  # how the transport reaches it
    jobs: set[int] = field(default_factory=set)  # handed out, no result yet
    stopping: bool = False  # told there is no more work
    where: Hello | None = None  # where it runs, once it has said


class Transport(Protocol):
    """How the scheduler reaches its workers."""

    def start(self, slot: str) -> Worker:
        """A new worker on ``slot``."""

    def receive(self, workers: list[Worker]) -> tuple[list[tuple[Worker, WorkerMessage]], list[Worker]]:
        """Wait for something to happen; the messages received, in order, and the workers that have ended (after
        every message they sent)."""

    def send(self, worker: Worker, message: Assign | Stop) -> None:
        """Send ``message``; a worker that is gone meanwhile is noticed by :meth:`receive`."""

    def retire(self, worker: Worker) -> str:
        """Let go of a worker that has ended; why it ended, in words, for the videos it still held."""

    def room_for_another(self) -> bool:
        """Whether a replacement could start now (on a Ray cluster that lost a node, it may not)."""

    def stop(self, workers: list[Worker]) -> None:
        """Stop these workers now (Ctrl-C, a fatal error); return once they are gone."""


def schedule(transport: Transport, slots: list[str], jobs: list[VideoJob], layout: OutputLayout,
             on_result: OnResult, on_progress: OnProgress | None = None) -> None:
    """Run one worker per slot until every job has its result; see the module's docstring."""
    book = JobBook(jobs, on_result, on_progress, len(slots))
    workers = [transport.start(slot) for slot in slots]
    try:
        while workers:
            messages, ended = transport.receive(workers)
            for worker, message in messages:
                reply = book.answer(worker, message)
                if reply is not None:
                    transport.send(worker, reply)
            for worker in ended:
                workers.remove(worker)
                why = transport.retire(worker)
                if worker.stopping and not worker.jobs:
                    continue  # a normal end
                clean_up_after(worker, jobs, layout)  # its claims would keep the retries away
                book.lost(worker, why)
                still_asking = any(not other.stopping for other in workers)
                if book.pending and (not still_asking or transport.room_for_another()):
                    workers.append(transport.start(worker.slot))
    except BaseException:  # Ctrl-C, or a worker's fatal error: stop every worker, remove what they left
        transport.stop(workers)
        for worker in workers:
            clean_up_after(worker, jobs, layout)
        raise


def clean_up_after(worker: Worker, jobs: list[VideoJob], layout: OutputLayout) -> None:
    """Remove what a worker that is gone left of the videos it held: their temporary files and claims (only the
    claims that are its own: the temporaries of a video another run holds are that run's)."""
    if worker.where is None or layout.on_extraction == "print":
        return  # it never said where it runs (it held nothing), or it writes no file
    outputs = output_store(layout)
    for index in worker.jobs:
        outputs.clean_up_after(jobs[index], worker.where.pid, worker.where.host)


class JobBook:
    """Which videos are still to hand out, which worker holds which, and how often a video was held by a worker
    that died."""

    def __init__(self, jobs: list[VideoJob], on_result: OnResult, on_progress: OnProgress | None, workers: int):
        self.jobs, self._on_result, self._on_progress = jobs, on_result, on_progress
        self.pending = deque(range(len(jobs)))
        self._deaths = [0] * len(jobs)  # worker deaths while the video was held; > 0 means "hand it out alone"
        self._deaths_allowed = 2 * (workers + len(jobs))

    def answer(self, worker: Worker, message: WorkerMessage) -> Assign | Stop | None:
        """Act on one message of ``worker``; the reply it waits for, if any."""
        if isinstance(message, Ready):
            if not self.pending:
                worker.stopping = True
                return Stop()
            index = self.pending.popleft()
            worker.jobs.add(index)  # before the reply is sent: if the worker is gone, the video is requeued
            return Assign(index, self.jobs[index], self._deaths[index] > 0)
        if isinstance(message, Result):
            worker.jobs.discard(message.job_id)
            self._on_result(message)
        elif isinstance(message, Progress):
            if self._on_progress is not None:
                self._on_progress(message)
        elif isinstance(message, Hello):
            worker.where = message
        elif isinstance(message, Fatal):
            raise UsageError(message.message)
        return None

    def lost(self, worker: Worker, why: str) -> None:
        """``worker`` died holding videos: retry each alone; one that was already alone caused the death: fail it."""
        self._deaths_allowed -= 1
        if self._deaths_allowed < 0:
            raise UsageError("workers keep dying; giving up (--verbose shows why)")
        for index in sorted(worker.jobs, reverse=True):
            self._deaths[index] += 1
            if self._deaths[index] == 1:
                self.pending.appendleft(index)
            else:
                self._on_result(Result(index, "failed", f"{why}, {self._deaths[index]} times on this video"))
        worker.jobs.clear()


def this_host() -> Hello:
    """Where this process runs."""
    return Hello(socket.gethostname(), os.getpid())
