"""A worker that is killed (as by a decoder's segfault) when it starts writing a video named poison.mp4: for the
tests of what a pool does when a video takes its workers down."""
from __future__ import annotations

import os
import signal


def die_on_poison() -> None:
    """From now on, this process kills itself when a worker opens the outputs of poison.mp4."""
    from extractors import worker

    open_sink = worker._Worker._sink

    def sink_or_die(self, assigned, name):
        if assigned.job.path.name == "poison.mp4":
            os.kill(os.getpid(), signal.SIGKILL)
        return open_sink(self, assigned, name)

    worker._Worker._sink = sink_or_die
