"""Models of single frames (CLIP, ResNet, timm, ...): the frames ``--extract_method`` or ``--views`` takes."""
from __future__ import annotations

from typing import Any, Iterator

import torch

from extractors.base import BaseExtractor
from extractors.config import RunConfig
from extractors.engine_options import BATCH_SIZE, DEFAULT_SAMPLING, EXTRACT_METHOD, FEATURE_OPTIONS, VIEWS, sampling
from extractors.weights import Weights
from io_utils.errors import UsageError, VideoError
from io_utils.readers import FrameReader
from io_utils.video import Frame
from io_utils.video_list import VideoJob


class FrameWiseExtractor(BaseExtractor):
    """Models that take single frames, sampled with ``--extract_method`` (``uni_N``, ``fix_F`` or ``all``);
    ``--views N`` is ``uni_N``. With ``--preprocess_on_device`` (for the families whose preprocessing is a
    :class:`FramePreprocessing`, which declare it) their inputs are the decoded frames themselves, preprocessed in
    batches on the model's device (see ``_prepared``)."""

    options = (EXTRACT_METHOD, BATCH_SIZE, *FEATURE_OPTIONS)

    @classmethod
    def option_defaults(cls, config: RunConfig, weights: Weights | None) -> dict[str, Any]:
        """One frame per second, unless ``--views`` samples."""
        defaults = super().option_defaults(config, weights)
        if config[EXTRACT_METHOD] is None and not config[VIEWS]:
            defaults["extract_method"] = DEFAULT_SAMPLING
        return defaults

    @classmethod
    def validate(cls, config: RunConfig, weights: Weights | None) -> None:
        super().validate(config, weights)
        if config[VIEWS] and config[EXTRACT_METHOD] is not None:
            raise UsageError("--views N takes N frames spread over the video: give it or --extract_method, not both")

    @classmethod
    def sampling_rule(cls, config: RunConfig) -> str:
        return f"frames on screen at the times of {sampling(config)} (presentation timestamps)"

    def model_inputs(self, video: FrameReader, job: VideoJob) -> Iterator[tuple[torch.Tensor, float]]:
        for frame in sampled_frames(video, self.config):
            yield (torch.from_numpy(frame.rgb) if self._on_device else self.preprocess(frame.rgb)), frame.time_ms


def sampled_frames(video: FrameReader, config: RunConfig) -> Iterator[Frame]:
    """The frames ``--extract_method`` (or ``--views``) takes, in time order: what frame-wise models read."""
    method = sampling(config)
    if method.kind == "all":
        return video.read_all()
    targets = method.target_pts(video.start_pts, video.end_pts, video.time_base)
    if method.kind == "uni" and len(targets) > video.num_frames:
        counted = f"{video.num_frames} frame" + ("s" * (video.num_frames != 1))
        raise VideoError(f"too short: {counted}, fewer than the {len(targets)} that {method} asks for")
    return video.read_at(targets)
