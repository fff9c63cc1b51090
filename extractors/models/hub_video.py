"""What the video families whose weights are transformers hub repositories share (videomae, vjepa2).

A repository is found, recorded and written at random as for every hub repository
(:mod:`extractors.models.hub_repository`), and its network is loaded by transformers' ``from_pretrained``, strictly.
What a family adds is small: which modules give the feature (and the classifier, for ``--show_pred``) and which
processor class reads its processor file. The frames are preprocessed one by one with the values transformers
reads from that file (:func:`processor_preprocessing`), so that crops, the device preprocessing and the other
window families' machinery apply.
"""
from __future__ import annotations

import abc
from typing import Any

import torch
from torch import nn
from torchvision.transforms import InterpolationMode

from extractors.engine_options import WEIGHTS
from extractors.models.hub_repository import HubRepositoryWeights, load_network, read_processor
from extractors.predictions import SHOW_PRED
from extractors.transforms import FramePreprocessing
from extractors.video_classifier import VideoClassifierExtractor
from io_utils.errors import UsageError

# PIL's resampling codes, as processor configurations store them.
_RESAMPLE = {0: InterpolationMode.NEAREST, 2: InterpolationMode.BILINEAR, 3: InterpolationMode.BICUBIC}


class HubVideoExtractor(HubRepositoryWeights, VideoClassifierExtractor):
    """A window model whose weights are a transformers hub repository. A family says which of the network's
    modules give the feature (:meth:`feature_modules`), which transformers class reads its processor file
    (``processor_class``) and how that processor resizes (:meth:`frame_preprocessing`)."""

    options = (*VideoClassifierExtractor.options, WEIGHTS)
    processor_class = "AutoImageProcessor"

    def load_model(self) -> tuple[nn.ModuleDict, FramePreprocessing]:
        found = self.repository(self.config)
        model = self.feature_modules(load_network(found))
        if self.config[SHOW_PRED] and "head" not in model:  # a pre-trained model's folder under a classifier's name
            raise UsageError(f"--show_pred: {found.folder} holds no classifier")
        return model, self.frame_preprocessing(read_processor(found.folder, self.processor_class))

    @abc.abstractmethod
    def feature_modules(self, network: nn.Module) -> nn.ModuleDict:
        """``backbone``: (B, T, C, H, W) windows -> (B, D) features; ``head``: the classifier, where there is one."""

    @staticmethod
    def frame_preprocessing(processor: Any) -> FramePreprocessing:
        return processor_preprocessing(processor)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """(B, T, C, H, W) windows, as transformers' video models take them -> (B, D) features."""
        return self.model["backbone"](batch)


def processor_preprocessing(processor: Any, shortest_edge: int | None = None) -> FramePreprocessing:
    """A processor, as transformers read it from the repository's file, as a :class:`FramePreprocessing`:
    transformers' default (torchvision) image and video processors resize uint8 tensors with
    ``torchvision.transforms.v2``, antialiased. Asking transformers for the values reads every file it reads with
    the values it gives: the 2022 files of MCG-NJU's VideoMAE repositories, written by a ``*FeatureExtractor``,
    say ``"size": 224`` with no ``crop_size`` or rescale keys. ``shortest_edge`` replaces the stored size for
    processors that derive it from the crop."""
    crop = processor.crop_size
    return FramePreprocessing(shortest_edge or processor.size.shortest_edge, (crop.height, crop.width),
                              tuple(processor.image_mean), tuple(processor.image_std),
                              divisor=1 / processor.rescale_factor, interpolation=_RESAMPLE[int(processor.resample)],
                              v2=True)
