"""How a run's videos reach its workers, whatever carries the messages: the messages, the book of which videos
are still to hand out, and the one scheduling loop that the local pool and Ray both run.

Workers pull: a worker says :class:`Ready` when it needs a video, so one that finishes early takes more. The
messages are the same whatever carries them: a pipe to a local process (``extractors/pool.py``), or a Ray
actor's mailbox (``extractors/ray_backend.py``); a :class:`Transport` is what differs. A worker that dies is
replaced; the videos it held are retried once each, alone, and a video that kills a worker again is marked
failed. What a dead worker left of its videos (temporary files, claims) is removed.

A worker busy with a video reports now and then how long it has made no progress (:class:`Alive`). One that
has made none for ``--stall_timeout`` seconds (a read that blocks, a decoder or a device that hangs), or that
stops reporting at all, is killed and replaced: the video it was stuck on fails as stalled, the others it held
are handed out again. When no worker can run at all (a Ray cluster that lost its nodes), the run says so at once
and every minute, and stops after ``--stall_timeout`` unless capacity comes back.
"""
from __future__ import annotations

import os
import socket
import sys
import time
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
    that is done. In a run of several feature types, ``parts`` holds each type's result (the video's status is
    the worst of them); a result without parts (a video whose worker died) is every type's."""

    status: str
    reason: str = ""
    record: dict | None = None
    parts: dict[str, Result] | None = None

    @classmethod
    def of_parts(cls, job_id: int, parts: dict[str, Result]) -> Result:
        statuses = {part.status for part in parts.values()}
        status = next(status for status in ("failed", "done", "skipped") if status in statuses)
        reason = "; ".join(f"{name}: {part.reason}" for name, part in parts.items()
                           if part.status == status and part.reason)
        return cls(job_id, status, reason, parts=parts)

    def of_type(self, name: str) -> Result:
        """What this says of feature type ``name``."""
        return self.parts[name] if self.parts is not None else self


@dataclass(frozen=True)
class Progress(_AboutAVideo):
    """How far the worker has got into a video (seconds of it done, and in all), now and then."""

    done_s: float
    total_s: float


@dataclass(frozen=True)
class Alive:
    """Sent every ``report_every_s`` while a worker holds a video: the video that holds the work up (None while
    the worker only waits), what it is doing, and how long nothing has progressed."""

    job_id: int | None
    where: str = ""
    idle_s: float = 0.0


@dataclass(frozen=True)
class Fatal:
    """The worker cannot work at all (its model does not load, it cannot write the outputs): the run stops."""

    message: str


WorkerMessage = Union[Hello, Ready, Result, Progress, Alive, Fatal]
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
    heard_at: float = field(default_factory=time.monotonic)  # when it last sent anything
    report: Alive | None = None  # its last report while busy
    stalled: tuple[int, str] | None = None  # the video it was killed for, and why


class Transport(Protocol):
    """How the scheduler reaches its workers."""

    def start(self, slot: str) -> Worker:
        """A new worker on ``slot``."""

    def receive(self, workers: list[Worker], timeout_s: float) -> tuple[list[tuple[Worker, WorkerMessage]],
                                                                         list[Worker]]:
        """Wait up to ``timeout_s`` for something to happen; the messages received, in order, and the workers that
        have ended (after every message they sent)."""

    def send(self, worker: Worker, message: Assign | Stop) -> None:
        """Send ``message``; a worker that is gone meanwhile is noticed by :meth:`receive`."""

    def retire(self, worker: Worker) -> str:
        """Let go of a worker that has ended; why it ended, in words, for the videos it still held."""

    def room_for_another(self) -> bool:
        """Whether a replacement could start now (on a Ray cluster that lost a node, it may not)."""

    def no_capacity(self) -> str | None:
        """Why no worker can run at all, if that is so (a Ray cluster without the resources of one); else None."""

    def kill(self, worker: Worker) -> None:
        """End a stalled worker now, whatever it is doing; :meth:`receive` then reports it ended."""

    def stop(self, workers: list[Worker]) -> None:
        """Stop these workers now (Ctrl-C, a fatal error); return once they are gone."""


