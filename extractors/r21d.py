"""R(2+1)D clip features (512-d), on torchvision's VideoResNet.

``--model_name``:
- ``r2plus1d_18_16_kinetics`` (default): torchvision's ``r2plus1d_18`` with its Kinetics-400 weights and
  transform (resize to 128x171, crop 112, Kinetics mean/std), 16-frame windows.
- ``r2plus1d_34_{8,32}_ig65m_ft_kinetics``: R(2+1)D-34 pretrained on IG-65M and fine-tuned on Kinetics-400,
  and ``r2plus1d_34_{8,32}_ig65m_from_scratch``: the IG-65M models themselves (359 and 487 hashtag classes,
  without published names, so no ``--show_pred``). Weights from moabitcoin/ig65m-pytorch's releases, which
  are Caffe2's VMZ models converted; 8- or 32-frame windows; the publisher's preprocessing (short side 128,
  bilinear, crop 112, Kinetics mean/std).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Sequence

from torch import nn
from torchvision.models.video import R2Plus1D_18_Weights, r2plus1d_18
from torchvision.models.video.resnet import BasicBlock, Conv2Plus1D, R2Plus1dStem, VideoResNet

from extractors.predictions import kinetics400_labels, with_separate_head
from extractors.registry import register
from extractors.transforms import KINETICS_MEAN, KINETICS_STD, FramePreprocessing
from extractors.video_classifier import VideoClassifierExtractor
from io_utils.errors import UsageError
from io_utils.weights import Checkpoint, hub_checkpoint, load_state_dict_strictly, torchvision_checkpoint

_IG65M = "https://github.com/moabitcoin/ig65m-pytorch/releases/download/v1.0.0"
_IG65M_TRANSFORM = FramePreprocessing(128, (112, 112), KINETICS_MEAN, KINETICS_STD, antialias=False)


@dataclass(frozen=True)
class R21DModel:
    checkpoint: Checkpoint
    depth: int
    stack_size: int
    num_classes: int
    transform: FramePreprocessing
    labels: Sequence[str] | None  # None: the head's classes have no published names


def _ig65m(file_name: str, stack_size: int, num_classes: int) -> R21DModel:
    labels = kinetics400_labels() if num_classes == 400 else None
    return R21DModel(hub_checkpoint(f"{_IG65M}/{file_name}"), 34, stack_size, num_classes, _IG65M_TRANSFORM, labels)


R21D_MODELS: dict[str, R21DModel] = {
    "r2plus1d_18_16_kinetics": R21DModel(
        torchvision_checkpoint(R2Plus1D_18_Weights.KINETICS400_V1), 18, 16, 400,
        FramePreprocessing.from_torchvision(R2Plus1D_18_Weights.KINETICS400_V1.transforms()),
        R2Plus1D_18_Weights.KINETICS400_V1.meta["categories"]),
    "r2plus1d_34_8_ig65m_ft_kinetics": _ig65m("r2plus1d_34_clip8_ft_kinetics_from_ig65m-0aa0550b.pth", 8, 400),
    "r2plus1d_34_32_ig65m_ft_kinetics": _ig65m("r2plus1d_34_clip32_ft_kinetics_from_ig65m-ade133f1.pth", 32, 400),
    "r2plus1d_34_8_ig65m_from_scratch": _ig65m("r2plus1d_34_clip8_ig65m_from_scratch-9bae36ae.pth", 8, 359),
    "r2plus1d_34_32_ig65m_from_scratch": _ig65m("r2plus1d_34_clip32_ig65m_from_scratch-449a7af9.pth", 32, 487),
}
DEFAULT_MODEL = "r2plus1d_18_16_kinetics"


def r21d_model(name: str) -> R21DModel:
    if name not in R21D_MODELS:
        raise UsageError(f"--model_name {name}: not an R(2+1)D model; choose one of {', '.join(R21D_MODELS)}")
    return R21D_MODELS[name]


def r2plus1d_34(num_classes: int) -> VideoResNet:
    """The VMZ R(2+1)D-34 as converted by ig65m-pytorch: torchvision's VideoResNet with [3, 4, 6, 3] basic
    blocks, batch norm eps 1e-3, and Caffe2's width for the middle of the first block's second (2+1)D
    convolution in layers 2-4 (computed from the block's output width on both sides: 288, 576, 1152)."""
    network = VideoResNet(BasicBlock, [Conv2Plus1D] * 4, [3, 4, 6, 3], R2Plus1dStem, num_classes=num_classes)
    for layer, width in ((network.layer2, 128), (network.layer3, 256), (network.layer4, 512)):
        middle = (width * width * 27) // (width * 9 + 3 * width)
        layer[0].conv2[0] = Conv2Plus1D(width, width, middle)
    for module in network.modules():
        if isinstance(module, nn.BatchNorm3d):
            module.eps = 1e-3
    return network


@register("r21d")
class ExtractR21D(VideoClassifierExtractor):
    """One 512-d feature per window; key ``r21d``."""

    main_key = "r21d"
    model_options = ("checkpoint", "model_name")

    @classmethod
    def option_defaults(cls, args: argparse.Namespace) -> dict[str, Any]:
        return {**super().option_defaults(args), "model_name": DEFAULT_MODEL}

    @classmethod
    def model_stack_size(cls, args: argparse.Namespace) -> int:
        return r21d_model(args.model_name or DEFAULT_MODEL).stack_size

    @classmethod
    def validate_args(cls, args: argparse.Namespace) -> None:
        super().validate_args(args)
        model = r21d_model(args.model_name)
        if args.show_pred and model.labels is None:
            raise UsageError(f"--show_pred: {args.model_name} classifies IG-65M hashtags whose names are not published")

    @classmethod
    def published_checkpoint(cls, args: argparse.Namespace) -> Checkpoint:
        return r21d_model(args.model_name).checkpoint

    def load_model(self) -> nn.ModuleDict:
        model = r21d_model(self.args.model_name)
        network = r2plus1d_18() if model.depth == 18 else r2plus1d_34(model.num_classes)
        load_state_dict_strictly(network, self.checkpoint_file(), f"a {self.args.model_name} checkpoint")
        self.transform, self.labels = model.transform, model.labels
        return with_separate_head(network, "fc")
