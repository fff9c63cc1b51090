"""ResNet-18 to -152 image features (torchvision's models and ImageNet weight enums).

The saved feature is the global average pool before the classifier: 512-d (18, 34) or 2048-d (50, 101, 152).
Preprocessing is the weight enum's own transform (V1: short side 256, V2: 232; crop 224, ImageNet mean/std).
``--side_size N`` feeds the whole frame at a short side of N instead of the centre crop, as the HowTo100M 2D
extractor does (``--preset howto100m_2d``).
"""
from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn
from torchvision import models

from extractors.engine_options import CHECKPOINT, WEIGHTS
from extractors.frame_wise import FrameWiseExtractor
from extractors.predictions import SHOW_PRED, HeadPredictions, with_separate_head
from extractors.registry import FeatureType, ModelDocs, register
from extractors.transforms import CROPS, PREPROCESS_ON_DEVICE, SIDE_SIZE, FramePreprocessing
from extractors.weights import WeightsTable, torchvision_weights
from io_utils.checkpoints import load_state_dict_strictly
from io_utils.errors import UsageError

_RESNETS = {"resnet18": (models.resnet18, models.ResNet18_Weights, 512),
            "resnet34": (models.resnet34, models.ResNet34_Weights, 512),
            "resnet50": (models.resnet50, models.ResNet50_Weights, 2048),
            "resnet101": (models.resnet101, models.ResNet101_Weights, 2048),
            "resnet152": (models.resnet152, models.ResNet152_Weights, 2048)}
RESNET_WEIGHTS: dict[str, WeightsTable] = {  # feature type -> its torchvision weights by --weights name
    name: WeightsTable([torchvision_weights(member, builder, FramePreprocessing.from_torchvision(member.transforms()),
                                            embed_dim=dim, labels=member.meta["categories"],
                                            input_range="(RGB / 255 - mean) / std")
                        for member in enum if member.name != "DEFAULT"], default="IMAGENET1K_V1")
    for name, (builder, enum, dim) in _RESNETS.items()
}


class ExtractResNet(HeadPredictions, FrameWiseExtractor):
    """Pooled features of sampled frames; ``--show_pred`` prints the top-5 ImageNet classes per frame."""

    key = "resnet"
    docs = ModelDocs("ResNet", "resnet.md", "torchvision ImageNet ResNets, pooled features",
                     "frames", "`resnet`, 512 or 2048")
    options = (*FrameWiseExtractor.options, WEIGHTS, CHECKPOINT, CROPS, SHOW_PRED, SIDE_SIZE, PREPROCESS_ON_DEVICE)

    @classmethod
    def validate(cls, config, weights) -> None:
        super().validate(config, weights)
        if config[SIDE_SIZE] and config[CROPS] > 1:
            raise UsageError("--side_size feeds the whole frame, uncropped: it cannot be combined with --crops")

    def load_model(self) -> tuple[nn.Module, FramePreprocessing]:
        network = self.weights.build()
        load_state_dict_strictly(network, self.checkpoint_file(), f"a torchvision {self.feature_type} checkpoint")
        preprocessing = self.weights.preprocessing
        if self.config[SIDE_SIZE]:  # the whole frame at that short side; the network pools whatever size it gets
            preprocessing = replace(preprocessing, resize=self.config[SIDE_SIZE], crop=None)
        return with_separate_head(network, "fc"), preprocessing

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model["backbone"](batch)


register(*(FeatureType(name, ExtractResNet, table) for name, table in RESNET_WEIGHTS.items()))
