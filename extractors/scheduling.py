"""What every executor shares: the executor interface, and the book of which videos are still to hand out,
which worker holds which, and how often a video was held by a worker that died.

Workers pull: a worker asks for the next video when it needs one (``("next",)``), so one that finishes early
takes more. The messages (see ``extractors/worker.py``) are the same whatever carries them: a pipe to a local
process, or a Ray actor's mailbox. A worker that dies is replaced by the executor; the videos it held are
retried once each, alone, and a video that kills a worker again is marked failed.
"""
from __future__ import annotations

from collections import deque
from typing import Callable, Protocol

from io_utils.errors import UsageError
from io_utils.video_list import VideoJob

# (job index, "done" | "skipped" | "failed", reason[, record: what the manifest keeps of a video that is done])
OnResult = Callable[..., None]
OnProgress = Callable[[int, float, float], None]  # (job index, seconds done, seconds in all)


class Executor(Protocol):
    def run(self, jobs: list[VideoJob], on_result: OnResult, on_progress: OnProgress | None = None) -> None:
        """Process every job, calling ``on_result`` exactly once per job, and ``on_progress`` now and then
        while one is extracted, in the calling process."""


class JobBook:
    def __init__(self, jobs: list[VideoJob], on_result: OnResult, on_progress: OnProgress | None, workers: int):
        self.jobs, self._on_result, self._on_progress = jobs, on_result, on_progress
        self.pending = deque(range(len(jobs)))
        self._deaths = [0] * len(jobs)  # worker deaths while the video was held; > 0 means "hand it out alone"
        self._deaths_allowed = 2 * (workers + len(jobs))

    def answer(self, held: set[int], message: tuple) -> tuple | None:
        """Act on one message of the worker that holds ``held``; the reply it waits for, if any."""
        kind = message[0]
        if kind == "next":
            if not self.pending:
                return ("stop",)
            index = self.pending.popleft()
            held.add(index)  # before the reply is sent: if the worker is gone, the video is requeued
            return ("job", index, self.jobs[index], self._deaths[index] > 0)
        if kind == "result":
            index = message[1]
            held.discard(index)
            self._on_result(*message[1:])
        elif kind == "progress" and self._on_progress is not None:
            self._on_progress(*message[1:])
        elif kind == "fatal":
            raise UsageError(message[1])
        return None

    def lost(self, held: set[int], why: str) -> None:
        """A worker died holding ``held``: retry its videos alone; one that was already alone caused the death:
        fail it."""
        self._deaths_allowed -= 1
        if self._deaths_allowed < 0:
            raise UsageError("workers keep dying; giving up (--verbose shows why)")
        for index in sorted(held, reverse=True):
            self._deaths[index] += 1
            if self._deaths[index] == 1:
                self.pending.appendleft(index)
            else:
                self._on_result(index, "failed", f"{why}, {self._deaths[index]} times on this video")
        held.clear()
