"""Optical flow as the output: RAFT or PWC-Net between consecutive frames (``--feature_type raft | pwc``)."""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from extractors.base import BaseExtractor
from extractors.registry import FeatureType, register
from extractors.windows import frames_read, read_frames
from flow import load_flow_network
from flow.pwc import PWC_WEIGHTS
from flow.raft import RAFT_WEIGHTS, WEIGHT_ALIASES
from io_utils.errors import UsageError, VideoError
from io_utils.video import VideoReader
from io_utils.weights import Weights


class ExtractFlow(BaseExtractor):
    """(T-1, 2, H, W) float32 flow between the T frames taken (every frame, or ``--extraction_fps``).

    ``timestamps_ms`` is the time of each pair's second frame. Pairs go through the network in batches of
    ``--flow_batch_size`` and straight to the output, so memory holds one batch whatever the video length.
    """

    key = "flow"
    writes_flow = True
    reads = frozenset({"extraction_fps", "side_size", "flow_batch_size", "flow_bound", "dtype", "weights",
                       "checkpoint"})
    option_aliases = {"flow_checkpoint": "checkpoint"}

    @classmethod
    def validate(cls, config, weights) -> None:
        super().validate(config, weights)
        if "flow_bound" in config.given() and config.on_extraction != "save_flow_images":
            raise UsageError("--flow_bound is read only with --on_extraction save_flow_images")

    @property
    def inputs_per_batch(self) -> int:
        return self.config.flow_batch_size

    def load_model(self) -> tuple[torch.nn.Module, None]:
        config = self.config
        return load_flow_network(self.feature_type, self.checkpoint_file(), config.raft_model, config.raft_iters), None

    def preprocess(self, rgb: np.ndarray) -> torch.Tensor:
        """(3, H, W) uint8; with ``--side_size``, resized (bilinear, antialiased) to that short side."""
        return resize_short_side(torch.from_numpy(rgb).permute(2, 0, 1), self.config.side_size)

    @classmethod
    def sampling_rule(cls, config) -> str:
        return f"flow between consecutive pairs of {frames_read(config.extraction_fps)}"

    def model_inputs(self, video: VideoReader) -> Iterator[tuple[torch.Tensor, float]]:
        previous, pairs = None, 0
        for frame in read_frames(video, self.config.extraction_fps):
            current = self.preprocess(frame.rgb)
            if previous is not None:
                pairs += 1
                yield torch.stack([previous, current]), frame.time_ms
            previous = current
        if not pairs:
            raise VideoError("too short: optical flow needs at least 2 frames")

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        pairs = pairs.float()
        return self.model(pairs[:, 0], pairs[:, 1])


class ExtractRAFT(ExtractFlow):
    reads = ExtractFlow.reads | {"raft_model", "raft_iters"}
    option_aliases = {**ExtractFlow.option_aliases, "raft_weights": "weights"}


def resize_short_side(image: torch.Tensor, side: int | None) -> torch.Tensor:
    """(C, H, W) -> short side ``side`` (bilinear, antialiased), keeping the aspect ratio; None keeps it."""
    if side is None or min(image.shape[-2:]) == side:
        return image
    return TF.resize(image, [side], interpolation=InterpolationMode.BILINEAR, antialias=True)


def _raft_weights(config) -> dict[str, Weights]:
    return RAFT_WEIGHTS[config.raft_model]


register(FeatureType("raft", ExtractRAFT, _raft_weights, WEIGHT_ALIASES), FeatureType("pwc", ExtractFlow, PWC_WEIGHTS))