POLL_S = 0.5  # the longest the scheduler waits for a message before it checks for stalls
SILENCE_GRACE_S = 10.0  # beyond the stall timeout, for a busy worker that sends nothing at all
CAPACITY_CHECK_S = 5.0  # how often a run with no worker running asks whether any could run
CAPACITY_REPORT_S = 60.0  # how often it says that none can


def schedule(transport: Transport, slots: list[str], jobs: list[VideoJob], layouts: list[OutputLayout],
             on_result: OnResult, on_progress: OnProgress | None = None, stall_timeout_s: float = 0.0) -> None:
    """Run one worker per slot until every job has its result; see the module's docstring (``stall_timeout_s``:
    0 turns the watchdog off; ``layouts``: each feature type's)."""
    book = JobBook(jobs, on_result, on_progress, len(slots))
    capacity = _CapacityWatch(transport, stall_timeout_s)
    workers = [transport.start(slot) for slot in slots]
    try:
        while workers:
            messages, ended = transport.receive(workers, POLL_S)
            for worker, message in messages:
                worker.heard_at = time.monotonic()
                reply = book.answer(worker, message)
                if reply is not None:
                    transport.send(worker, reply)
            for worker in stalled_workers(workers, stall_timeout_s):
                transport.kill(worker)
            capacity.check(workers, book.unfinished)
            for worker in ended:
                workers.remove(worker)
                why = transport.retire(worker)
                if worker.stopping and not worker.jobs:
                    continue  # a normal end
                clean_up_after(worker, jobs, layouts)  # its claims would keep the retries away
                book.lost(worker, why)
                still_asking = any(not other.stopping for other in workers)
                if book.pending and (not still_asking or transport.room_for_another()):
                    workers.append(transport.start(worker.slot))
            never_started = [worker for worker in workers if worker.where is None]
            if never_started and not book.unfinished:  # an actor the cluster had no room for is not needed now
                transport.stop(never_started)
                workers = [worker for worker in workers if worker.where is not None]
    except BaseException:  # Ctrl-C, or a worker's fatal error: stop every worker, remove what they left
        transport.stop(workers)
        for worker in workers:
            clean_up_after(worker, jobs, layouts)
        raise


def report_every_s(stall_timeout_s: float) -> float:
    """How often a busy worker sends :class:`Alive`: a tenth of the timeout, within [0.5, 10] s."""
    return min(10.0, max(0.5, stall_timeout_s / 10))


def stalled_workers(workers: list[Worker], timeout_s: float) -> list[Worker]:
    """The workers to kill now: busy with a video and without progress for ``timeout_s`` by their own report, or
    silent for longer than that (each is marked with the video it is stuck on and why)."""
    if not timeout_s:
        return []
    now, found = time.monotonic(), []
    for worker in workers:
        if worker.stalled or not worker.jobs:
            continue
        report = worker.report if worker.report is not None and worker.report.job_id in worker.jobs else None
        silent_s = now - worker.heard_at
        if report is not None and report.idle_s >= timeout_s:
            worker.stalled = (report.job_id, f"stalled for {int(report.idle_s)} s at {report.where}")
        elif silent_s >= timeout_s + SILENCE_GRACE_S:
            last = f" (last seen {report.where})" if report is not None else ""
            worker.stalled = (report.job_id if report is not None else min(worker.jobs),
                              f"stalled for {int(silent_s)} s: its worker stopped responding{last}")
        else:
            continue
        found.append(worker)
    return found


