"""One worker: loads its model once, then pulls videos from the scheduler until told to stop.

The worker talks to the scheduler over its own connection only (a pipe to the main process, or a Ray mailbox:
no shared queue whose lock a killed process could leave held), in the messages of ``extractors/scheduling.py``.
It asks for the next video when its decoding thread needs one, so it holds at most one video beyond the one on
the model.
"""
from __future__ import annotations

import os
import shutil
import signal
import sys
import threading
import time
import traceback
from contextlib import closing
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from typing import Any, Iterator, Sequence

import torch

from extractors.base import BaseExtractor
from extractors.config import RunConfig, output_layout
from extractors.devices import device_problem
from extractors.joint import JointExtractor
from extractors.registry import extractor_class
from extractors.scheduling import Alive, Assign, Fatal, Progress, Ready, Result, report_every_s, this_host
from io_utils.activity import ACTIVITY, MODEL, READER
from io_utils.claims import HEARTBEAT_S, Claim
from io_utils.errors import UsageError, VideoError
from io_utils.files import unwritable_reason
from io_utils.output_stores import output_store
from io_utils.outputs import OutputLayout, print_features, stored_shapes
from io_utils.sources import source_facts
from io_utils.video_list import VideoJob

PROGRESS_EVERY_S = 2.0
OUTPUTS_EXIST = "outputs exist"  # the reason a video is skipped when a run finds its outputs complete
_ENDING = "this worker is ending"  # not a reason to skip: the video is not answered, and goes to another worker


@dataclass(frozen=True)
class Extraction:
    """What every worker of a run is given: the feature type's extractor class, the resolved configuration and
    the output layout, and ``also`` the same of each further type taken from the same decode (``--feature_type A
    B ...``). The class travels by reference, so a worker process or actor imports its family's module (and the
    feature type is registered there too, wherever the module lives)."""

    extractor: type[BaseExtractor]
    config: RunConfig
    layout: OutputLayout
    also: tuple[Extraction, ...] = ()

    @classmethod
    def of(cls, configs: RunConfig | Sequence[RunConfig]) -> Extraction:
        first, *others = [cls(extractor_class(config.feature_type), config, output_layout(config))
                          for config in ([configs] if isinstance(configs, RunConfig) else configs)]
        return replace(first, also=tuple(others))

    @property
    def every(self) -> tuple[Extraction, ...]:
        """Each feature type's part of the run, this one first."""
        return (self, *self.also)

    def engine(self, device: str) -> JointExtractor:
        """The extractor a worker on ``device`` runs: the types of the run fed from one decode (a run of one type
        is a joint run of one, without the planning pass)."""
        return JointExtractor([part.config for part in self.every], device=device,
                              layouts={part.config.feature_type: part.layout.staged_here() for part in self.every})


