"""The shared extraction loop: decode -> preprocess -> batch -> model -> sink.

An extractor subclass only says how to load its model (``load_model``), which inputs a video gives
(``model_inputs``, usually through ``preprocess``) and how to run a batch (``forward``). The base owns
decoding, batching, device placement, the dtype of the results and where they go, so every model gets the
same guarantees. Three shapes of input are provided: single sampled frames (:class:`FrameWiseExtractor`),
consecutive frame pairs (flow, in ``extractors/flow.py``) and windows of consecutive frames
(:class:`WindowExtractor`).
"""
from __future__ import annotations

import argparse
import os
import queue
import threading
import time
from collections import deque
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence, TypeVar, Union

import numpy as np
import torch

from extractors.cli import complete_args
from extractors.transforms import FramePreprocessing
from io_utils.errors import UsageError, VideoError
from io_utils.outputs import FLOW_IMAGE_MODES, FinishingSink, MemorySink, Sink
from io_utils.sampling import SamplingMethod
from io_utils.video import Frame, VideoReader
from io_utils.weights import Checkpoint, checkpoint_path

PREFETCH_BATCHES = 4  # decoded, preprocessed batches waiting for the model, per worker
V = TypeVar("V")
T = TypeVar("T")
Batch = Union[torch.Tensor, dict[str, torch.Tensor]]


