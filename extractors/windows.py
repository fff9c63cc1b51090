"""Windows of consecutive frames, the input of the clip models (i3d, the video classifiers of
``extractors/video_classifier.py``, and transformers' video models).

Windows of ``--stack_size`` frames start every ``--step_size`` frames among the frames taken at
``--extraction_fps`` (default: the model's rate, else every frame of the video); with ``--views N``, N windows
spread uniformly over the video instead, and only their frames are decoded. Memory holds one window.
"""
from __future__ import annotations

from collections import deque
from fractions import Fraction
from typing import Any, Iterable, Iterator, Sequence, TypeVar

import torch

from extractors.base import BaseExtractor
from extractors.config import RunConfig
from extractors.engine_options import FEATURE_OPTIONS, VIEWS
from extractors.options import Option, Section, positive_float, positive_int
from extractors.weights import Weights
from io_utils.errors import UsageError, VideoError
from io_utils.readers import FrameReader
from io_utils.sampling import SamplingMethod
from io_utils.video import Frame
from io_utils.video_list import VideoJob

T = TypeVar("T")
EXTRACTION_FPS = Option("extraction_fps", None, "take frames at this rate for windows and flow (default: the model's, "
                        "else every frame)", 2.0, convert=positive_float, metavar="FPS", section=Section.SAMPLING)
STACK_SIZE = Option("stack_size", None, "frames per window (default: the model's)", 16, convert=positive_int,
                    section=Section.SAMPLING)
STEP_SIZE = Option("step_size", None, "frames between window starts (default: --stack_size)", 8,
                   convert=positive_int, section=Section.SAMPLING)
PAD_LAST = Option("pad_last", False, "pad the frames after the last full window (or of a too short video) into one "
                  "more window", True, section=Section.SAMPLING)
WINDOW_OPTIONS = (EXTRACTION_FPS, STACK_SIZE, STEP_SIZE, PAD_LAST, *FEATURE_OPTIONS)


class WindowExtractor(BaseExtractor):
    """Models that take windows of ``window_size`` consecutive frames every ``--step_size`` frames, from the
    frames at ``--extraction_fps``. One window is one model input. The defaults of ``--stack_size``,
    ``--step_size`` and ``--extraction_fps`` are those of the weights' meta.

    With ``--views N``, N windows spread uniformly over the whole video instead; only their frames are decoded.
    """

    options = WINDOW_OPTIONS

    @classmethod
    def option_defaults(cls, config: RunConfig, weights: Weights | None) -> dict[str, Any]:
        meta = weights.meta
        stack_size = config[STACK_SIZE] or meta.stack_size
        return {**super().option_defaults(config, weights), "stack_size": stack_size,
                "step_size": config[STEP_SIZE] or meta.step_size or stack_size,
                "extraction_fps": config[EXTRACTION_FPS] or meta.fps}

    @classmethod
    def validate(cls, config: RunConfig, weights: Weights | None) -> None:
        super().validate(config, weights)
        minimum = weights.meta.min_stack_size
        if config[STACK_SIZE] < minimum:
            raise UsageError(f"--stack_size {config[STACK_SIZE]}: {config.feature_type} needs at least {minimum} "
                             "frames per window")

    @classmethod
    def sampling_rule(cls, config: RunConfig) -> str:
        frames = frames_read(config[EXTRACTION_FPS])
        if config[VIEWS]:
            return f"{config[VIEWS]} windows of {config[STACK_SIZE]} spread uniformly over {frames}"
        padded = ", the last padded by repeating its last frame" if config[PAD_LAST] else ""
        return f"windows of {config[STACK_SIZE]} frames every {config[STEP_SIZE]} among {frames}{padded}"

    @property
    def window_size(self) -> int:
        return self.config[STACK_SIZE]

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

    def model_inputs(self, video: FrameReader, job: VideoJob
                     ) -> Iterator[tuple[torch.Tensor | dict[str, torch.Tensor], float]]:
        if self.config[VIEWS]:
            windows = self._uniform_windows(video)
        else:
            taken = enumerate(read_frames(video, self.config[EXTRACTION_FPS]))
            items = ((index, frame, self.preprocess(frame.rgb)) for index, frame in taken)
            windows = sliding_windows(items, self.window_size, self.config[STEP_SIZE], pad_last=self.config[PAD_LAST])
        count = 0
        for window, real in windows:
            count += 1
            indices, frames, inputs = (list(column) for column in zip(*window))
            yield self.window_input(indices, frames, inputs), self.window_time_ms(frames[:real])
        if count == 0:
            raise VideoError(f"too short: fewer than the {self.window_size} frames of one window "
                             "(see --stack_size, --extraction_fps); --pad_last pads it instead")

    def _uniform_windows(self, video: FrameReader) -> Iterator[tuple[list, int]]:
        """``--views`` windows over the frames at ``--extraction_fps`` (default: the video's average rate)."""
        fps = self.config[EXTRACTION_FPS] or video.fps
        if not fps:
            raise VideoError("the video declares no frame rate; give --extraction_fps with --views")
        targets = _fixed_rate_targets(video, fps)
        size = self.window_size
        if len(targets) < size and not self.config[PAD_LAST]:
            return iter(())
        starts = uniform_window_starts(len(targets), size, self.config[VIEWS])
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


def read_frames(video: FrameReader, fps: float | None) -> Iterator[Frame]:
    """Every frame in presentation order, or with ``fps`` the frames on screen at ``k / fps`` seconds."""
    return video.read_all() if fps is None else video.read_at(_fixed_rate_targets(video, fps))


def frames_read(fps: float | None) -> str:
    """What :func:`read_frames` takes, in words (for the manifest)."""
    return f"the frames on screen every 1/{fps} s" if fps else "every frame"


def frames_to_read(video: FrameReader, fps: float | None) -> int:
    """How many frames :func:`read_frames` gives, known before decoding."""
    return video.num_frames if fps is None else len(_fixed_rate_targets(video, fps))


def _fixed_rate_targets(video: FrameReader, fps: float) -> list[int]:
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
