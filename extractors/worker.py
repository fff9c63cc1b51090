"""One worker process: loads its model once, then pulls videos from the main process until told to stop.

The worker talks to the main process over its own pipe only (no shared queue whose lock a killed process
could leave held). It asks for the next video when its decoding thread needs one, so it holds at most one
video beyond the one on the model. Messages, worker -> main: ``("next",)``, ``("result", job_id, status,
reason)`` with status ``done | skipped | failed``, ``("fatal", message)``; main -> worker: ``("job", job_id,
VideoJob, alone)`` or ``("stop",)``; ``alone`` asks the worker not to start another video before this one is
finished (it is a retry after a worker died holding it).
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
import traceback
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Iterator

import torch

from extractors.base import BaseExtractor
from extractors.registry import extractor_class
from io_utils.claims import HEARTBEAT_S, Claim, outputs_complete, remove_leftover_temporaries
from io_utils.errors import UsageError, VideoError
from io_utils.outputs import open_sink, output_files, output_folder, print_features
from io_utils.video_list import VideoJob


def worker_main(args: argparse.Namespace, device: str, threads: int, connection: Connection) -> None:
    """Entry point of a spawned worker process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the main process decides
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    if threads:
        torch.set_num_threads(threads)
    args = argparse.Namespace(**{**vars(args), "cpu": device == "cpu",
                                 "device_ids": [int(device.split(":")[1])] if device != "cpu" else args.device_ids})
    try:
        extractor = extractor_class(args.feature_type)(args)
    except UsageError as error:
        connection.send(("fatal", str(error)))
        return
    except Exception as error:
        connection.send(("fatal", f"the model could not be loaded on {device}: {type(error).__name__}: {error}"))
        return
    _Worker(extractor, connection).run()


class _Worker:
    def __init__(self, extractor: BaseExtractor, connection: Connection):
        self.extractor = extractor
        self.args = extractor.args
        self.connection = connection
        self._send_lock = threading.Lock()
        self._claims: dict[int, Claim] = {}
        self._claims_lock = threading.Lock()
        self._stopped = threading.Event()
        self._alone: tuple[int, threading.Event] | None = None  # a video to finish before taking the next

    def run(self) -> None:
        heartbeat = threading.Thread(target=self._heartbeat, daemon=True)
        heartbeat.start()
        try:
            outcomes = self.extractor.extract_many(self._jobs(), path_of=lambda item: item[1].path, sink_of=self._sink)
            for (job_id, job), outcome in outcomes:
                self._finish(job_id, job, outcome)
        except (EOFError, BrokenPipeError, ConnectionResetError):
            pass  # the main process is gone: nothing left to report to
        finally:
            self._stopped.set()
            heartbeat.join()  # a thread still alive at exit makes torch abort the process (SIGABRT)
            with self._claims_lock:
                for claim in self._claims.values():
                    claim.release()

    def _jobs(self) -> Iterator[tuple[int, VideoJob]]:
        """Videos from the main process, minus those already done or claimed by another run."""
        while True:
            self._send(("next",))
            message = self.connection.recv()
            if message[0] == "stop":
                return
            _, job_id, job, alone = message
            skip_reason = self._claim(job_id, job)
            if skip_reason:
                self._send(("result", job_id, "skipped", skip_reason))
                continue
            finished = threading.Event()
            self._alone = (job_id, finished) if alone else None
            yield job_id, job
            if alone:
                finished.wait()

    def _claim(self, job_id: int, job: VideoJob) -> str | None:
        if self.args.on_extraction == "print":
            return None
        paths_by_key = self._paths(job)
        paths = list(paths_by_key.values())
        if not self.args.overwrite and outputs_complete(paths):
            return "outputs exist"
        claim = Claim.acquire(_lock_path(paths_by_key[self.extractor.main_key]))
        if claim is None:
            return "being extracted by another run"
        if not self.args.overwrite and outputs_complete(paths):  # finished by another run meanwhile
            claim.release()
            return "outputs exist"
        remove_leftover_temporaries(paths)
        with self._claims_lock:
            self._claims[job_id] = claim
        return None

    def _finish(self, job_id: int, job: VideoJob, outcome: dict | Exception) -> None:
        try:
            if isinstance(outcome, Exception):
                raise outcome
            if self.args.on_extraction == "print":
                print_features(job.path, outcome)
                sys.stdout.flush()
            result = ("result", job_id, "done", "")
        except VideoError as error:
            result = ("result", job_id, "failed", str(error))
        except Exception as error:
            if self.args.verbose:
                traceback.print_exception(error)
            result = ("result", job_id, "failed", f"{type(error).__name__}: {error}")
        finally:
            with self._claims_lock:
                claim = self._claims.pop(job_id, None)
            if claim:
                claim.release()
        self._send(result)
        if self._alone is not None and self._alone[0] == job_id:
            self._alone[1].set()

    def _sink(self, item: tuple[int, VideoJob]):
        """Where a video's outputs go, batch by batch (written under temporary names until complete)."""
        return open_sink(self.args.on_extraction, self._paths(item[1]), self.args.flow_bound)

    def _paths(self, job: VideoJob) -> dict[str, Path]:
        folder = output_folder(self.args.output_path, self.extractor.feature_type, self.args.output_direct)
        return output_files(job, self.extractor.output_keys, self.extractor.main_key, folder, self.args.on_extraction)

    def _send(self, message: tuple) -> None:
        with self._send_lock:
            self.connection.send(message)

    def _heartbeat(self) -> None:
        while not self._stopped.wait(HEARTBEAT_S):
            with self._claims_lock:
                for claim in self._claims.values():
                    claim.refresh()


def _lock_path(main_output: Path) -> Path:
    return main_output.with_name(main_output.name + ".lock")


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks: temporary files and claims go