class BaseExtractor:
    """Turns one video into a dict of arrays: ``{main_key: (N, ...) float32, "fps": (), "timestamps_ms": (N,)}``."""

    main_key: str = "features"
    supports_crops: bool = False  # --crops 3: the extractor's preprocess returns (3, ...) per input
    transform: FramePreprocessing
    model_options: tuple[str, ...] = ()  # which of --checkpoint, --weights, --model_name the model reads
    checkpoint_option = "checkpoint"  # the option naming a local file to load instead of the published one

    def __init__(self, args: argparse.Namespace | Mapping[str, Any], external_call: bool = False):
        self.args = complete_args(args)
        self.validate_args(self.args)
        self.feature_type: str = self.args.feature_type
        self.external_call = external_call
        self.device = select_device(self.args)
        self.model = self.load_model().to(self.device).eval()

    @classmethod
    def option_defaults(cls, args: argparse.Namespace) -> dict[str, Any]:
        """Values for the options left unset (None) on the command line, when this model has its own."""
        return {}

    @classmethod
    def validate_args(cls, args: argparse.Namespace) -> None:
        """Refuse options that make no sense for this model, before any video is touched."""
        if args.on_extraction in FLOW_IMAGE_MODES and cls.main_key != "flow":
            raise UsageError(f"--on_extraction {args.on_extraction} writes optical flow; use it with raft or pwc")
        if args.crops > 1 and not cls.supports_crops:
            raise UsageError(f"--crops {args.crops} is not available for {args.feature_type}")
        if args.show_pred and cls.show_predictions is BaseExtractor.show_predictions:
            raise UsageError(f"--show_pred is not available for {args.feature_type}")
        for option in ("checkpoint", "weights", "model_name"):
            if getattr(args, option) is not None and option not in cls.model_options:
                raise UsageError(f"--{option} is not used by {args.feature_type}")

    @classmethod
    def published_checkpoint(cls, args: argparse.Namespace) -> Checkpoint | None:
        """The one checkpoint the model loads unless ``--<checkpoint_option>`` names a local file; None for
        models that find their weights themselves (several files, or timm's hub)."""
        return None

    @classmethod
    def prepare(cls, args: argparse.Namespace) -> None:
        """Work to do once per run before workers start, so it is not done N times: by default, finding or
        downloading the published checkpoint."""
        if (checkpoint := cls.published_checkpoint(args)) is not None:
            checkpoint_path(checkpoint, args, cls.checkpoint_option)

    def checkpoint_file(self) -> Path:
        """The file ``load_model`` reads: the local one given by the option, or the published checkpoint."""
        return checkpoint_path(self.published_checkpoint(self.args), self.args, self.checkpoint_option)

    @property
    def output_keys(self) -> list[str]:
        return [self.main_key, "fps", "timestamps_ms"]

    @property
    def inputs_per_batch(self) -> int:
        return self.args.batch_size

    def load_model(self) -> torch.nn.Module:
        raise NotImplementedError

    def preprocess(self, rgb: np.ndarray) -> torch.Tensor:
        """One (H, W, 3) uint8 RGB frame -> one model input, on the CPU: by default ``self.transform`` (a
        :class:`FramePreprocessing` that ``load_model`` sets), with ``--crops``."""
        return self.transform(rgb, self.args.crops)

    def forward(self, batch: Batch) -> torch.Tensor | dict[str, torch.Tensor]:
        """A batch of inputs, on ``self.device`` -> (B, ...) outputs of the main key, or a dict of them."""
        raise NotImplementedError

    def model_inputs(self, video: VideoReader) -> Iterator[tuple[torch.Tensor | dict[str, torch.Tensor], float]]:
        """Inputs (a tensor, or a dict of tensors) with their timestamps (ms), in time order."""
        raise NotImplementedError

    def show_predictions(self, outputs: Mapping[str, np.ndarray], timestamps_ms: Sequence[float]) -> None:
        """``--show_pred``: print what the model recognises in one batch; models without a head do not
        implement it, and ``validate_args`` refuses the option for them."""
        raise NotImplementedError

    def extract(self, video_path: str | os.PathLike) -> dict[str, np.ndarray]:
        """Features of one video. Raises :class:`VideoError` for a video that cannot be processed."""
        for _, outcome in self.extract_many([video_path]):
            if isinstance(outcome, Exception):
                raise outcome
            return outcome
        raise VideoError("no frames were sampled")

    @torch.inference_mode()
    def extract_many(self, videos: Iterable[V], path_of: Callable[[V], str | os.PathLike] = lambda v: v,
                     sink_of: Callable[[V], Sink] = lambda v: MemorySink()
                     ) -> Iterator[tuple[V, dict[str, np.ndarray] | Exception]]:
        """Each video with what its sink's ``close`` returned, or the exception that failed it, in order.

        A thread decodes and preprocesses ahead into a small bounded queue, so decoding of the next batches and
        of the next video overlaps with the model on the current one, and memory holds a few batches at most.
        ``videos`` is consumed by that thread, one video ahead of the model. Each batch's outputs go to the
        video's sink (``sink_of(video)``, by default kept in memory) as soon as they are computed.
        """
        prefetch = _Prefetcher(self, videos, path_of)
        finish = FinishingSink.wrapper(self.args.pool, self.args.l2_normalize, self.args.dtype)
        sink: Sink | None = None
        try:
            failed: Exception | None = None
            for kind, video, payload in prefetch:
                if kind == "batch":
                    if failed is None:
                        try:
                            sink = sink or finish(sink_of(video))
                            sink.add(*self._run_batch(*payload))
                        except Exception as error:  # out of memory, a full disk...: this video only
                            failed = error
                    continue
                outcome = payload if kind == "error" else failed
                if outcome is None:
                    try:
                        sink = sink or finish(sink_of(video))
                        outcome, sink = sink.close(payload), None
                    except Exception as error:
                        outcome = error
                if sink is not None:
                    sink.abort()
                sink, failed = None, None
                yield video, outcome
        finally:
            if sink is not None:
                sink.abort()
            prefetch.close()

    def _run_batch(self, inputs: Batch, timestamps_ms: list[float]) -> tuple[dict[str, np.ndarray], list[float]]:
        crops = self.args.crops
        if crops > 1:  # (B, crops, ...): the crops go through the model as more inputs
            inputs = inputs.flatten(0, 1)
        outputs = self.forward(_to_device(inputs, self.device))
        if isinstance(outputs, torch.Tensor):
            outputs = {self.main_key: outputs}
        arrays = {key: value.float().cpu().numpy() for key, value in outputs.items()}
        if self.args.show_pred:
            self.show_predictions(arrays, [time for time in timestamps_ms for _ in range(crops)])
        if crops > 1:
            arrays = {key: value.reshape(len(timestamps_ms), crops, *value.shape[1:]) for key, value in arrays.items()}
        return arrays, timestamps_ms


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
                for batch in _batches(extractor.model_inputs(reader), extractor.inputs_per_batch):
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
    """Models that take single frames, sampled with ``--extract_method`` (``uni_N`` or ``fix_F``); ``--views N``
    is ``uni_N``."""

    def model_inputs(self, video: VideoReader) -> Iterator[tuple[torch.Tensor, float]]:
        method = SamplingMethod("uni", Fraction(self.args.views)) if self.args.views else self.args.extract_method
        targets = method.target_pts(video.start_pts, video.end_pts, video.time_base)
        if method.kind == "uni" and len(targets) > video.num_frames:
            raise VideoError(f"too short: {video.num_frames} frames, fewer than the {len(targets)} that {method} asks for")
        for frame in video.read_at(targets):
            yield self.preprocess(frame.rgb), frame.time_ms


