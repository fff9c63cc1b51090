"""One worker process: loads its model once, then pulls videos from the main process until told to stop.

The worker talks to the main process over its own pipe only (no shared queue whose lock a killed process
could leave held). It asks for the next video when its decoding thread needs one, so it holds at most one
video beyond the one on the model. Messages, worker -> main: ``("next",)``, ``("result", job_id, status,
reason[, record])`` with status ``done | skipped | failed`` (``record``: what the manifest keeps of a video
that is done), ``("fatal", message)``; main -> worker: ``("job", job_id,
VideoJob, alone)`` or ``("stop",)``; ``alone`` asks the worker not to start another video before this one is
finished (it is a retry after a worker died holding it).
"""
from __future__ import annotations

import signal
import socket
import sys
import threading
import time
import traceback
from dataclasses import replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Iterator

import torch

from extractors.base import BaseExtractor
from extractors.config import RunConfig
from extractors.registry import extractor_class
from io_utils.claims import HEARTBEAT_S, Claim, outputs_complete, remove_leftover_temporaries
from io_utils.errors import UsageError, VideoError
from io_utils.manifest import source_facts
from io_utils.outputs import open_sink, output_files, output_folder, print_features, stored_shapes
from io_utils.video_list import VideoJob

PROGRESS_EVERY_S = 2.0
OUTPUTS_EXIST = "outputs exist"  # the reason a video is skipped when a run finds its outputs complete


