"""ResNet-18 to -152 image features (torchvision's models and ImageNet weight enums).

The saved feature is the global average pool before the classifier: 512-d (18, 34) or 2048-d (50, 101, 152).
Preprocessing is the weight enum's own transform (V1: short side 256, V2: 232; crop 224, ImageNet mean/std).
The HowTo100M 2D features are ``resnet152 --extract_method fix_1`` (one frame per second).
"""
from __future__ import annotations

import argparse
from typing import Any, Callable

import torch
from torch import nn
from torchvision import models

from extractors.base import FrameWiseExtractor
from extractors.predictions import HeadPredictions, with_separate_head
from extractors.registry import register
from extractors.transforms import FramePreprocessing
from io_utils.errors import UsageError
from io_utils.weights import Checkpoint, load_state_dict_strictly, torchvision_checkpoint

DEFAULT_WEIGHTS = "IMAGENET1K_V1"
RESNETS: dict[str, tuple[Callable[..., nn.Module], Any]] = {
    "resnet18": (models.resnet18, models.ResNet18_Weights),
    "resnet34": (models.resnet34, models.ResNet34_Weights),
    "resnet50": (models.resnet50, models.ResNet50_Weights),
    "resnet101": (models.resnet101, models.ResNet101_Weights),
    "resnet152": (models.resnet152, models.ResNet152_Weights),
}


def resnet_weights(feature_type: str, name: str | None) -> Any:
    """The torchvision weight enum member for ``--weights`` (default IMAGENET1K_V1)."""
    enum = RESNETS[feature_type][1]
    name = name or DEFAULT_WEIGHTS
    available = [member for member in enum.__members__ if member != "DEFAULT"]
    if name not in available:
        raise UsageError(f"--weights {name}: not available for {feature_type}; choose one of {', '.join(available)}")
    return enum[name]


@register(*RESNETS)
class ExtractResNet(HeadPredictions, FrameWiseExtractor):
    """Pooled features of sampled frames; ``--show_pred`` prints the top-5 ImageNet classes per frame."""

    main_key = "resnet"
    supports_crops = True
    model_options = ("checkpoint", "weights")

    @classmethod
    def validate_args(cls, args: argparse.Namespace) -> None:
        super().validate_args(args)
        resnet_weights(args.feature_type, args.weights)

    @classmethod
    def published_checkpoint(cls, args: argparse.Namespace) -> Checkpoint:
        return torchvision_checkpoint(resnet_weights(args.feature_type, args.weights))

    def load_model(self) -> nn.Module:
        weights = resnet_weights(self.feature_type, self.args.weights)
        network = RESNETS[self.feature_type][0](weights=None)
        load_state_dict_strictly(network, self.checkpoint_file(), f"a torchvision {self.feature_type} checkpoint")
        self.transform = FramePreprocessing.from_torchvision(weights.transforms())
        self.labels = weights.meta["categories"]
        return with_separate_head(network, "fc")

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model["backbone"](batch)