class WindowExtractor(BaseExtractor):
    """Models that take windows of ``window_size`` consecutive frames every ``--step_size`` frames, from the
    frames at ``--extraction_fps`` (default: every frame of the video). One window is one model input.

    With ``--views N``, N windows spread uniformly over the whole video instead; only their frames are decoded.
    """

    default_stack_size = 64
    default_extraction_fps: float | None = None

    @classmethod
    def option_defaults(cls, args: argparse.Namespace) -> dict[str, Any]:
        stack_size = args.stack_size or cls.model_stack_size(args)
        return {"stack_size": stack_size, "step_size": stack_size, "extraction_fps": cls.default_extraction_fps}

    @classmethod
    def model_stack_size(cls, args: argparse.Namespace) -> int:
        """The window the model was trained on, the default ``--stack_size``."""
        return cls.default_stack_size

    @property
    def window_size(self) -> int:
        return self.args.stack_size

    @property
    def inputs_per_batch(self) -> int:
        return 1

    def window_input(self, indices: list[int], frames: list[Frame], inputs: list[torch.Tensor]
                     ) -> torch.Tensor | dict[str, torch.Tensor]:
        """One window's model input from its frames, their positions among the frames taken, and their
        preprocessed forms. A padded window repeats its last frame (and index).

        The default is the frames' inputs stacked along time: (T, ...), or (crops, T, ...) with ``--crops 3``.
        """
        return torch.stack(inputs, dim=-4)

    def window_time_ms(self, frames: list[Frame]) -> float:
        """The window's centre: midway between its first and last frames."""
        return (frames[0].time_ms + frames[-1].time_ms) / 2

    def model_inputs(self, video: VideoReader) -> Iterator[tuple[torch.Tensor | dict[str, torch.Tensor], float]]:
        if self.args.views:
            windows = self._uniform_windows(video)
        else:
            taken = enumerate(read_frames(video, self.args.extraction_fps))
            items = ((index, frame, self.preprocess(frame.rgb)) for index, frame in taken)
            windows = sliding_windows(items, self.window_size, self.args.step_size, pad_last=self.args.pad_last)
        count = 0
        for window, real in windows:
            count += 1
            indices, frames, inputs = (list(column) for column in zip(*window))
            yield self.window_input(indices, frames, inputs), self.window_time_ms(frames[:real])
        if count == 0:
            raise VideoError(f"too short: fewer than the {self.window_size} frames of one window "
                             "(see --stack_size, --extraction_fps); --pad_last pads it instead")

    def _uniform_windows(self, video: VideoReader) -> Iterator[tuple[list, int]]:
        """``--views`` windows over the frames at ``--extraction_fps`` (default: the video's average rate)."""
        fps = self.args.extraction_fps or video.fps
        if not fps:
            raise VideoError("the video declares no frame rate; give --extraction_fps with --views")
        targets = _fixed_rate_targets(video, fps)
        size = self.window_size
        if len(targets) < size and not self.args.pad_last:
            return iter(())
        starts = uniform_window_starts(len(targets), size, self.args.views)
        needed = sorted({index for start in starts for index in range(start, min(start + size, len(targets)))})
        frames = video.read_at([targets[index] for index in needed])
        items = ((index, frame, self.preprocess(frame.rgb)) for index, frame in zip(needed, frames))
        return windows_at(items, starts, size)


def uniform_window_starts(count: int, size: int, views: int) -> list[int]:
    """First items of ``views`` windows of ``size`` spread uniformly over ``count`` items: the centres of
    ``views`` equal slices of the possible starts (MMAction2's test-time sampling). All 0 when ``count < size``."""
    spacing = max(count - size + 1, 1) / views
    return [int(spacing * (view + 0.5)) for view in range(views)]


