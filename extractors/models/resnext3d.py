"""3D ResNeXt-101 clip features (2048-d): the HowTo100M 3D extractor.

The network is Hara et al.'s 3D ResNeXt-101 (cardinality 32, shortcut B: a strided 1x1x1 convolution and
batch norm where a block changes shape), Kinetics-400, written here with the module names of the published
``resnext101.pth`` so that it loads strictly. The feature is the global average of ``layer4``, which for the
trained input (16 frames of 112x112) is the publisher's [1, 4, 4] average pool; the 400-class ``fc`` is kept
for ``--show_pred`` (Kinetics-400 classes in alphabetical order, as the training annotations sort them).

The HowTo100M recipe: frames at 24 fps, short side resized to 112 (bicubic, as FFmpeg's scale filter), centre
crop 112x112, 0..255 values minus the Kinetics mean (110.6, 103.2, 96.3), non-overlapping 16-frame windows:
1.5 features per second. The publisher zero-pads the last partial window; here it is dropped, or padded by
repeating its last frame with ``--pad_last``. ``--l2_normalize --dtype float16`` gives the published files'
format.
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision.transforms import InterpolationMode

from extractors.engine_options import WEIGHTS
from extractors.predictions import kinetics400_labels, with_separate_head
from extractors.registry import FeatureType, ModelDocs, register
from extractors.transforms import FramePreprocessing
from extractors.video_classifier import VideoClassifierExtractor
from extractors.weights import Meta, Weights, WeightsTable
from io_utils.checkpoints import load_state_dict_strictly

HOWTO100M_TRANSFORM = FramePreprocessing(112, (112, 112), mean=(110.6, 103.2, 96.3), std=(1.0, 1.0, 1.0), divisor=1.0,
                                         interpolation=InterpolationMode.BICUBIC, antialias=True)


class ResNeXtBottleneck3D(nn.Module):
    """1x1x1 -> grouped 3x3x3 (strided) -> 1x1x1 with twice ``planes`` outputs, plus the shortcut."""

    expansion = 2

    def __init__(self, in_planes: int, planes: int, cardinality: int, stride: int):
        super().__init__()
        middle = cardinality * (planes // 32)
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv3d(in_planes, middle, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm3d(middle)
        self.conv2 = nn.Conv3d(middle, middle, kernel_size=3, stride=stride, padding=1, groups=cardinality, bias=False)
        self.bn2 = nn.BatchNorm3d(middle)
        self.conv3 = nn.Conv3d(middle, out_planes, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm3d(out_planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_planes != out_planes:
            self.downsample = nn.Sequential(nn.Conv3d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False),
                                            nn.BatchNorm3d(out_planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class ResNeXt3D(nn.Module):
    """(B, 3, T, H, W) -> (B, 2048) pooled features; ``fc`` maps them to the 400 Kinetics classes."""

    def __init__(self, blocks: tuple[int, ...] = (3, 4, 23, 3), cardinality: int = 32, num_classes: int = 400):
        super().__init__()
        self.conv1 = nn.Conv3d(3, 64, kernel_size=7, stride=(1, 2, 2), padding=3, bias=False)
        self.bn1 = nn.BatchNorm3d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(kernel_size=3, stride=2, padding=1)
        in_planes = 64
        for index, (planes, count) in enumerate(zip((128, 256, 512, 1024), blocks), start=1):
            stride = 1 if index == 1 else 2
            layer = []
            for block in range(count):
                layer.append(ResNeXtBottleneck3D(in_planes, planes, cardinality, stride if block == 0 else 1))
                in_planes = planes * ResNeXtBottleneck3D.expansion
            self.add_module(f"layer{index}", nn.Sequential(*layer))
        self.fc = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return x.mean(dim=(2, 3, 4))


RESNEXT101_WEIGHTS = WeightsTable([  # no SHA-256 is published for this file
    Weights("howto100m", "https://www.rocq.inria.fr/cluster-willow/amiech/howto100m/models/resnext101.pth", None,
            ResNeXt3D, HOWTO100M_TRANSFORM, Meta(embed_dim=2048, labels=kinetics400_labels(), fps=24.0, stack_size=16,
                                                 input_range="RGB 0..255 minus the Kinetics mean")),
], default="howto100m")


class ExtractResNeXt3D(VideoClassifierExtractor):
    """One 2048-d feature per 16-frame window of frames at 24 fps; key ``resnext101_3d``."""

    key = "resnext101_3d"
    docs = ModelDocs("3D ResNeXt-101", "resnext101_3d.md", "the HowTo100M 3D ResNeXt-101",
                     "windows", "`resnext101_3d`, 2048")
    options = (*VideoClassifierExtractor.options, WEIGHTS)

    def load_model(self) -> tuple[nn.ModuleDict, FramePreprocessing]:
        network = self.weights.build()
        load_state_dict_strictly(network, self.checkpoint_file(),
                                 "the HowTo100M 3D ResNeXt-101 checkpoint (resnext101.pth)")
        return with_separate_head(network, "fc"), self.weights.preprocessing


register(FeatureType("resnext101_3d", ExtractResNeXt3D, RESNEXT101_WEIGHTS))
