"""The local multi-process pool: one spawned worker process per device (or N CPU workers), fed from the main
process over a pipe each, as workers ask (``extractors/scheduling.py``). A worker that dies (killed, out of
memory, a segfault in a decoder) is replaced; the videos it held are retried once, then marked failed.
"""
from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Callable

import torch.multiprocessing as mp

from extractors.config import RunConfig
from extractors.devices import worker_devices
from extractors.scheduling import JobBook, OnProgress, OnResult
from extractors.worker import clean_up_after, worker_main
from io_utils.video_list import VideoJob

STOP_GRACE_S = 3.0  # how long stopped workers may take to unwind before they are killed


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
        book = JobBook(jobs, on_result, on_progress, len(self.devices))
        workers = [self._start(device) for device in self.devices]
        try:
            while workers:
                ready = wait([w.connection for w in workers] + [w.process.sentinel for w in workers])
                for worker in list(workers):
                    if worker.connection in ready and self._serve(worker, book):
                        continue
                    if worker.process.sentinel not in ready and worker.process.is_alive():
                        continue
                    self._drain(worker, book)
                    worker.process.join()
                    workers.remove(worker)
                    if not worker.jobs and worker.stopping:
                        continue  # a normal exit
                    book.lost(worker.jobs, f"the worker process died ({_describe_exit(worker.process.exitcode)})")
                    if book.pending or any(w.jobs for w in workers):
                        workers.append(self._start(worker.device))
        except BaseException:
            self._terminate(workers, jobs)
            raise

    @staticmethod
    def _serve(worker: _WorkerHandle, book: JobBook) -> bool:
        """Answer one message; False if the pipe is closed (the worker is gone)."""
        try:
            message = worker.connection.recv()
        except (EOFError, ConnectionResetError, OSError):
            return False
        reply = book.answer(worker.jobs, message)
        if reply is not None:
            worker.stopping = reply[0] == "stop"
            try:
                worker.connection.send(reply)
            except OSError:  # BrokenPipeError and the like: the worker died meanwhile
                return False
        return True

    def _drain(self, worker: _WorkerHandle, book: JobBook) -> None:
        """Read the messages a worker sent before it exited."""
        while True:
            try:
                if not worker.connection.poll() or not self._serve(worker, book):
                    return
            except (EOFError, OSError):
                return

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
