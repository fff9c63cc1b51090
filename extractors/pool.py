"""The local multi-process pool: one spawned worker process per device (or N CPU workers), each reached over a
pipe of its own, scheduled by ``extractors/scheduling.py``. A worker that dies (killed, out of memory, a segfault
in a decoder) is replaced; the videos it held are retried once, then marked failed.
"""
from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Callable

import torch.multiprocessing as mp

from extractors.devices import worker_devices
from extractors.scheduling import Assign, OnProgress, OnResult, Stop, Worker, WorkerMessage, schedule
from extractors.worker import Extraction, worker_main
from io_utils.video_list import VideoJob

STOP_GRACE_S = 3.0  # how long stopped workers may take to unwind before they are killed


class LocalPoolExecutor:
    """One spawned process per device, fed from the main process on request. ``worker_target`` is the function
    a worker process runs (tests wrap it)."""

    def __init__(self, worker_target: Callable = worker_main):
        self.worker_target = worker_target

    def run(self, extraction: Extraction, jobs: list[VideoJob], on_result: OnResult,
            on_progress: OnProgress | None = None) -> None:
        devices = worker_devices(extraction.config)
        transport = _Pipes(extraction, self.worker_target, devices.count("cpu"))
        schedule(transport, devices, jobs, [part.layout for part in extraction.every], on_result, on_progress,
                 extraction.config.stall_timeout)


@dataclass
class _Process:
    process: mp.Process
    connection: Connection


class _Pipes:
    """The scheduler's transport to local worker processes: a duplex pipe each."""

    def __init__(self, extraction: Extraction, target: Callable, cpu_workers: int):
        self._extraction, self._target = extraction, target
        self._threads_per_cpu_worker = max(1, (os.cpu_count() or 1) // cpu_workers) if cpu_workers else 0
        self._context = mp.get_context("spawn")

    def start(self, slot: str) -> Worker:
        ours, theirs = self._context.Pipe(duplex=True)
        threads = self._threads_per_cpu_worker if slot == "cpu" else 0
        process = self._context.Process(target=self._target, args=(self._extraction, slot, threads, theirs),
                                        daemon=True)
        process.start()
        theirs.close()
        return Worker(slot, _Process(process, ours))

    def receive(self, workers: list[Worker], timeout_s: float) -> tuple[list[tuple[Worker, WorkerMessage]],
                                                                         list[Worker]]:
        ready = wait([w.channel.connection for w in workers] + [w.channel.process.sentinel for w in workers],
                     timeout_s)
        messages: list[tuple[Worker, WorkerMessage]] = []
        ended = []
        for worker in workers:
            process, connection = worker.channel.process, worker.channel.connection
            exited = process.sentinel in ready or not process.is_alive()
            if connection in ready or exited:
                messages += [(worker, message) for message in _available(connection)]
            if exited:
                ended.append(worker)
        return messages, ended

    def send(self, worker: Worker, message: Assign | Stop) -> None:
        try:
            worker.channel.connection.send(message)
        except OSError:  # BrokenPipeError and the like: the worker died meanwhile
            pass

    def retire(self, worker: Worker) -> str:
        worker.channel.process.join()
        return f"the worker process died ({_describe_exit(worker.channel.process.exitcode)})"

    def room_for_another(self) -> bool:
        return True  # a replacement takes the device of the worker it replaces

    def no_capacity(self) -> str | None:
        return None  # this machine's devices stay

    def kill(self, worker: Worker) -> None:
        worker.channel.process.kill()  # SIGKILL: a read blocked in the kernel ends too

    def stop(self, workers: list[Worker]) -> None:
        """SIGTERM lets a worker unwind (temporary files and claims are removed). One still busy after
        ``STOP_GRACE_S`` in all (inside one long kernel, where Python runs no signal handler) is killed; the
        scheduler then removes what it left of its videos."""
        processes = [worker.channel.process for worker in workers]
        for process in processes:
            if process.is_alive():
                process.terminate()
        deadline = time.monotonic() + STOP_GRACE_S
        for process in processes:
            process.join(timeout=max(deadline - time.monotonic(), 0))
            if process.is_alive():
                process.kill()
                process.join()


def _available(connection: Connection) -> list[WorkerMessage]:
    """The messages waiting on ``connection`` (none once it is closed)."""
    messages = []
    try:
        while connection.poll():
            messages.append(connection.recv())
    except (EOFError, ConnectionResetError, OSError):
        pass
    return messages


def _describe_exit(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"
