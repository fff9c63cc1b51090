"""Running a video list: the executor interface and the local multi-process pool.

An executor takes the jobs and reports each one's outcome; how and where the work runs is its business. The
local pool starts one spawned worker process per device (or N CPU workers) and hands out videos one at a
time as workers ask, so a worker that finishes early takes the next video. A worker that dies (killed, out
of memory, a segfault in a decoder) is replaced; the videos it held are retried once, then marked failed.
A cluster backend would be another executor with the same ``run``.
"""
from __future__ import annotations

import os
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Callable, Protocol

import torch.multiprocessing as mp

from extractors.config import RunConfig
from extractors.devices import worker_devices
from extractors.worker import clean_up_after, worker_main
from io_utils.errors import UsageError
from io_utils.video_list import VideoJob

OnResult = Callable[[int, str, str], None]  # (job index, "done" | "skipped" | "failed", reason)
OnProgress = Callable[[int, float, float], None]  # (job index, seconds done, seconds in all)
STOP_GRACE_S = 3.0  # how long stopped workers may take to unwind before they are killed


class Executor(Protocol):
    def run(self, jobs: list[VideoJob], on_result: OnResult, on_progress: OnProgress | None = None) -> None:
        """Process every job, calling ``on_result`` exactly once per job, and ``on_progress`` now and then
        while one is extracted, in the calling process."""


@dataclass
class _WorkerHandle:
    device: str
    process: mp.Process
    connection: Connection
    jobs: set[int] = field(default_factory=set)  # handed out, no result yet
    stopping: bool = False  # told there is no more work


class LocalPoolExecutor:
    """One spawned process per device, fed from the main process on request."""

    def __init__(self, config: RunConfig, worker_target: Callable = worker_main):
        self.config = config
        self.worker_target = worker_target  # the function a worker process runs (tests wrap it)
        self.devices = worker_devices(config)
        cpu_workers = self.devices.count("cpu")
        self.threads_per_worker = max(1, (os.cpu_count() or 1) // cpu_workers) if cpu_workers else 0
        self._context = mp.get_context("spawn")

    def run(self, jobs: list[VideoJob], on_result: OnResult, on_progress: OnProgress | None = None) -> None:
        self._on_progress = on_progress
        pending = deque(range(len(jobs)))
        deaths = [0] * len(jobs)  # worker deaths while the video was held; > 0 means "hand it out alone"
        workers = [self._start(device) for device in self.devices]
        unexpected_exits = 0
        try:
            while workers:
                ready = wait([w.connection for w in workers] + [w.process.sentinel for w in workers])
                for worker in list(workers):
                    if worker.connection in ready and self._serve(worker, jobs, pending, deaths, on_result):
                        continue
                    if worker.process.sentinel not in ready and worker.process.is_alive():
                        continue
                    self._drain(worker, jobs, pending, deaths, on_result)
                    worker.process.join()
                    workers.remove(worker)
                    if not worker.jobs and worker.stopping:
                        continue  # a normal exit
                    unexpected_exits += 1
                    if unexpected_exits > 2 * (len(self.devices) + len(jobs)):
                        raise UsageError("worker processes keep dying; giving up (--verbose shows why)")
                    self._requeue(worker, pending, deaths, on_result)
                    if pending or any(w.jobs for w in workers):
                        workers.append(self._start(worker.device))
        except BaseException:
            self._terminate(workers, jobs)
            raise

    def _serve(self, worker: _WorkerHandle, jobs, pending, deaths, on_result) -> bool:
        """Answer one message; False if the pipe is closed (the worker is gone)."""
        try:
            message = worker.connection.recv()
        except (EOFError, ConnectionResetError, OSError):
            return False
        kind = message[0]
        if kind == "next":
            if pending:
                index = pending.popleft()
                worker.jobs.add(index)  # before sending: if the worker is gone, the video is requeued
                reply = ("job", index, jobs[index], deaths[index] > 0)
            else:
                worker.stopping = True
                reply = ("stop",)
            try:
                worker.connection.send(reply)
            except OSError:  # BrokenPipeError and the like: the worker died meanwhile
                return False
        elif kind == "result":
            _, index, status, reason = message
            worker.jobs.discard(index)
            on_result(index, status, reason)
        elif kind == "progress":
            if self._on_progress is not None:
                self._on_progress(*message[1:])
        elif kind == "fatal":
            raise UsageError(message[1])
        return True

    def _drain(self, worker: _WorkerHandle, jobs, pending, deaths, on_result) -> None:
        """Read the messages a worker sent before it exited."""
        while True:
            try:
                if not worker.connection.poll() or not self._serve(worker, jobs, pending, deaths, on_result):
                    return
            except (EOFError, OSError):
                return

    def _requeue(self, worker: _WorkerHandle, pending: deque, deaths: list[int], on_result: OnResult) -> None:
        """Retry the dead worker's videos alone; one that was already alone caused the death: fail it."""
        reason = f"the worker process died ({_describe_exit(worker.process.exitcode)})"
        for index in sorted(worker.jobs, reverse=True):
            deaths[index] += 1
            if deaths[index] == 1:
                pending.appendleft(index)
            else:
                on_result(index, "failed", f"{reason}, {deaths[index]} times on this video")
        worker.jobs.clear()

    def _start(self, device: str) -> _WorkerHandle:
        ours, theirs = self._context.Pipe(duplex=True)
        threads = self.threads_per_worker if device == "cpu" else 0
        process = self._context.Process(target=self.worker_target, args=(self.config, device, threads, theirs),
                                        daemon=True)
        process.start()
        theirs.close()
        return _WorkerHandle(device, process, ours)

    def _terminate(self, workers: list[_WorkerHandle], jobs: list[VideoJob]) -> None:
        """SIGTERM lets a worker unwind (temporary files and claims are removed). One still busy after
        ``STOP_GRACE_S`` in all (inside one long kernel, where Python runs no signal handler) is killed, and what
        it left of its videos is removed here."""
        for worker in workers:
            if worker.process.is_alive():
                worker.process.terminate()
        deadline = time.monotonic() + STOP_GRACE_S
        for worker in workers:
            worker.process.join(timeout=max(deadline - time.monotonic(), 0))
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
                for index in worker.jobs:
                    clean_up_after(self.config, jobs[index], worker.process.pid)


def _describe_exit(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"
