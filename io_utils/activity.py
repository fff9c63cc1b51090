"""What this process's extraction is doing, and when it last made progress: what the stall watchdog reads.

A video is worked on by two stages, each in its own thread: the reader (opening the input, reading its bytes and
packets, decoding) and the model (running batches, writing the outputs). Each stage notes here what it is about to
do before anything that may block (a read, a decode, a batch), and every step counts as progress: a packet read,
a block fetched, a frame decoded, a module of the model finished. A stage waiting for the other one (the reader on
a full queue, the model on an empty one) is not busy, so only a stage that is busy and makes no progress stalls.

A worker process runs one extraction, so the record is one per process (:data:`ACTIVITY`); the worker reports it
to the scheduler, which abandons a video whose worker has made no progress for ``--stall_timeout`` seconds. The
notes are plain attribute writes: they cost well under a microsecond, also where nobody reads them.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

READER = "reader"
MODEL = "model"


@dataclass
class _Stage:
    video: Any = None  # what the stage works on (the worker's Assign)
    busy: bool = False
    doing: str = ""  # what it was about to do at its last note
    pts: int | None = None  # where in the stream, if known (stream ticks)
    time_base: Fraction | None = None


@dataclass(frozen=True)
class Busy:
    """A busy stage: the video it works on, what it is doing, and for how long nothing has progressed."""

    video: Any
    where: str
    idle_s: float


class Activity:
    """See the module's docstring."""

    def __init__(self):
        self.last_progress = time.monotonic()
        self._stages = {READER: _Stage(), MODEL: _Stage()}

    def begin(self, stage: str, video: Any, doing: str, pts: int | None = None,
              time_base: Fraction | None = None) -> None:
        """``stage`` starts work on ``video``: see :meth:`note`."""
        state = self._stages[stage]
        state.video, state.busy = video, True
        self.note(stage, doing, pts, time_base)

    def note(self, stage: str, doing: str, pts: int | None = None, time_base: Fraction | None = None) -> None:
        """``stage`` is about to do ``doing`` (at ``pts`` of the stream, if given): a step of progress."""
        state = self._stages[stage]
        state.doing, state.pts, state.time_base = doing, pts, time_base
        self.last_progress = time.monotonic()

    def progressed(self) -> None:
        """A step within what the busiest stage is doing (a module of the model finished)."""
        self.last_progress = time.monotonic()

    def waiting(self, stage: str) -> None:
        """``stage`` waits for the other stage (or for work): it cannot stall meanwhile."""
        self._stages[stage].busy = False

    def resumed(self, stage: str) -> None:
        self._stages[stage].busy = True
        self.last_progress = time.monotonic()

    def busy(self) -> Busy | None:
        """The stage that holds the work up, if any is busy: the reader when both are (a read or decode that blocks
        is the usual cause)."""
        for name in (READER, MODEL):
            state = self._stages[name]
            if state.busy and state.video is not None:
                return Busy(state.video, _where(state), time.monotonic() - self.last_progress)
        return None


def _where(state: _Stage) -> str:
    if state.pts is None or state.time_base is None:
        return state.doing
    return f"{state.doing} ({float(state.pts * state.time_base):.3f} s into the stream)"


ACTIVITY = Activity()
