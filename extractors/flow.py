"""Optical flow as the output: RAFT or PWC-Net between consecutive frames (``--feature_type raft | pwc``)."""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from extractors.base import BaseExtractor, read_frames
from extractors.registry import register
from flow import FLOW_NETWORKS, flow_checkpoint_path, load_flow_network
from io_utils.errors import UsageError, VideoError
from io_utils.video import VideoReader


@register(*FLOW_NETWORKS)
class ExtractFlow(BaseExtractor):
    """(T-1, 2, H, W) float32 flow between the T frames taken (every frame, or ``--extraction_fps``).

    ``timestamps_ms`` is the time of each pair's second frame. Pairs go through the network in batches of
    ``--flow_batch_size`` and straight to the output, so memory holds one batch whatever the video length.
    """

    main_key = "flow"

    @classmethod
    def validate_args(cls, args) -> None:
        super().validate_args(args)
        for option, value in (("--views", args.views), ("--pool", args.pool), ("--l2_normalize", args.l2_normalize)):
            if value:
                raise UsageError(f"{option} does not apply to optical flow ({args.feature_type})")

    @classmethod
    def prepare(cls, args) -> None:
        flow_checkpoint_path(args.feature_type, args)

    @property
    def inputs_per_batch(self) -> int:
        return self.args.flow_batch_size

    def load_model(self) -> torch.nn.Module:
        return load_flow_network(self.feature_type, self.args)

    def preprocess(self, rgb: np.ndarray) -> torch.Tensor:
        """(3, H, W) uint8; with ``--side_size``, resized (bilinear, antialiased) to that short side."""
        return resize_short_side(torch.from_numpy(rgb).permute(2, 0, 1), self.args.side_size)

    def model_inputs(self, video: VideoReader) -> Iterator[tuple[torch.Tensor, float]]:
        previous, pairs = None, 0
        for frame in read_frames(video, self.args.extraction_fps):
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


def resize_short_side(image: torch.Tensor, side: int | None) -> torch.Tensor:
    """(C, H, W) -> short side ``side`` (bilinear, antialiased), keeping the aspect ratio; None keeps it."""
    if side is None or min(image.shape[-2:]) == side:
        return image
    return TF.resize(image, [side], interpolation=InterpolationMode.BILINEAR, antialias=True)
