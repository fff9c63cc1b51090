"""The shared extraction loop: decode -> preprocess -> batch -> model -> arrays.

An extractor subclass only says how to load its model (``load_model``), how to turn one decoded RGB frame
into a model input (``preprocess``) and how to run a batch (``forward``). The base owns decoding, sampling,
batching, device placement, dtype of the results and output keys, so every model gets the same guarantees.
"""
from __future__ import annotations

import argparse
import os
import queue
import threading
import time
from typing import Any, Callable, Iterable, Iterator, Mapping, TypeVar

import numpy as np
import torch

from extractors.cli import complete_args
from io_utils.errors import UsageError, VideoError
from io_utils.video import VideoReader

PREFETCH_BATCHES = 4  # decoded, preprocessed batches waiting for the model, per worker
V = TypeVar("V")


class BaseExtractor:
    """Turns one video into a dict of arrays: ``{main_key: (N, D) float32, "fps": (), "timestamps_ms": (N,)}``."""

    main_key: str = "features"

    def __init__(self, args: argparse.Namespace | Mapping[str, Any], external_call: bool = False):
        self.args = complete_args(args)
        self.feature_type: str = self.args.feature_type
        self.external_call = external_call
        self.device = select_device(self.args)
        self.model = self.load_model().to(self.device).eval()

    @classmethod
    def prepare(cls, args: argparse.Namespace) -> None:
        """Work to do once per run before workers start, e.g. downloading weights, so it is not done N times."""

    @property
    def output_keys(self) -> list[str]:
        return [self.main_key, "fps", "timestamps_ms"]

    def load_model(self) -> torch.nn.Module:
        raise NotImplementedError

    def preprocess(self, rgb: np.ndarray) -> torch.Tensor:
        """One (H, W, 3) uint8 RGB frame -> one model input, on the CPU."""
        raise NotImplementedError

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """A batch of preprocessed inputs, on ``self.device`` -> (B, D) features."""
        raise NotImplementedError

    def model_inputs(self, video: VideoReader) -> Iterator[tuple[torch.Tensor, float]]:
        """Preprocessed inputs with their timestamps (ms), in time order."""
        raise NotImplementedError

    def show_predictions(self, features: np.ndarray, timestamps_ms: np.ndarray) -> None:
        """``--show_pred``: print what the model recognises; models without a head need not implement it."""
        raise UsageError(f"--show_pred is not available for {self.feature_type}")

    def extract(self, video_path: str | os.PathLike) -> dict[str, np.ndarray]:
        """Features of one video. Raises :class:`VideoError` for a video that cannot be processed."""
        for _, outcome in self.extract_many([video_path]):
            if isinstance(outcome, Exception):
                raise outcome
            return outcome
        raise VideoError("no frames were sampled")

    @torch.inference_mode()
    def extract_many(self, videos: Iterable[V], path_of: Callable[[V], str | os.PathLike] = lambda v: v
                     ) -> Iterator[tuple[V, dict[str, np.ndarray] | Exception]]:
        """Features (or the exception) of each video, in order.

        A thread decodes and preprocesses ahead into a small bounded queue, so decoding of the next batches and
        of the next video overlaps with the model on the current one, and memory holds a few batches at most.
        ``videos`` is consumed by that thread, one video ahead of the model.
        """
        prefetch = _Prefetcher(self, videos, path_of)
        try:
            chunks: list[torch.Tensor] = []
            timestamps: list[float] = []
            failed: Exception | None = None
            for kind, video, payload in prefetch:
                if kind == "batch":
                    if failed is None:
                        failed = self._run_batch(payload, chunks, timestamps)
                    continue
                if kind == "error" or failed is not None:
                    yield video, payload if kind == "error" else failed
                else:
                    yield video, self._assemble(chunks, timestamps, fps=payload)
                chunks, timestamps, failed = [], [], None
        finally:
            prefetch.close()

    def _run_batch(self, batch: tuple[torch.Tensor, list[float]], chunks: list, timestamps: list) -> Exception | None:
        """Run one batch; an error here (out of memory, say) fails this video only."""
        tensor, times = batch
        try:
            chunks.append(self.forward(tensor.to(self.device, non_blocking=True)).float().cpu())
        except Exception as error:
            return error
        timestamps.extend(times)
        return None

    def _assemble(self, chunks: list[torch.Tensor], timestamps: list[float], fps: float) -> dict[str, np.ndarray] | Exception:
        if not chunks:
            return VideoError("no frames were sampled")
        features = torch.cat(chunks).numpy().astype(np.float32, copy=False)
        timestamps_ms = np.asarray(timestamps, dtype=np.float64)
        if self.args.show_pred:
            self.show_predictions(features, timestamps_ms)
        return {self.main_key: features, "fps": np.asarray(fps, dtype=np.float64), "timestamps_ms": timestamps_ms}


class _Prefetcher:
    """The decoding thread of :meth:`BaseExtractor.extract_many` and the queue it fills.

    Yields ``("batch", video, (tensor, times))``, then ``("end", video, fps)`` or ``("error", video, exception)``
    for each video. An exception from the ``videos`` iterable itself is re-raised in the consumer.
    """

    _DONE = object()

    def __init__(self, extractor: BaseExtractor, videos: Iterable, path_of: Callable):
        self._extractor, self._videos, self._path_of = extractor, videos, path_of
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

    def _decode(self, video) -> tuple[str, Any, Any]:
        extractor = self._extractor
        try:
            with VideoReader(self._path_of(video)) as reader:
                for batch in _batches(extractor.model_inputs(reader), extractor.args.batch_size):
                    if not self._put("batch", video, batch):
                        return "error", video, VideoError("stopped")
                return "end", video, reader.fps
        except Exception as error:
            return "error", video, error

    def _put(self, kind: str, video, payload) -> bool:
        return self._put_item((kind, video, payload))

    def _put_item(self, item) -> bool:
        """Queue an item unless the consumer has gone; False means stop producing."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False


class FrameWiseExtractor(BaseExtractor):
    """Models that take single frames, sampled with ``--extract_method`` (``uni_N`` or ``fix_F``)."""

    def model_inputs(self, video: VideoReader) -> Iterator[tuple[torch.Tensor, float]]:
        method = self.args.extract_method
        targets = method.target_pts(video.start_pts, video.end_pts, video.time_base)
        if method.kind == "uni" and len(targets) > video.num_frames:
            raise VideoError(f"too short: {video.num_frames} frames, fewer than the {len(targets)} that {method} asks for")
        for frame in video.read_at(targets):
            yield self.preprocess(frame.rgb), frame.time_ms


def select_device(args: argparse.Namespace) -> torch.device:
    if args.cpu:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UsageError("CUDA is not available on this machine; pass --cpu to run on the CPU")
    device_id = args.device_ids[0]
    if device_id >= torch.cuda.device_count():
        raise UsageError(f"--device_ids {device_id}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return torch.device(f"cuda:{device_id}")


def _batches(inputs: Iterator[tuple[torch.Tensor, float]], batch_size: int) -> Iterator[tuple[torch.Tensor, list[float]]]:
    """Group inputs into stacked batches, so memory holds one batch whatever the number of frames."""
    tensors: list[torch.Tensor] = []
    times: list[float] = []
    for tensor, time_ms in inputs:
        tensors.append(tensor)
        times.append(time_ms)
        if len(tensors) == batch_size:
            yield torch.stack(tensors), times
            tensors, times = [], []
    if tensors:
        yield torch.stack(tensors), times
