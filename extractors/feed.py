"""The engine's one loop, decode -> batch -> model -> sink (:func:`run_feeds`), for one feature type or several from
one decode, and :class:`ModelFeed`, one feature type's side of it: a video's batches through its model into the
video's sink.
"""
from __future__ import annotations

from fractions import Fraction
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np

from extractors.engine_options import DTYPE, L2_NORMALIZE, POOL
from extractors.prefetch import Batch, Prefetcher
from extractors.transforms import CROPS
from io_utils.activity import ACTIVITY, MODEL
from io_utils.outputs import FinishingSink, Sink

if TYPE_CHECKING:  # (the base class imports this module)
    from extractors.base import BaseExtractor

OnProgress = Callable[[Any, float, float], None]  # (video, seconds done, seconds in all)
_MILLISECOND = Fraction(1, 1000)  # the time base of the inputs' times


def run_feeds(prefetch: Prefetcher, feeds: Sequence[ModelFeed],
              ended: Callable[[Any, Any, Exception | None], Any], on_progress: OnProgress | None = None
              ) -> Iterator[tuple[Any, Any]]:
    """The engine's one loop, decode -> batch -> model -> sink, for one feature type or several from one decode:
    the decoding thread's events (``prefetch``, whose batches are tagged with the index of their feed, or carry
    the exception that failed that feed) go to their :class:`ModelFeed`; at each video's end (or failure)
    ``ended(video, the reader's facts or None, the error or None)`` gives what is yielded with the video."""
    duration_s = 0.0
    try:
        for kind, video, payload in prefetch:
            if kind == "start":
                duration_s = payload
                for feed in feeds:
                    feed.start()
            elif kind == "batch":
                (index, inputs), times = payload
                if isinstance(inputs, Exception):
                    feeds[index].fail(inputs)
                elif feeds[index].run(video, inputs, times) and on_progress is not None:
                    on_progress(video, times[-1] / 1000, duration_s)
            else:
                yield video, ended(video, payload if kind == "end" else None, payload if kind == "error" else None)
    finally:
        for feed in feeds:
            feed.abort()
        prefetch.close()


class ModelFeed:
    """The consumer's side of the engine for one extractor: a video's batches through its model into the video's
    sink, and the video's outcome. A batch that fails (out of memory, a full disk...) fails this video only; the
    video's later batches are then not run."""

    def __init__(self, extractor: BaseExtractor, sink_of: Callable[[Any], Sink]):
        self._extractor, self._sink_of = extractor, sink_of
        config = extractor.config
        self._finish = FinishingSink.wrapper(config[POOL], config[L2_NORMALIZE], config[DTYPE],
                                             config[CROPS])
        self._sink: Sink | None = None
        self.failed: Exception | None = None

    def start(self) -> None:
        """A new video: it starts from ``--batch_size`` again."""
        self._sink, self.failed = None, None
        self._extractor.reset_batch_size()

    def run(self, video, inputs: Batch, timestamps_ms: list[float]) -> bool:
        """One batch of ``video`` through the model and into its sink; False if the video has failed."""
        if self.failed is not None:
            return False
        ACTIVITY.begin(MODEL, video, "running the model", round(timestamps_ms[0]), _MILLISECOND)
        try:
            self._sink = self._sink or self._finish(self._sink_of(video))
            self._sink.add(*self._extractor._run_batch(inputs, timestamps_ms))
        except Exception as error:  # out of memory, a full disk...: this video only
            self.failed = error
        ACTIVITY.waiting(MODEL)
        return self.failed is None

    def fail(self, error: Exception) -> None:
        """The video cannot give this model its inputs (``error`` says why)."""
        self.failed = self.failed or error

    def end(self, video, facts: dict[str, Any] | None, error: Exception | None) -> dict[str, np.ndarray] | Exception:
        """What the sink of a video read whole (``facts``: the reader's) returns, or why the video failed."""
        outcome = error or self.failed
        if outcome is None:
            ACTIVITY.begin(MODEL, video, "writing the outputs")
            try:
                self._sink = self._sink or self._finish(self._sink_of(video))
                outcome, self._sink = self._sink.close(facts["fps"]), None
            except Exception as failure:
                outcome = failure
            ACTIVITY.waiting(MODEL)
        self.abort()
        self.failed = None
        return outcome

    def abort(self) -> None:
        """Remove what the current video's sink has written so far."""
        if self._sink is not None:
            self._sink.abort()
            self._sink = None