class _CapacityWatch:
    """Says when no worker is running and none can run (see :meth:`Transport.no_capacity`): at once, then every
    ``CAPACITY_REPORT_S``; stops the run after ``timeout_s`` of that (0: it waits as long as it takes)."""

    def __init__(self, transport: Transport, timeout_s: float):
        self._transport, self._timeout_s = transport, timeout_s
        self._checked_at = 0.0
        self._since: float | None = None  # when it was first found lacking
        self._reported_at = 0.0

    def check(self, workers: list[Worker], unfinished: bool) -> None:
        now = time.monotonic()
        if not unfinished or any(worker.where is not None for worker in workers):
            if self._since is not None:
                print("a worker is running again; the run goes on", file=sys.stderr)
            self._since = None
            return
        if now - self._checked_at < CAPACITY_CHECK_S:
            return
        self._checked_at = now
        problem = self._transport.no_capacity()
        if problem is None:
            self._since = None
            return
        if self._since is None:
            self._since, self._reported_at = now, 0.0
        waited = now - self._since
        if self._timeout_s and waited >= self._timeout_s:
            raise UsageError(f"{problem}; stopped after waiting {waited:.0f} s (--stall_timeout). Run again to "
                             "extract the videos not done")
        if now - self._reported_at >= CAPACITY_REPORT_S or self._reported_at == 0.0:
            self._reported_at = now
            deadline = f"; stopping in {self._timeout_s - waited:.0f} s unless one can" if self._timeout_s else ""
            print(f"no worker is running: {problem}{deadline}", file=sys.stderr)


def clean_up_after(worker: Worker, jobs: list[VideoJob], layouts: list[OutputLayout]) -> None:
    """Remove what a worker that is gone left of the videos it held: their temporary files and claims, of every
    feature type (only the claims that are its own: the temporaries of a video another run holds are that
    run's)."""
    if worker.where is None or layouts[0].on_extraction == "print":
        return  # it never said where it runs (it held nothing), or it writes no file
    for layout in layouts:
        outputs = output_store(layout)
        for index in worker.jobs:
            outputs.clean_up_after(jobs[index], worker.where.pid, worker.where.host)


class JobBook:
    """Which videos are still to hand out, which worker holds which, and how often a video was held by a worker
    that died."""

    def __init__(self, jobs: list[VideoJob], on_result: OnResult, on_progress: OnProgress | None, workers: int):
        self.jobs, self._on_result, self._on_progress = jobs, on_result, on_progress
        self.pending = deque(range(len(jobs)))
        self._results = 0
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
            self._result(message)
        elif isinstance(message, Alive):
            worker.report = message
        elif isinstance(message, Progress):
            if self._on_progress is not None:
                self._on_progress(message)
        elif isinstance(message, Hello):
            worker.where = message
        elif isinstance(message, Fatal):
            raise UsageError(message.message)
        return None

    @property
    def unfinished(self) -> bool:
        """Whether some video has no result yet."""
        return self._results < len(self.jobs)

    def _result(self, result: Result) -> None:
        self._results += 1
        self._on_result(result)

    def lost(self, worker: Worker, why: str) -> None:
        """``worker`` died holding videos: retry each alone; one that was already alone caused the death: fail it.
        A worker killed for a stall fails the video it was stuck on; the others it held go back as they were."""
        if worker.stalled is not None:
            stuck, reason = worker.stalled
            for index in sorted(worker.jobs, reverse=True):
                if index == stuck:
                    self._result(Result(index, "failed", reason))
                else:
                    self.pending.appendleft(index)
            worker.jobs.clear()
            return
        self._deaths_allowed -= 1
        if self._deaths_allowed < 0:
            raise UsageError("workers keep dying; giving up (--verbose shows why)")
        for index in sorted(worker.jobs, reverse=True):
            self._deaths[index] += 1
            if self._deaths[index] == 1:
                self.pending.appendleft(index)
            else:
                self._result(Result(index, "failed", f"{why}, {self._deaths[index]} times on this video"))
        worker.jobs.clear()


def this_host() -> Hello:
    """Where this process runs."""
    return Hello(socket.gethostname(), os.getpid())
