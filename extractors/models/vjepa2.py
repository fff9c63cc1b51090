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

Loading is strict: every tensor of the encoder (and of the pooler and classifier of a classifier) must be in
the file, and the file may hold nothing else but the predictor, which feature extraction does not run.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from extractors.engine_options import CHECKPOINT
from extractors.models.hub_video import HUB, HubVideoExtractor, processor_preprocessing, read_processor, repo_id
from extractors.registry import FeatureType, ModelDocs, register
from extractors.transforms import FramePreprocessing
from extractors.weights import Meta, Weights, WeightsTable, random_constants
from io_utils.checkpoints import load_strictly, read_state_dict
from io_utils.errors import UsageError
from io_utils.hub import snapshot_folder

# Vision transformer sizes of the released encoders: (hidden size, layers, heads, MLP ratio).
_SIZES = {"L": (1024, 24, 16, 4.0), "H": (1280, 32, 16, 4.0), "g": (1408, 40, 22, 48 / 11)}
_SSV2_CLASSES = 174
_WHAT = "the V-JEPA 2 its config.json describes"
# What a published file may hold besides the modules that are run.
_PREDICTOR_PREFIXES = ("predictor.", "vjepa2.predictor.")


def _repository(name: str, repository: str, size: str, crop: int, frames_per_clip: int, fps: float,
                classes: int | None = None) -> Weights:
    """A hub repository of V-JEPA 2 weights; ``build`` makes its configuration (for random weights)."""
    width = _SIZES[size][0]
    return Weights(name, f"{HUB}/{repository}", None,
                   lambda: _configuration(size, crop, frames_per_clip, classes), None,
                   Meta(embed_dim=width, stack_size=16, fps=fps, min_stack_size=2,
                        input_range="(RGB / 255 - mean) / std, ImageNet mean and std"))


VJEPA2_WEIGHTS = WeightsTable([
    _repository("vitl", "facebook/vjepa2-vitl-fpc64-256", "L", 256, 64, 7.5),
    _repository("vith", "facebook/vjepa2-vith-fpc64-256", "H", 256, 64, 7.5),
    _repository("vitg", "facebook/vjepa2-vitg-fpc64-256", "g", 256, 64, 7.5),
    _repository("vitg_384", "facebook/vjepa2-vitg-fpc64-384", "g", 384, 64, 7.5),
    _repository("vitl_ssv2", "facebook/vjepa2-vitl-fpc16-256-ssv2", "L", 256, 16, 3.0, classes=_SSV2_CLASSES),
], default="vitl")


def _configuration(size: str, crop: int, frames_per_clip: int, classes: int | None) -> Any:
    from transformers import VJEPA2Config

    hidden, layers, heads, mlp_ratio = _SIZES[size]
    extra = {} if classes is None else dict(id2label={index: f"class {index}" for index in range(classes)})
    return VJEPA2Config(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, mlp_ratio=mlp_ratio,
                        crop_size=crop, frames_per_clip=frames_per_clip, **extra)


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
    display_name = "V-JEPA 2"
    # What transformers' video processors save; the older image-processor name is read too.
    processor_files = ("video_preprocessor_config.json", "preprocessor_config.json")

    @classmethod
    def names_classes(cls, weights: Weights) -> bool:
        return weights.name == "vitl_ssv2"  # its config.json names Something-Something's classes

    @property
    def class_names(self) -> Sequence[str]:
        return self._class_names

    @classmethod
    def write_random_repository(cls, weights: Weights, cache: Path, seed: int) -> list[Path]:
        return write_vjepa2_repository(snapshot_folder(cache, repo_id(weights)), weights.build(),
                                       cls.names_classes(weights), seed)

    def load_model(self) -> tuple[nn.ModuleDict, FramePreprocessing]:
        from transformers import VJEPA2Config

        files = self.repository_files(self.weights, self.config[CHECKPOINT], self.config.weights_dir,
                                      progress=not self.external_call)
        configuration = VJEPA2Config.from_json_file(files["config"])
        model = self.checked_for_show_pred(
            _strictly_loaded(configuration, read_state_dict(files["weights"], _WHAT), files["weights"]), files["weights"])
        if "head" in model:
            self._class_names = [configuration.id2label[index] for index in range(configuration.num_labels)]
        return model, video_processor_preprocessing(read_processor(files["processor"], "VJEPA2VideoProcessor"))

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """(B, T, C, H, W) windows, as V-JEPA 2 takes them -> (B, D) features."""
        return self.model["backbone"](batch)


def video_processor_preprocessing(processor: Any) -> FramePreprocessing:
    """``VJEPA2VideoProcessor``'s preprocessing: it ignores the stored size and resizes the short side to
    ``int(crop * 256 / 224)``."""
    return processor_preprocessing(processor, shortest_edge=int(processor.crop_size.height * 256 / 224))


def _strictly_loaded(configuration: Any, state_dict: dict[str, torch.Tensor], path: Path) -> nn.ModuleDict:
    """The modules that are run, each loaded strictly from its part of ``state_dict``: a classifier's encoder,
    attentive pooler and linear head (``VJEPA2ForVideoClassification``), else a pre-trained encoder."""
    from transformers import VJEPA2ForVideoClassification, VJEPA2Model

    if "classifier.weight" in state_dict:
        network = VJEPA2ForVideoClassification(configuration).eval()
        parts = {"vjepa2.encoder.": network.vjepa2.encoder, "pooler.": network.pooler,
                 "classifier.": network.classifier}
        model = {"backbone": EncoderFeature(network.vjepa2.encoder, network.pooler), "head": network.classifier}
    else:
        network = VJEPA2Model(configuration).eval()
        parts = {"encoder.": network.encoder}
        model = {"backbone": EncoderFeature(network.encoder)}
    unknown = [key for key in state_dict if not key.startswith((*parts, *_PREDICTOR_PREFIXES))]
    if unknown:
        raise UsageError(f"{path}: not the V-JEPA 2 its config.json describes (unexpected tensors: "
                         f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''})")
    for prefix, module in parts.items():
        part = {key.removeprefix(prefix): value for key, value in state_dict.items() if key.startswith(prefix)}
        load_strictly(module, part, path, _WHAT)
    return nn.ModuleDict(model)


def write_vjepa2_repository(folder: Path, configuration: Any, classifier: bool, seed: int = 0) -> list[Path]:
    """A V-JEPA 2 repository of random weights in ``folder``, written by transformers' own ``save_pretrained``
    (``config.json``, ``model.safetensors``) and ``VJEPA2VideoProcessor.save_pretrained``: a classifier
    (``VJEPA2ForVideoClassification``) or a pre-trained model (``VJEPA2Model``). Parameters that initialise to a
    constant are made random (:func:`~extractors.weights.random_constants`)."""
    from transformers import VJEPA2ForVideoClassification, VJEPA2Model, VJEPA2VideoProcessor

    torch.manual_seed(seed)
    network = (VJEPA2ForVideoClassification if classifier else VJEPA2Model)(configuration)
    random_constants(network)
    folder.mkdir(parents=True, exist_ok=True)
    network.save_pretrained(folder)
    VJEPA2VideoProcessor(crop_size=configuration.crop_size).save_pretrained(folder)
    return sorted(path for path in folder.iterdir() if path.is_file())


register(FeatureType("vjepa2", ExtractVJEPA2, VJEPA2_WEIGHTS))