def worker_main(extraction: Extraction, device: str, threads: int, connection: Connection) -> None:
    """Entry point of a spawned worker process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the main process decides
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    sys.unraisablehook = _exit_if_terminated
    try:
        serve(extraction, device, threads, connection)
    except SystemExit as stopped:  # SIGTERM, after the finally blocks removed temporary files and claims
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _exit_now(stopped.code)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # stopped while shutting down: end quietly


def serve(extraction: Extraction, device: str, threads: int, connection: Any) -> None:
    """Say where this worker runs, load the model on ``device``, then extract the videos the other end of
    ``connection`` hands out (anything with ``send`` and ``recv``: a pipe, a Ray mailbox) until it says stop."""
    connection.send(this_host())
    if threads:
        torch.set_num_threads(threads)
    try:
        engine = extraction.engine(device)
    except UsageError as error:
        connection.send(Fatal(str(error)))
        return
    except Exception as error:
        connection.send(Fatal(f"the model could not be loaded on {device}: {type(error).__name__}: {error}"))
        return
    _Worker(engine, connection).run()


class _Worker:
    """Extracts the videos it is handed with ``engine``, the :class:`JointExtractor` of the run's types (one or
    several); each type's outputs are claimed, published and reported on their own, so a video done for one type
    and not another is extracted for the missing type only."""

    def __init__(self, engine: JointExtractor, connection: Connection):
        self.engine = engine
        self.members: list[BaseExtractor] = engine.members
        self.by_type = {member.feature_type: member for member in self.members}
        self.config = self.members[0].config  # the run's own options are every type's
        self.outputs = {member.feature_type: output_store(member.layout) for member in self.members}
        self.connection = connection
        self._last_progress = 0.0
        self._send_lock = threading.Lock()
        self._claims: dict[int, list[Claim]] = {}
        self._claims_lock = threading.Lock()
        self._stopped = threading.Event()
        self._alone: tuple[int, threading.Event] | None = None  # a video to finish before taking the next
        self._started: dict[int, float] = {}  # job id -> when its decoding began
        self._skipped: dict[int, dict[str, str]] = {}  # job id -> the types not extracted from it, and why
        self._facts: dict[tuple[int, str], dict] = {}  # (job id, type) -> what its reader knew of its stream

    def run(self) -> None:
        threads = [threading.Thread(target=self._heartbeat, daemon=True)]
        if self.config.stall_timeout:
            torch.nn.modules.module.register_module_forward_hook(lambda *_: ACTIVITY.progressed())
            threads.append(threading.Thread(target=self._report, args=(report_every_s(self.config.stall_timeout),),
                                            daemon=True))
        for thread in threads:
            thread.start()
        outcomes = self._outcomes()
        try:
            with closing(outcomes):  # stops the decoding thread now, before the claims go, not when collected
                for assigned, outcome in outcomes:
                    self._finish(assigned, outcome)
        except (EOFError, BrokenPipeError, ConnectionResetError):
            pass  # the main process is gone: nothing left to report to
        except _OutputsUnwritable as stop:
            self._send(Fatal(str(stop)))  # the whole run stops: the video in hand is neither done nor failed
        except _DeviceUnusable:
            pass  # this process ends; the scheduler starts another on the device and hands out what it held
        finally:
            with self._claims_lock:  # a claim taken from now on is released by its taker (see _claim)
                self._stopped.set()
                for claims in self._claims.values():
                    for claim in claims:
                        claim.release()
            for thread in threads:
                thread.join()  # a thread still alive at exit makes torch abort the process (SIGABRT)
            for member in self.members:
                if member.layout.remote:
                    shutil.rmtree(member.layout.folder, ignore_errors=True)  # this worker's private staging folder

    def _outcomes(self) -> Iterator[tuple[Assign, dict[str, dict | Exception]]]:
        """Each video handed out with each type's outcome."""
        return self.engine.extract_many(
            self._jobs(), job_of=lambda assigned: assigned.job, sinks_of=self._sink, on_progress=self._progress,
            on_facts=lambda assigned, name, facts: self._facts.update({(assigned.job_id, name): facts}),
            types_of=lambda assigned: self.by_type.keys() - self._skipped[assigned.job_id].keys())

    def _jobs(self) -> Iterator[Assign]:
        """Videos from the scheduler, minus those already done or claimed by another run."""
        while True:
            ACTIVITY.waiting(READER)
            self._send(Ready())
            message = self.connection.recv()
            if not isinstance(message, Assign):
                return  # Stop
            self._started[message.job_id] = time.monotonic()
            ACTIVITY.begin(READER, message, "claiming the outputs")
            try:
                skipped = self._claim(message)
            except OSError as error:
                self._started.pop(message.job_id, None)
                self._send(Result(message.job_id, "failed", f"its outputs could not be claimed ({error})"))
                continue
            if skipped is _ENDING:
                return  # the scheduler hands the video out again
            if len(skipped) == len(self.members):
                self._started.pop(message.job_id, None)
                self._send(self._result(message.job_id, {name: Result(message.job_id, "skipped", reason)
                                                         for name, reason in skipped.items()}))
                continue
            self._skipped[message.job_id] = skipped
            finished = threading.Event()
            self._alone = (message.job_id, finished) if message.alone else None
            yield message
            if message.alone:
                finished.wait()

    def _claim(self, assigned: Assign) -> dict[str, str] | str:
        """Claim a video's outputs, type by type: why each type not to be extracted is not (``_ENDING``: this
        worker ends, and nothing is claimed)."""
        if self._stopped.is_set():
            return _ENDING
        if self.config.on_extraction == "print":
            return {}
        skipped: dict[str, str] = {}
        claims: list[Claim] = []
        for name, outputs in self.outputs.items():
            try:
                reason = self._claim_type(assigned.job, outputs, claims)
            except OSError as error:
                for claim in claims:
                    claim.release()
                _stop_if_unwritable(error, self.by_type[name].layout.folder)
                raise
            if reason:
                skipped[name] = reason
        with self._claims_lock:
            if self._stopped.is_set():  # the worker ended while this was claimed: it releases claims no more
                for claim in claims:
                    claim.release()
                return _ENDING
            if claims:
                self._claims[assigned.job_id] = claims
        for name, outputs in self.outputs.items():
            if name not in skipped:
                outputs.prepare(assigned.job)
        return skipped

    def _claim_type(self, job: VideoJob, outputs, claims: list[Claim]) -> str | None:
        """Claim one type's outputs of ``job`` into ``claims``, or say why that type is not to be extracted."""
        if not self.config.overwrite and outputs.complete(job):
            return OUTPUTS_EXIST
        claim = outputs.claim(job)
        if claim is None:
            return "being extracted by another run"
        if not self.config.overwrite and outputs.complete(job):  # finished by another run meanwhile
            claim.release()
            return OUTPUTS_EXIST
        claims.append(claim)
        return None

    def _finish(self, assigned: Assign, outcomes: dict[str, dict | Exception]) -> None:
        job_id = assigned.job_id
        broken = None
        failures = [(name, outcome) for name, outcome in outcomes.items() if isinstance(outcome, Exception)]
        for name, failure in failures:
            _stop_if_unwritable(failure, self.by_type[name].layout.folder)  # before anything is said of this video
        if failures:
            broken = device_problem(self.members[0].device)
        try:
            results = {name: self._finish_type(assigned, name, outcome, broken) for name, outcome in outcomes.items()}
        finally:
            ACTIVITY.waiting(MODEL)
            self._started.pop(job_id, None)
            for name in outcomes:
                self._facts.pop((job_id, name), None)
            skipped = self._skipped.pop(job_id, {})
            with self._claims_lock:
                claims = self._claims.pop(job_id, [])
            for claim in claims:
                claim.release()
        skipped_results = {name: Result(job_id, "skipped", reason) for name, reason in skipped.items()}
        self._send(self._result(job_id, {**skipped_results, **results}))
        if self._alone is not None and self._alone[0] == job_id:
            self._alone[1].set()
        if broken:
            raise _DeviceUnusable(broken)

    def _finish_type(self, assigned: Assign, name: str, outcome: dict | Exception, broken: str | None) -> Result:
        """Publish one type's outputs of a video (or say why it failed)."""
        job_id, job = assigned.job_id, assigned.job
        try:
            if isinstance(outcome, Exception):
                raise outcome
            if self.config.on_extraction == "print":
                print_features(job.path, outcome)
                sys.stdout.flush()
            record = self._record(job_id, name, job, outcome)
            if self.config.on_extraction != "print":
                ACTIVITY.begin(MODEL, assigned, "publishing the outputs")
                self.outputs[name].publish(job)
            return Result(job_id, "done", record=record)
        except VideoError as error:
            return Result(job_id, "failed", str(error))
        except Exception as error:
            if self.config.verbose:
                traceback.print_exception(error)
            replaced = f" (then {self.members[0].device} failed a check: {broken}; its worker was replaced)"
            return Result(job_id, "failed", f"{type(error).__name__}: {error}{replaced if broken else ''}")

    def _result(self, job_id: int, results: dict[str, Result]) -> Result:
        """What is said of a video: its one type's result, or each type's (``Result.parts``)."""
        if len(self.members) == 1:
            return next(iter(results.values()))
        return Result.of_parts(job_id, results)

    def _record(self, job_id: int, name: str, job: VideoJob, outputs: dict) -> dict:
        """The manifest's entry of a video: its source, its stream, its outputs' shapes and the time taken."""
        streamed = {key: path for key, path in self.by_type[name].layout.paths(job).items() if key not in outputs}
        shapes = {**{key: list(value.shape) for key, value in outputs.items()}, **stored_shapes(streamed)}
        return {**source_facts(job.path), "stream": self._facts.get((job_id, name), {}), "outputs": shapes,
                "seconds": round(time.monotonic() - self._started.get(job_id, time.monotonic()), 3)}

    def _sink(self, assigned: Assign, name: str):
        """Where a video's outputs of one type go, batch by batch (written under temporary names until complete)."""
        member = self.by_type[name]
        return member.open_sink(member.layout.paths(assigned.job))

    def _progress(self, assigned: Assign, done_s: float, total_s: float) -> None:
        now = time.monotonic()
        if now - self._last_progress >= PROGRESS_EVERY_S:
            self._last_progress = now
            self._send(Progress(assigned.job_id, done_s, total_s))

    def _send(self, message: Any) -> None:
        with self._send_lock:
            self.connection.send(message)

    def _report(self, every_s: float) -> None:
        """While this worker holds a video: what holds it up and for how long nothing has progressed, for the
        scheduler's stall watchdog (``io_utils/activity.py``)."""
        while not self._stopped.wait(every_s):
            if not self._started:
                continue
            busy = ACTIVITY.busy()
            try:
                self._send(Alive(busy.video.job_id, busy.where, busy.idle_s) if busy else Alive(None))
            except Exception:  # the main process (or the Ray mailbox) is gone: the main thread sees it too
                return

    def _heartbeat(self) -> None:
        while not self._stopped.wait(HEARTBEAT_S):
            with self._claims_lock:
                for claims in self._claims.values():
                    for claim in claims:
                        claim.refresh()


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks: temporary files and claims go


def _exit_if_terminated(unraisable) -> None:
    """A SIGTERM that lands in a finalizer (a generator collected, a ``__del__``) raises there, where Python
    only prints the exception and goes on: end now, quietly (the scheduler removes what this worker held)."""
    if isinstance(unraisable.exc_value, SystemExit):
        _exit_now(unraisable.exc_value.code)
    sys.__unraisablehook__(unraisable)


def _exit_now(code: int) -> None:
    """End a stopped worker without the interpreter's shutdown: a thread the stop caught mid-way (the decoding
    thread inside torch, a join the signal interrupted) would make libstdc++ abort the process at exit, printing
    "terminate called without an active exception" into the run's one-line error."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


class _DeviceUnusable(Exception):
    """The worker's device fails every call after an error (a CUDA context in a bad state): the worker must go."""


class _OutputsUnwritable(Exception):
    """The output folder takes no more writes (full, read-only): the run must stop, not fail video after video."""


def _stop_if_unwritable(error: BaseException, folder) -> None:
    reason = unwritable_reason(error, folder)
    if reason is not None:
        raise _OutputsUnwritable(reason) from error