def windows_at(items: Iterable[tuple], starts: Sequence[int], size: int) -> Iterator[tuple[list, int]]:
    """Windows of ``size`` items beginning at each of ``starts`` (ascending), from ``(index, ...)`` tuples in
    ascending index order that include at least every index the windows cover; a window that runs past the last
    item is padded by repeating it. Each window comes with its count of real items; memory holds one window."""
    items = iter(items)
    buffer: deque[tuple] = deque()
    exhausted = False
    for start in starts:
        while buffer and buffer[0][0] < start:
            buffer.popleft()
        while not exhausted and (not buffer or buffer[-1][0] < start + size - 1):
            item = next(items, None)
            exhausted = item is None
            if item is not None and item[0] >= start:
                buffer.append(item)
        window = [item for item in buffer if item[0] < start + size]
        if not window:
            raise VideoError("the video ended before its last frames could be decoded (truncated or corrupt)")
        yield window + [window[-1]] * (size - len(window)), len(window)


def read_frames(video: VideoReader, fps: float | None) -> Iterator[Frame]:
    """Every frame in presentation order, or with ``fps`` the frames on screen at ``k / fps`` seconds."""
    return video.read_all() if fps is None else video.read_at(_fixed_rate_targets(video, fps))


def frames_to_read(video: VideoReader, fps: float | None) -> int:
    """How many frames :func:`read_frames` gives, known before decoding."""
    return video.num_frames if fps is None else len(_fixed_rate_targets(video, fps))


def _fixed_rate_targets(video: VideoReader, fps: float) -> list[int]:
    method = SamplingMethod("fix", Fraction(fps).limit_denominator(1_000_000))
    return method.target_pts(video.start_pts, video.end_pts, video.time_base)


def sliding_windows(items: Iterable[T], size: int, step: int, pad_last: bool = False) -> Iterator[tuple[list[T], int]]:
    """Windows of ``size`` consecutive items starting every ``step`` items, each with its count of real
    (not padding) items; memory holds one window.

    A tail too short for a window is dropped, unless ``pad_last``: then the items after the last full
    window (or all of them, if there was none) make one more window, padded by repeating its last item.
    """
    buffer: deque[T] = deque()
    skip = 0  # items still to drop before the next window starts (when step > size)
    covered_until = 0  # items consumed so far that belong to an emitted window
    seen = 0
    for item in items:
        seen += 1
        if skip:
            skip -= 1
            continue
        buffer.append(item)
        if len(buffer) == size:
            yield list(buffer), size
            covered_until = seen
            for _ in range(min(step, size)):
                buffer.popleft()
            skip = max(step - size, 0)
    if pad_last and buffer and seen > covered_until:
        yield list(buffer) + [buffer[-1]] * (size - len(buffer)), len(buffer)


def select_device(args: argparse.Namespace) -> torch.device:
    if args.cpu:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UsageError("CUDA is not available on this machine; pass --cpu to run on the CPU")
    device_id = args.device_ids[0]
    if device_id >= torch.cuda.device_count():
        raise UsageError(f"--device_ids {device_id}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return torch.device(f"cuda:{device_id}")


def _batches(inputs: Iterator[tuple[torch.Tensor | dict[str, torch.Tensor], float]], batch_size: int
             ) -> Iterator[tuple[Batch, list[float]]]:
    """Group inputs into stacked batches, so memory holds one batch whatever the number of frames."""
    items: list = []
    times: list[float] = []
    for item, time_ms in inputs:
        items.append(item)
        times.append(time_ms)
        if len(items) == batch_size:
            yield _stack(items), times
            items, times = [], []
    if items:
        yield _stack(items), times


def _stack(items: list) -> Batch:
    if isinstance(items[0], dict):
        return {key: torch.stack([item[key] for item in items]) for key in items[0]}
    return torch.stack(items)


def _to_device(batch: Batch, device: torch.device) -> Batch:
    if isinstance(batch, dict):
        return {key: value.to(device, non_blocking=True) for key, value in batch.items()}
    return batch.to(device, non_blocking=True)
