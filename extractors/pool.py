"""Running a video list: the executor interface and the local multi-process pool.

An executor takes the jobs and reports each one's outcome; how and where the work runs is its business. The
local pool starts one spawned worker process per device (or N CPU workers) and hands out videos one at a
time as workers ask, so a worker that finishes early takes the next video. A worker that dies (killed, out
of memory, a segfault in a decoder) is replaced; the videos it held are retried once, then marked failed.
A cluster backend would be another executor with the same ``run``.
"""
from __future__ import annotations

import argparse
import os
import signal
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Callable, Protocol

import torch.multiprocessing as mp

from extractors.worker import worker_main
from io_utils.errors import UsageError
from io_utils.video_list import VideoJob

OnResult = Callable[[int, str, str], None]  # (job index, "done" | "skipped" | "failed", reason)


class Executor(Protocol):
    def run(self, jobs: list[VideoJob], on_result: OnResult) -> None:
        """Process every job, calling ``on_result`` exactly once per job, in the calling process."""


def worker_devices(args: argparse.Namespace) -> list[str]:
    """``--device_ids 0 1`` -> cuda:0, cuda:1; ``--cpu --num_workers N`` -> N CPU workers."""
    if args.cpu:
        return ["cpu"] * args.num_workers
    return [f"cuda:{device_id}" for device_id in args.device_ids]


@dataclass
class _WorkerHandle:
    device: str
    process: mp.Process
    connection: Connection
    jobs: set[int] = field(default_factory=set)  # handed out, no result yet
    stopping: bool = False  # told there is no more work


class LocalPoolExecutor:
    """One spawned process per device, fed from the main process on request."""

    def __init__(self, args: argparse.Namespace, worker_target: Callable = worker_main):
        self.args = args
        self.worker_target = worker_target  # the function a worker process runs (tests wrap it)
        self.devices = worker_devices(args)
        cpu_workers = self.devices.count("cpu")
        self.threads_per_worker = max(1, (os.cpu_count() or 1) // cpu_workers) if cpu_workers else 0
        self._context = mp.get_context("spawn")

    def run(self, jobs: list[VideoJob], on_result: OnResult) -> None:
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
            self._terminate(workers)
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
        process = self._context.Process(target=self.worker_target, args=(self.args, device, threads, theirs), daemon=True)
        process.start()
        theirs.close()
        return _WorkerHandle(device, process, ours)

    @staticmethod
    def _terminate(workers: list[_WorkerHandle]) -> None:
        """SIGTERM lets a worker unwind (temporary files and claims are removed); SIGKILL if it hangs."""
        for worker in workers:
            if worker.process.is_alive():
                worker.process.terminate()
        for worker in workers:
            worker.process.join(timeout=10)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()


def _describe_exit(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"
