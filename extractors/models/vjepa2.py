"""V-JEPA 2 clip features (transformers' VJEPA2), on windows of 16 frames.

``--weights`` names a published hub repository of Meta (facebook/vjepa2-*):
- ``vitl`` (default), ``vith``, ``vitg``, ``vitg_384``: the self-supervised encoders (64 frames per clip in
  pre-training, 256 px, or 384 px). The feature is the mean of the encoder's last hidden states (after its final
  norm; ``VJEPA2Model(..., skip_predictor=True)``): 1024-d (L), 1280-d (H), 1408-d (g). The predictor is not
  run.
- ``vitl_ssv2``: the ViT-L with an attentive probe trained on Something-Something v2 (16 frames per clip). The
  feature is the attentive pooler's output, the classifier's input (1024-d); ``--show_pred`` prints the
  classes its ``config.json`` names.

Windows are 16 frames at 7.5 fps: the authors' frozen evaluation (``configs/eval``) feeds clips of 16 frames
taken every 4th frame (of 30 fps Kinetics video; of 12 fps Something-Something video, so 3 fps for
``vitl_ssv2``). ``--stack_size 64`` gives the pre-training clip length; the encoder's rotary position
embeddings take any even frame count. Preprocessing is the repository's video processor
(``VJEPA2VideoProcessor``: the short side resized to crop x 256 / 224, bilinear, antialiased on tensors;
centre crop; rescale; ImageNet mean and std).

Loading is strict, by transformers' ``from_pretrained`` of the class ``config.json`` names (``VJEPA2Model``,
``VJEPA2ForVideoClassification``): every tensor of the file must fit it and none may be missing. The predictor
is loaded with the encoder, as the publisher's model does, and not run.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from extractors.models.hub_repository import save_repository
from extractors.models.hub_video import HubVideoExtractor, processor_preprocessing
from extractors.models.hub_repository import hub_entry
from extractors.registry import FeatureType, ModelDocs, register
from extractors.transforms import FramePreprocessing
from extractors.weights import Weights, WeightsTable

# Vision transformer sizes of the released encoders: (hidden size, layers, heads, MLP ratio).
_SIZES = {"L": (1024, 24, 16, 4.0), "H": (1280, 32, 16, 4.0), "g": (1408, 40, 22, 48 / 11)}
_SSV2_CLASSES = 174

# The released repositories: (hub id, size, crop, frames per clip in training, --extraction_fps, classes).
_RELEASES = {
    "vitl": ("facebook/vjepa2-vitl-fpc64-256", "L", 256, 64, 7.5, None),
    "vith": ("facebook/vjepa2-vith-fpc64-256", "H", 256, 64, 7.5, None),
    "vitg": ("facebook/vjepa2-vitg-fpc64-256", "g", 256, 64, 7.5, None),
    "vitg_384": ("facebook/vjepa2-vitg-fpc64-384", "g", 384, 64, 7.5, None),
    "vitl_ssv2": ("facebook/vjepa2-vitl-fpc16-256-ssv2", "L", 256, 16, 3.0, _SSV2_CLASSES),
}


def release_configuration(name: str) -> Any:
    """transformers' configuration of a released repository, as its ``config.json`` says."""
    _, size, crop, frames_per_clip, _, classes = _RELEASES[name]
    return _configuration(size, crop, frames_per_clip, classes)


def _repository(name: str) -> Weights:
    """A released hub repository; ``build`` makes its network (for random weights)."""
    repository, size, _, _, fps, classes = _RELEASES[name]
    return hub_entry(name, repository, lambda: vjepa2_network(release_configuration(name), classes is not None),
                     embed_dim=_SIZES[size][0], stack_size=16, fps=fps, min_stack_size=2,
                     input_range="(RGB / 255 - mean) / std, ImageNet mean and std")


VJEPA2_WEIGHTS = WeightsTable([_repository(name) for name in _RELEASES], default="vitl")


def _configuration(size: str, crop: int, frames_per_clip: int, classes: int | None) -> Any:
    from transformers import VJEPA2Config

    hidden, layers, heads, mlp_ratio = _SIZES[size]
    extra = {} if classes is None else dict(id2label={index: f"class {index}" for index in range(classes)})
    return VJEPA2Config(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, mlp_ratio=mlp_ratio,
                        crop_size=crop, frames_per_clip=frames_per_clip, **extra)


def vjepa2_network(configuration: Any, classifier: bool) -> nn.Module:
    """The published network of ``configuration``: a classifier (the SSv2 one) or the pre-trained model (encoder
    and predictor)."""
    from transformers import VJEPA2ForVideoClassification, VJEPA2Model

    return (VJEPA2ForVideoClassification if classifier else VJEPA2Model)(configuration)


class EncoderFeature(nn.Module):
    """The encoder's last hidden states pooled to one vector: by the attentive ``pooler`` of a classifier, else
    by their mean. (B, T, C, H, W) -> (B, D)."""

    def __init__(self, encoder: nn.Module, pooler: nn.Module | None = None):
        super().__init__()
        self.encoder, self.pooler = encoder, pooler

    def forward(self, pixel_values_videos: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(pixel_values_videos=pixel_values_videos).last_hidden_state
        return self.pooler(hidden) if self.pooler is not None else hidden.mean(dim=1)


class ExtractVJEPA2(HubVideoExtractor):
    """One feature per window; key ``vjepa2``."""

    key = "vjepa2"
    docs = ModelDocs("V-JEPA 2", "vjepa2.md", "V-JEPA 2 (self-supervised ViT-L/H/g, or the SSv2 classifier), "
                     "16-frame windows", "windows", "`vjepa2`, 1024, 1280 or 1408")
    # What transformers' video processors save; it reads the older image-processor file name too.
    processor_class = "VJEPA2VideoProcessor"

    @classmethod
    def names_classes(cls, weights: Weights) -> bool:
        return weights.name == "vitl_ssv2"  # its config.json names Something-Something's classes

    @property
    def class_names(self) -> Sequence[str]:
        return self._class_names

    def feature_modules(self, network: nn.Module) -> nn.ModuleDict:
        """A classifier's feature is its attentive pooler's output (the head's input); a pre-trained model's the
        mean of its encoder's last hidden states."""
        if hasattr(network, "classifier"):
            configuration = network.config
            self._class_names = [configuration.id2label[index] for index in range(configuration.num_labels)]
            return nn.ModuleDict({"backbone": EncoderFeature(network.vjepa2.encoder, network.pooler),
                                  "head": network.classifier})
        return nn.ModuleDict({"backbone": EncoderFeature(network.encoder)})

    @staticmethod
    def frame_preprocessing(processor: Any) -> FramePreprocessing:
        """``VJEPA2VideoProcessor`` ignores the stored size and resizes the short side to ``int(crop * 256 / 224)``."""
        return processor_preprocessing(processor, shortest_edge=int(processor.crop_size.height * 256 / 224))

    @staticmethod
    def publishes_processor(network: nn.Module) -> Any:
        from transformers import VJEPA2VideoProcessor

        return VJEPA2VideoProcessor(crop_size=network.config.crop_size)


def write_vjepa2_repository(folder: Path, configuration: Any, classifier: bool, seed: int = 0) -> list[Path]:
    """A V-JEPA 2 repository of random weights in ``folder`` (``config.json``, ``model.safetensors``,
    ``video_preprocessor_config.json``): a classifier or a pre-trained model."""
    return save_repository(folder, lambda: vjepa2_network(configuration, classifier), ExtractVJEPA2.publishes_processor,
                           seed)


register(FeatureType("vjepa2", ExtractVJEPA2, VJEPA2_WEIGHTS))