def worker_main(config: RunConfig, device: str, threads: int, connection: Connection) -> None:
    """Entry point of a spawned worker process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the main process decides
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        serve(config, device, threads, connection)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # stopped while shutting down: end quietly


def serve(config: RunConfig, device: str, threads: int, connection) -> None:
    """Load the model on ``device``, then extract the videos the other end of ``connection`` hands out (anything
    with ``send`` and ``recv``: a pipe, a Ray mailbox) until it says stop."""
    if threads:
        torch.set_num_threads(threads)
    device_ids = (int(device.split(":")[1]),) if device != "cpu" else config.device_ids
    config = replace(config, cpu=device == "cpu", device_ids=device_ids)
    try:
        extractor = extractor_class(config.feature_type)(config)
    except UsageError as error:
        connection.send(("fatal", str(error)))
        return
    except Exception as error:
        connection.send(("fatal", f"the model could not be loaded on {device}: {type(error).__name__}: {error}"))
        return
    _Worker(extractor, connection).run()


def output_paths(config: RunConfig, job: VideoJob) -> dict[str, Path]:
    """Where the outputs of ``job`` go (nothing for ``print``); known in the main process too, which cleans up
    after a worker it had to kill."""
    keys = [*extractor_class(config.feature_type).feature_keys(config), "fps", "timestamps_ms"]
    folder = output_folder(config.output_path, config.feature_type, config.output_direct)
    return output_files(job, keys, keys[0], folder, config.on_extraction)


def clean_up_after(config: RunConfig, job: VideoJob, pid: int, host: str = socket.gethostname()) -> None:
    """Remove what the killed worker ``pid`` (of ``host``) left of ``job``: its temporary files and its claim (only
    if the claim is its own: the temporaries of a video another run holds are that run's)."""
    paths = output_paths(config, job)
    if not paths:
        return
    lock = _claim_path(config, paths)
    if Claim.held_by(lock, pid, host):
        remove_leftover_temporaries(paths.values())
        lock.unlink(missing_ok=True)


class _Worker:
    def __init__(self, extractor: BaseExtractor, connection: Connection):
        self.extractor = extractor
        self.config = extractor.config
        self.connection = connection
        self._last_progress = 0.0
        self._send_lock = threading.Lock()
        self._claims: dict[int, Claim] = {}
        self._claims_lock = threading.Lock()
        self._stopped = threading.Event()
        self._alone: tuple[int, threading.Event] | None = None  # a video to finish before taking the next
        self._started: dict[int, float] = {}  # job id -> when its decoding began
        self._facts: dict[int, dict] = {}  # job id -> what the reader knew of its stream

    def run(self) -> None:
        heartbeat = threading.Thread(target=self._heartbeat, daemon=True)
        heartbeat.start()
        try:
            outcomes = self.extractor.extract_many(self._jobs(), path_of=lambda item: item[1].path, sink_of=self._sink,
                                                   on_progress=self._progress,
                                                   on_facts=lambda item, facts: self._facts.update({item[0]: facts}))
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
            self._started[job_id] = time.monotonic()
            yield job_id, job
            if alone:
                finished.wait()

    def _claim(self, job_id: int, job: VideoJob) -> str | None:
        if self.config.on_extraction == "print":
            return None
        paths_by_key = output_paths(self.config, job)
        paths = list(paths_by_key.values())
        if not self.config.overwrite and outputs_complete(paths):
            return OUTPUTS_EXIST
        claim = Claim.acquire(_claim_path(self.config, paths_by_key))
        if claim is None:
            return "being extracted by another run"
        if not self.config.overwrite and outputs_complete(paths):  # finished by another run meanwhile
            claim.release()
            return OUTPUTS_EXIST
        remove_leftover_temporaries(paths)
        with self._claims_lock:
            self._claims[job_id] = claim
        return None

    def _finish(self, job_id: int, job: VideoJob, outcome: dict | Exception) -> None:
        try:
            if isinstance(outcome, Exception):
                raise outcome
            if self.config.on_extraction == "print":
                print_features(job.path, outcome)
                sys.stdout.flush()
            result = ("result", job_id, "done", "", self._record(job_id, job, outcome))
        except VideoError as error:
            result = ("result", job_id, "failed", str(error))
        except Exception as error:
            if self.config.verbose:
                traceback.print_exception(error)
            result = ("result", job_id, "failed", f"{type(error).__name__}: {error}")
        finally:
            self._started.pop(job_id, None)
            self._facts.pop(job_id, None)
            with self._claims_lock:
                claim = self._claims.pop(job_id, None)
            if claim:
                claim.release()
        self._send(result)
        if self._alone is not None and self._alone[0] == job_id:
            self._alone[1].set()

    def _record(self, job_id: int, job: VideoJob, outputs: dict) -> dict:
        """The manifest's entry of a video: its source, its stream, its outputs' shapes and the time taken."""
        streamed = {key: path for key, path in output_paths(self.config, job).items() if key not in outputs}
        shapes = {**{key: list(value.shape) for key, value in outputs.items()}, **stored_shapes(streamed)}
        return {**source_facts(job.path), "stream": self._facts.get(job_id, {}), "outputs": shapes,
                "seconds": round(time.monotonic() - self._started.get(job_id, time.monotonic()), 3)}

    def _sink(self, item: tuple[int, VideoJob]):
        """Where a video's outputs go, batch by batch (written under temporary names until complete)."""
        return open_sink(self.config.on_extraction, output_paths(self.config, item[1]), self.config.flow_bound)

    def _progress(self, item: tuple[int, VideoJob], done_s: float, total_s: float) -> None:
        now = time.monotonic()
        if now - self._last_progress >= PROGRESS_EVERY_S:
            self._last_progress = now
            self._send(("progress", item[0], done_s, total_s))

    def _send(self, message: tuple) -> None:
        with self._send_lock:
            self.connection.send(message)

    def _heartbeat(self) -> None:
        while not self._stopped.wait(HEARTBEAT_S):
            with self._claims_lock:
                for claim in self._claims.values():
                    claim.refresh()


def _claim_path(config: RunConfig, paths: dict[str, Path]) -> Path:
    """The lock file of a video: beside its main output."""
    main_output = paths[extractor_class(config.feature_type).feature_keys(config)[0]]
    return main_output.with_name(main_output.name + ".lock")


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks: temporary files and claims go
