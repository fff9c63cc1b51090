"""The decoding thread of an extractor: decodes and preprocesses ahead of the model into a small bounded queue,
so decoding the next batches (and the next video) overlaps with the model on the current ones, and memory holds
a few batches at most."""
from __future__ import annotations

import queue
import threading
import time
from typing import Any, Callable, Iterable, Iterator, Union

import torch

from io_utils.activity import ACTIVITY, READER
from io_utils.errors import VideoError
from io_utils.readers import Reader
from io_utils.video import VideoReader
from io_utils.video_list import VideoJob

PREFETCH_BATCHES = 4  # decoded, preprocessed batches waiting for the model, per worker
Batch = Union[torch.Tensor, dict[str, torch.Tensor]]
Batched = Callable[[Any, VideoJob], Iterator[tuple[Any, list[float]]]]


class Prefetcher:
    """Yields, for each video, ``("start", video, duration_s)``, its ``("batch", video, (inputs, times))``, then
    ``("end", video, facts)`` (the reader's ``facts()``: its stream's codec, ``fps``, ...) or ``("error", video,
    exception)``. An exception from the ``videos`` iterable itself is re-raised in the consumer.

    ``job_of(video)`` is the video's :class:`VideoJob`; ``open_input(video)`` opens it (by default a
    :class:`VideoReader` of the job's path; any :class:`~io_utils.readers.Reader`), ``batched(reader, job)`` gives
    its batches with their inputs' times (ms; usually :func:`batches` of an extractor's ``model_inputs``), and
    ``prepare`` makes each batch ready for the model (moved to its device) in this thread.
    """

    _DONE = object()

    def __init__(self, batched: Batched, videos: Iterable, job_of: Callable[[Any], VideoJob],
                 open_input: Callable[[Any], Reader] | None = None,
                 prepare: Callable[[Any], Any] = lambda batch: batch):
        self._batched, self._prepare = batched, prepare
        self._open_input = open_input or (lambda video: VideoReader(job_of(video).path))
        self._videos, self._job_of = videos, job_of
        self._queue: queue.Queue = queue.Queue(maxsize=PREFETCH_BATCHES)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, name="decoder", daemon=True)
        self._thread.start()

    def __iter__(self) -> Iterator[tuple[str, Any, Any]]:
        while (item := self._queue.get()) is not self._DONE:
            if item[0] == "fatal":
                raise item[2]
            yield item

    def close(self, timeout_s: float = 2.0) -> None:
        """Stop the thread; give up waiting after ``timeout_s`` (it may be blocked reading its job source)."""
        self._stop.set()
        deadline = time.monotonic() + timeout_s
        while self._thread.is_alive() and time.monotonic() < deadline:
            try:
                self._queue.get(timeout=0.1)  # unblock a producer waiting on a full queue
            except queue.Empty:
                pass

    @torch.inference_mode()
    def _produce(self) -> None:
        try:
            for video in self._videos:
                if not self._put(*self._decode(video)):
                    return
        except BaseException as error:  # the job source failed: the consumer must see it
            self._put("fatal", None, error)
        finally:
            self._put_item(self._DONE)
            ACTIVITY.waiting(READER)

    def _decode(self, video) -> tuple[str, Any, Any]:
        try:
            job = self._job_of(video)
            ACTIVITY.begin(READER, video, "opening the input")
            with self._open_input(video) as reader:
                if not self._put("start", video, reader.duration_s):
                    return "error", video, VideoError("stopped")
                for inputs, times in self._batched(reader, job):
                    if not self._put("batch", video, (self._prepare(inputs), times)):
                        return "error", video, VideoError("stopped")
                return "end", video, reader.facts()
        except Exception as error:
            return "error", video, error

    def _put(self, kind: str, video, payload) -> bool:
        return self._put_item((kind, video, payload))

    def _put_item(self, item) -> bool:
        """Queue an item unless the consumer has gone; False means stop producing. Waiting for room is waiting for
        the model, not a stall of the reader."""
        ACTIVITY.waiting(READER)
        try:
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False
        finally:
            ACTIVITY.resumed(READER)


def batches(inputs: Iterator[tuple[Any, float]], batch_size: int) -> Iterator[tuple[Batch, list[float]]]:
    """Group inputs into stacked batches, so memory holds one batch whatever the number of frames (see
    :class:`Batcher`)."""
    batcher = Batcher(batch_size)
    for item, time_ms in inputs:
        yield from batcher.add(item, time_ms)
    yield from batcher.flush()


class Batcher:
    """Inputs stacked into batches of ``size`` as they come. An input whose shape differs from the batch's (raw
    frames of a stream whose resolution changes) starts a new batch."""

    def __init__(self, size: int):
        self._size = size
        self._items: list = []
        self._times: list[float] = []

    def add(self, item: Any, time_ms: float) -> list[tuple[Batch, list[float]]]:
        """The batches that ``item`` completes (none, one, or two where its shape ends the batch before)."""
        ready = []
        if self._items and isinstance(item, torch.Tensor) and item.shape != self._items[0].shape:
            ready.append(self._take())
        self._items.append(item)
        self._times.append(time_ms)
        if len(self._items) == self._size:
            ready.append(self._take())
        return ready

    def flush(self) -> list[tuple[Batch, list[float]]]:
        """The last, shorter batch, if any input waits."""
        return [self._take()] if self._items else []

    def _take(self) -> tuple[Batch, list[float]]:
        batch = _stack(self._items), self._times
        self._items, self._times = [], []
        return batch


def _stack(items: list) -> Batch:
    if isinstance(items[0], dict):
        return {key: torch.stack([item[key] for item in items]) for key in items[0]}
    return torch.stack(items)


def pinned(batch: Batch) -> Batch:
    """The batch in page-locked memory, from which a copy to a CUDA device does not wait for the CPU."""
    if isinstance(batch, dict):
        return {key: value.pin_memory() for key, value in batch.items()}
    return batch.pin_memory()


def to_device(batch: Batch, device: torch.device) -> Batch:
    if isinstance(batch, dict):
        return {key: value.to(device, non_blocking=True) for key, value in batch.items()}
    return batch.to(device, non_blocking=True)
