"""R(2+1)D clip features (512-d), on torchvision's VideoResNet.

``--weights`` (or ``--model_name``, its former spelling):
- ``r2plus1d_18_16_kinetics`` (default): torchvision's ``r2plus1d_18`` with its Kinetics-400 weights and
  transform (resize to 128x171, crop 112, Kinetics mean/std), 16-frame windows.
- ``r2plus1d_34_{8,32}_ig65m_ft_kinetics``: R(2+1)D-34 pretrained on IG-65M and fine-tuned on Kinetics-400,
  and ``r2plus1d_34_{8,32}_ig65m_from_scratch``: the IG-65M models themselves (359 and 487 hashtag classes,
  without published names, so no ``--show_pred``). Weights from moabitcoin/ig65m-pytorch's releases, which
  are Caffe2's VMZ models converted; 8- or 32-frame windows; the publisher's preprocessing (short side 128,
  bilinear, crop 112, Kinetics mean/std).
"""
from __future__ import annotations

from functools import partial

from torch import nn
from torchvision.models.video import R2Plus1D_18_Weights, r2plus1d_18
from torchvision.models.video.resnet import BasicBlock, Conv2Plus1D, R2Plus1dStem, VideoResNet

from extractors.engine_options import WEIGHTS
from extractors.predictions import kinetics400_labels, with_separate_head
from extractors.registry import FeatureType, ModelDocs, register
from extractors.transforms import KINETICS_MEAN, KINETICS_STD, FramePreprocessing
from extractors.video_classifier import VideoClassifierExtractor
from extractors.weights import Meta, Weights, WeightsTable, torchvision_weights
from io_utils.checkpoints import load_state_dict_strictly, sha256_in_file_name

_IG65M = "https://github.com/moabitcoin/ig65m-pytorch/releases/download/v1.0.0"
_IG65M_TRANSFORM = FramePreprocessing(128, (112, 112), KINETICS_MEAN, KINETICS_STD, antialias=False)
_INPUT_RANGE = "(RGB / 255 - mean) / std"


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


def _ig65m(name: str, file_name: str, stack_size: int, num_classes: int) -> Weights:
    """IG-65M heads (359 and 487 hashtags) have no published class names."""
    labels = kinetics400_labels() if num_classes == 400 else None
    url = f"{_IG65M}/{file_name}"
    return Weights(name, url, sha256_in_file_name(url), partial(r2plus1d_34, num_classes), _IG65M_TRANSFORM,
                   Meta(embed_dim=512, labels=labels, stack_size=stack_size, input_range=_INPUT_RANGE))


_KINETICS = R2Plus1D_18_Weights.KINETICS400_V1
R21D_WEIGHTS = WeightsTable([  # --weights (or --model_name)
    torchvision_weights(_KINETICS, r2plus1d_18, FramePreprocessing.from_torchvision(_KINETICS.transforms()),
                        name="r2plus1d_18_16_kinetics", embed_dim=512, labels=_KINETICS.meta["categories"],
                        stack_size=16, input_range=_INPUT_RANGE),
    *(_ig65m(name, *rest) for name, *rest in (
        ("r2plus1d_34_8_ig65m_ft_kinetics", "r2plus1d_34_clip8_ft_kinetics_from_ig65m-0aa0550b.pth", 8, 400),
        ("r2plus1d_34_32_ig65m_ft_kinetics", "r2plus1d_34_clip32_ft_kinetics_from_ig65m-ade133f1.pth", 32, 400),
        ("r2plus1d_34_8_ig65m_from_scratch", "r2plus1d_34_clip8_ig65m_from_scratch-9bae36ae.pth", 8, 359),
        ("r2plus1d_34_32_ig65m_from_scratch", "r2plus1d_34_clip32_ig65m_from_scratch-449a7af9.pth", 32, 487))),
], default="r2plus1d_18_16_kinetics")


class ExtractR21D(VideoClassifierExtractor):
    """One 512-d feature per window; key ``r21d``."""

    key = "r21d"
    docs = ModelDocs("R(2+1)D", "r21d.md", "R(2+1)D-18 (Kinetics) and R(2+1)D-34 (IG-65M)",
                     "windows", "`r21d`, 512")
    options = (*VideoClassifierExtractor.options, WEIGHTS.formerly("model_name"))

    def load_model(self) -> tuple[nn.ModuleDict, FramePreprocessing]:
        network = self.weights.build()
        load_state_dict_strictly(network, self.checkpoint_file(), f"a {self.weights.name} checkpoint")
        return with_separate_head(network, "fc"), self.weights.preprocessing


register(FeatureType("r21d", ExtractR21D, R21D_WEIGHTS))
