"""A model family declared outside the package, with an option of its own, for ``tests/test_model_layer.py``: the
mean colour of each sampled frame, times ``--toy_gain``. Importing this module registers it, as a family's import
line in ``extractors/models/__init__.py`` does; nothing else is written anywhere."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from extractors.frame_wise import FrameWiseExtractor
from extractors.options import Option, positive_float
from extractors.registry import FeatureType, register

TOY_GAIN = Option("toy_gain", 1.0, "multiply the mean colour by this", 2.0, convert=positive_float, section="toy")


class MeanColour(nn.Module):
    def __init__(self, gain: float):
        super().__init__()
        self.gain = gain

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return frames.float().mean(dim=(2, 3)) * self.gain


class ExtractToy(FrameWiseExtractor):
    """(N, 3): each sampled frame's mean R, G, B (0..255) times ``--toy_gain``."""

    key = "toy"
    options = (*FrameWiseExtractor.options, TOY_GAIN)

    def load_model(self) -> tuple[nn.Module, None]:
        return MeanColour(self.config[TOY_GAIN]), None

    def preprocess(self, rgb: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(rgb).permute(2, 0, 1)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model(batch)


register(FeatureType("toy", ExtractToy))
