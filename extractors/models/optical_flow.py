"""Optical flow as the output: RAFT or PWC-Net between consecutive frames (``--feature_type raft | pwc``).

The networks are in ``flow/``; this module declares their published weights and the options of the flow networks,
which I3D's flow stream reads too (``extractors/models/i3d.py``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Mapping

import numpy as np
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from extractors.base import BaseExtractor
from extractors.engine_options import CHECKPOINT, DTYPE, WEIGHTS
from extractors.options import Option, positive_float, positive_int
from extractors.registry import FeatureType, ModelDocs, register
from extractors.transforms import SIDE_SIZE
from extractors.weights import Meta, Weights, WeightsTable, torchvision_weights
from extractors.windows import EXTRACTION_FPS, frames_read, read_frames
from flow import RAFT_MODELS, PWCNet, load_flow_network
from flow.raft import RAFT_ENUMS, RAFT_NETWORKS
from io_utils.errors import UsageError, VideoError
from io_utils.flow_images import DEFAULT_BOUND
from io_utils.outputs import Sink, open_sink
from io_utils.readers import FrameReader
from io_utils.video_list import VideoJob

SECTION = "optical flow"
FLOW_BATCH_SIZE = Option("flow_batch_size", 8, "frame pairs per flow forward pass", 2, convert=positive_int,
                         section=SECTION, changes_features=False)
FLOW_BOUND = Option("flow_bound", DEFAULT_BOUND, "flow is clipped to +-bound and mapped to 0..255 in flow images", 10.0,
                    convert=positive_float, section=SECTION)
RAFT_MODEL = Option("raft_model", "large", "which RAFT", "small", choices=RAFT_MODELS, section=SECTION)
RAFT_ITERS = Option("raft_iters", 20, "RAFT's recurrent refinement steps", 4, convert=positive_int, section=SECTION)

# Short names for torchvision's enum members: C = FlyingChairs, T = FlyingThings3D, S/K/H = Sintel, KITTI, HD1K.
RAFT_ALIASES = {"things": "C_T_V2", "things_v1": "C_T_V1", "sintel": "C_T_SKHT_V2", "sintel_v1": "C_T_SKHT_V1",
                "kitti": "C_T_SKHT_K_V2", "kitti_v1": "C_T_SKHT_K_V1"}
RAFT_WEIGHTS: dict[str, WeightsTable] = {  # the torchvision weights of each --raft_model
    "large": WeightsTable([torchvision_weights(member, RAFT_NETWORKS["large"], input_range="RGB in [-1, 1]")
                           for member in RAFT_ENUMS["large"]], default="C_T_SKHT_V2", aliases=RAFT_ALIASES),
    "small": WeightsTable([torchvision_weights(member, RAFT_NETWORKS["small"], input_range="RGB in [-1, 1]")
                           for member in RAFT_ENUMS["small"]], default="C_T_V2", aliases=RAFT_ALIASES),
}
PWC_WEIGHTS = WeightsTable([  # trained on FlyingChairs, FlyingThings3D, Sintel; no SHA-256 is published
    Weights("default", "http://content.sniklaus.com/github/pytorch-pwc/network-default.pytorch", None,
            build=lambda: PWCNet(), meta=Meta(input_range="[0, 1]", channel_order="BGR")),
], default="default")


def flow_weights(network: str, raft_model: str, raft_weights: str | None, option: str) -> Weights:
    """The published checkpoint of the flow ``network`` (raft or pwc): for RAFT, the weights of ``raft_model``
    named ``raft_weights`` (None: its default; an unknown name is refused, naming ``--<option>``)."""
    if network == "pwc":
        return PWC_WEIGHTS[PWC_WEIGHTS.default]
    return RAFT_WEIGHTS[raft_model].choose(raft_weights, f"raft_{raft_model}", option)


_FLOW_OUTPUT_OPTIONS = (EXTRACTION_FPS, SIDE_SIZE, FLOW_BATCH_SIZE, FLOW_BOUND, DTYPE)  # of raft and pwc


class ExtractFlow(BaseExtractor):
    """(T-1, 2, H, W) float32 flow between the T frames taken (every frame, or ``--extraction_fps``).

    ``timestamps_ms`` is the time of each pair's second frame. Pairs go through the network in batches of
    ``--flow_batch_size`` and straight to the output, so memory holds one batch whatever the video length.
    """

    key = "flow"
    docs = ModelDocs("Optical flow", "optical-flow.md", "optical flow between consecutive frames",
                     "frame pairs", "`flow`, 2 x H x W")
    writes_flow = True
    options = (*_FLOW_OUTPUT_OPTIONS, WEIGHTS, CHECKPOINT.formerly("flow_checkpoint"))

    @classmethod
    def validate(cls, config, weights) -> None:
        super().validate(config, weights)
        if "flow_bound" in config.given() and config.on_extraction != "save_flow_images":
            raise UsageError("--flow_bound is read only with --on_extraction save_flow_images")

    @property
    def inputs_per_batch(self) -> int:
        return self.config[FLOW_BATCH_SIZE]

    def load_model(self) -> tuple[torch.nn.Module, None]:
        config = self.config
        return load_flow_network(self.feature_type, self.checkpoint_file(), config[RAFT_MODEL],
                                 config[RAFT_ITERS]), None

    def preprocess(self, rgb: np.ndarray) -> torch.Tensor:
        """(3, H, W) uint8; with ``--side_size``, resized (bilinear, antialiased) to that short side."""
        return resize_short_side(torch.from_numpy(rgb).permute(2, 0, 1), self.config[SIDE_SIZE])

    @classmethod
    def sampling_rule(cls, config) -> str:
        return f"flow between consecutive pairs of {frames_read(config[EXTRACTION_FPS])}"

    def model_inputs(self, video: FrameReader, job: VideoJob) -> Iterator[tuple[torch.Tensor, float]]:
        previous, pairs = None, 0
        for frame in read_frames(video, self.config[EXTRACTION_FPS]):
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

    def open_sink(self, paths: Mapping[str, Path]) -> Sink:
        """Flow images are written with ``--flow_bound``."""
        return open_sink(self.config.on_extraction, paths, self.config[FLOW_BOUND])


class ExtractRAFT(ExtractFlow):
    options = (*_FLOW_OUTPUT_OPTIONS, WEIGHTS.formerly("raft_weights"), CHECKPOINT.formerly("flow_checkpoint"),
               RAFT_MODEL, RAFT_ITERS)


def resize_short_side(image: torch.Tensor, side: int | None) -> torch.Tensor:
    """(C, H, W) -> short side ``side`` (bilinear, antialiased), keeping the aspect ratio; None keeps it."""
    if side is None or min(image.shape[-2:]) == side:
        return image
    return TF.resize(image, [side], interpolation=InterpolationMode.BILINEAR, antialias=True)


register(FeatureType("raft", ExtractRAFT, RAFT_WEIGHTS, weights_by=RAFT_MODEL.name),
         FeatureType("pwc", ExtractFlow, PWC_WEIGHTS))
