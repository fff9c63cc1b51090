"""S3D clip features (1024-d): torchvision's model and Kinetics-400 weights, or kylemin's ``S3D_kinetics400.pt``.

The feature is what torchvision's classifier sees, averaged over time: the [2, 7, 7] average pool after the
last inception block, averaged over the remaining time steps. The classifier is a 1x1x1 convolution, so the
logits of that average are torchvision's logits.

kylemin/S3D (the checkpoint older extraction tools use) is the same network under other module names
(``base.N``, ``conv_s``/``bn_s``, ``fc.0``): ``--checkpoint S3D_kinetics400.pt`` is recognised by its keys,
renamed onto torchvision's module, loaded strictly, and fed the input that checkpoint was trained on: RGB
scaled to [-1, 1] instead of Kinetics mean/std.
"""
from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn
from torchvision.models.video import S3D_Weights, s3d

from extractors.engine_options import WEIGHTS
from extractors.registry import FeatureType, ModelDocs, register
from extractors.transforms import FramePreprocessing
from extractors.video_classifier import VideoClassifierExtractor
from extractors.weights import WeightsTable, torchvision_weights
from io_utils.checkpoints import load_state_dict_strictly, renamed_keys

_KINETICS = S3D_Weights.KINETICS400_V1
S3D_WEIGHTS = WeightsTable([
    torchvision_weights(
        _KINETICS, s3d, FramePreprocessing.from_torchvision(_KINETICS.transforms()), embed_dim=1024,
        labels=_KINETICS.meta["categories"], stack_size=64,
        min_stack_size=_KINETICS.meta["min_temporal_size"],  # 14: time must survive /8 and the 2-step pool
        input_range="(RGB / 255 - mean) / std; kylemin's file: RGB scaled to [-1, 1]"),
], default="KINETICS400_V1")


class S3DFeatures(nn.Module):
    """torchvision's S3D up to its classifier: (B, 3, T, H, W) -> (B, 1024)."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.features, self.avgpool = network.features, network.avgpool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.avgpool(self.features(x)).mean(dim=(2, 3, 4))


class S3DHead(nn.Module):
    """The classifier's 1x1x1 convolution applied to (B, 1024) features."""

    def __init__(self, conv: nn.Conv3d):
        super().__init__()
        self.conv = conv

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.conv(features[:, :, None, None, None]).flatten(1)


def is_kylemin_state_dict(state_dict: dict[str, torch.Tensor]) -> bool:
    return any(key.removeprefix("module.").startswith("base.") for key in state_dict)


_KYLEMIN_TO_TORCHVISION = [(r"^module\.", ""), (r"^base\.", "features."), (r"^fc\.0\.", "classifier.1."),
                           (r"\.branch0\.0\.", ".branch0."), (r"\.conv_s\.", ".0.0."), (r"\.bn_s\.", ".0.1."),
                           (r"\.conv_t\.", ".1.0."), (r"\.bn_t\.", ".1.1."), (r"\.conv\.", ".0."), (r"\.bn\.", ".1.")]


def convert_kylemin_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """kylemin/S3D key names -> torchvision's S3D.

    kylemin's ``SepConv3d`` (``conv_s``, ``bn_s``, ``conv_t``, ``bn_t``) is torchvision's
    ``TemporalSeparableConv`` (two conv-norm-ReLU blocks, ``0.0``, ``0.1``, ``1.0``, ``1.1``); its
    ``BasicConv3d`` (``conv``, ``bn``) is a conv-norm-ReLU block (``0``, ``1``), which an inception block's
    branch 0 holds directly rather than in a one-element sequence. Older checkpoints lack the batch-norm
    counters, which are then zero.
    """
    converted = renamed_keys(state_dict, _KYLEMIN_TO_TORCHVISION)
    for key in [key for key in converted if key.endswith(".running_var")]:
        converted.setdefault(key.removesuffix("running_var") + "num_batches_tracked", torch.tensor(0))
    return converted


class ExtractS3D(VideoClassifierExtractor):
    """One 1024-d feature per window (default 64 frames); key ``s3d``."""

    key = "s3d"
    docs = ModelDocs("S3D", "s3d.md", "S3D (Kinetics), torchvision's or kylemin's weights",
                     "windows", "`s3d`, 1024")
    options = (*VideoClassifierExtractor.options, WEIGHTS)

    def load_model(self) -> tuple[nn.ModuleDict, FramePreprocessing]:
        network = self.weights.build()
        found_kylemin = []

        def to_torchvision(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            if is_kylemin_state_dict(state_dict):
                found_kylemin.append(True)
                return convert_kylemin_state_dict(state_dict)
            return state_dict

        load_state_dict_strictly(network, self.checkpoint_file(), "an S3D checkpoint (torchvision's or kylemin's)",
                                 to_torchvision)
        preprocessing = self.weights.preprocessing
        if found_kylemin:  # trained on RGB scaled to [-1, 1]
            preprocessing = replace(preprocessing, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
        model = nn.ModuleDict({"backbone": S3DFeatures(network), "head": S3DHead(network.classifier[1])})
        return model, preprocessing


register(FeatureType("s3d", ExtractS3D, S3D_WEIGHTS))
