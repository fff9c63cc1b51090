"""VideoMAE clip features (transformers' VideoMAE), on windows of 16 frames.

``--weights`` names a published hub repository of MCG-NJU (the authors):
- ``kinetics400_base`` (default), ``kinetics400_large``: fine-tuned on Kinetics-400. The feature is the
  classifier's input, the final norm (``fc_norm``) of the mean of the last hidden states: 768-d (base) or
  1024-d (large). ``--show_pred`` applies the classifier.
- ``pretrained_base``, ``pretrained_large``: self-supervised on Kinetics-400, before fine-tuning. The feature is
  the mean of the encoder's last hidden states (after its final norm where the configuration has one).

Windows are 16 frames at 7.5 fps: the fine-tuned models were trained and evaluated on 16 frames taken every 4th
frame of 30 fps Kinetics clips. Preprocessing is the repository's processor configuration
(``preprocessor_config.json``: resize of the short side, bilinear, antialiased, on tensors as transformers'
default image processor does; centre crop; rescale; normalise).

Loading is strict and written here: the repository's ``config.json`` builds the network, and the weights load
with ``strict=True`` after one documented renaming. The published files name the query and value biases
``attention.attention.q_bias`` / ``v_bias``, which transformers v5 calls ``query.bias`` / ``value.bias`` (a
renaming its own loader has been reported to miss, leaving zeros).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from extractors.engine_options import CHECKPOINT
from extractors.models.hub_video import (HUB, WEIGHT_FILES, HubVideoExtractor, processor_preprocessing,
                                         read_processor, repo_id)
from extractors.predictions import kinetics400_labels
from extractors.registry import FeatureType, ModelDocs, register
from extractors.transforms import FramePreprocessing
from extractors.weights import Meta, Weights, WeightsTable
from io_utils.checkpoints import load_strictly, read_state_dict, renamed_keys
from io_utils.hub import snapshot_folder

_PROCESSOR_FILE = "preprocessor_config.json"
_WHAT = "the VideoMAE its config.json describes"
# transformers v5's names for what the published files call q_bias / v_bias.
_BIAS_NAMES = {".attention.attention.q_bias": ".attention.attention.query.bias",
               ".attention.attention.v_bias": ".attention.attention.value.bias"}
_BIAS_RENAMES = [(re.escape(published) + "$", ours) for published, ours in _BIAS_NAMES.items()]
# Keys of a pre-training checkpoint that are not the encoder (the pixel decoder).
_DECODER_PREFIXES = ("decoder.", "encoder_to_decoder.", "mask_token")


def _repository(name: str, repository: str, width: int, classifier: bool) -> Weights:
    """A hub repository of VideoMAE weights; ``build`` makes the configuration of its size (for random weights)."""
    labels = kinetics400_labels() if classifier else None
    return Weights(name, f"{HUB}/{repository}", None, lambda: _configuration(width, classifier), None,
                   Meta(embed_dim=width, labels=labels, stack_size=16, fps=7.5,
                        input_range="(RGB / 255 - mean) / std, ImageNet mean and std"))


VIDEOMAE_WEIGHTS = WeightsTable([
    _repository("kinetics400_base", "MCG-NJU/videomae-base-finetuned-kinetics", 768, True),
    _repository("kinetics400_large", "MCG-NJU/videomae-large-finetuned-kinetics", 1024, True),
    _repository("pretrained_base", "MCG-NJU/videomae-base", 768, False),
    _repository("pretrained_large", "MCG-NJU/videomae-large", 1024, False),
], default="kinetics400_base")


def _configuration(width: int, classifier: bool) -> Any:
    """transformers' configuration of a base (768) or large (1024) VideoMAE, as the repositories publish it."""
    from transformers import VideoMAEConfig

    size = dict(hidden_size=width, num_hidden_layers=12 if width == 768 else 24,
                num_attention_heads=12 if width == 768 else 16, intermediate_size=4 * width)
    if not classifier:
        return VideoMAEConfig(**size, use_mean_pooling=False)
    labels = kinetics400_labels()
    return VideoMAEConfig(**size, use_mean_pooling=True, id2label=dict(enumerate(labels)),
                          label2id={label: index for index, label in enumerate(labels)})


class MeanPooled(nn.Module):
    """The encoder's last hidden states, averaged over the tokens, then ``norm``: (B, T, C, H, W) -> (B, D)."""

    def __init__(self, encoder: nn.Module, norm: nn.Module):
        super().__init__()
        self.encoder, self.norm = encoder, norm

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.norm(self.encoder(pixel_values=pixel_values).last_hidden_state.mean(dim=1))


class ExtractVideoMAE(HubVideoExtractor):
    """One feature per 16-frame window; key ``videomae``."""

    key = "videomae"
    docs = ModelDocs("VideoMAE", "videomae.md", "VideoMAE (Kinetics fine-tuned or self-supervised), 16-frame windows",
                     "windows", "`videomae`, 768 or 1024")
    display_name = "VideoMAE"
    processor_files = (_PROCESSOR_FILE,)

    @classmethod
    def write_random_repository(cls, weights: Weights, cache: Path, seed: int) -> list[Path]:
        return write_random_videomae(weights, cache, seed)

    def load_model(self) -> tuple[nn.ModuleDict, FramePreprocessing]:
        from transformers import VideoMAEConfig

        files = self.repository_files(self.weights, self.config[CHECKPOINT], self.config.weights_dir,
                                      progress=not self.external_call)
        configuration = VideoMAEConfig.from_json_file(files["config"])
        model = self.checked_for_show_pred(
            _strictly_loaded(configuration, published_state_dict(files["weights"]), files["weights"]), files["weights"])
        return model, processor_preprocessing(read_processor(files["processor"], "AutoImageProcessor"))

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """(B, T, C, H, W) windows, as VideoMAE takes them -> (B, D) features."""
        return self.model["backbone"](batch)


def published_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a published file under transformers v5's names (``q_bias`` -> ``query.bias``)."""
    return renamed_keys(read_state_dict(path, "VideoMAE weights"), _BIAS_RENAMES)


def _strictly_loaded(configuration: Any, state_dict: dict[str, torch.Tensor], path: Path) -> nn.ModuleDict:
    """The network of ``configuration`` with ``state_dict`` loaded strictly: a classifier checkpoint into
    ``VideoMAEForVideoClassification``, a pre-training one's encoder into ``VideoMAEModel`` (its pixel decoder
    left out)."""
    from transformers import VideoMAEForVideoClassification, VideoMAEModel

    if "classifier.weight" in state_dict:
        network = VideoMAEForVideoClassification(configuration)
        load_strictly(network, state_dict, path, _WHAT)
        norm = network.fc_norm if network.fc_norm is not None else nn.Identity()
        return nn.ModuleDict({"backbone": MeanPooled(network.videomae, norm), "head": network.classifier})
    encoder = {key.removeprefix("videomae."): value for key, value in state_dict.items()
               if not key.startswith(_DECODER_PREFIXES)}
    network = VideoMAEModel(configuration)
    load_strictly(network, encoder, path, _WHAT)
    return nn.ModuleDict({"backbone": MeanPooled(network, nn.Identity())})


def write_random_videomae(weights: Weights, cache: Path, seed: int = 0) -> list[Path]:
    """The hub repository of ``weights`` with random weights, in the hub cache layout under ``cache``:
    ``config.json``, ``model.safetensors`` under the published tensor names (``q_bias`` / ``v_bias``, random,
    so that a loader that drops them changes the features) and the processor configuration the authors publish."""
    from safetensors.torch import save_file
    from transformers import VideoMAEForPreTraining, VideoMAEForVideoClassification

    torch.manual_seed(seed)
    configuration = weights.build()
    classifier = weights.meta.labels is not None  # the Kinetics fine-tuned repositories
    network = (VideoMAEForVideoClassification if classifier else VideoMAEForPreTraining)(configuration)
    published_names = {ours: published for published, ours in _BIAS_NAMES.items()}
    tensors = {}
    for key, tensor in network.state_dict().items():
        suffix = next((ours for ours in published_names if key.endswith(ours)), None)
        if suffix is not None:  # zeros at initialisation: random, so that dropping them would show
            key, tensor = key.removesuffix(suffix) + published_names[suffix], 0.02 * torch.randn_like(tensor)
        tensors[key] = tensor.contiguous()
    folder = snapshot_folder(cache, repo_id(weights))
    save_file(tensors, folder / WEIGHT_FILES[0])
    configuration.to_json_file(folder / "config.json")
    processor = dict(do_resize=True, size={"shortest_edge": 224}, resample=2, do_center_crop=True,
                     crop_size={"height": 224, "width": 224}, do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
                     image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
                     image_processor_type="VideoMAEImageProcessor")
    (folder / _PROCESSOR_FILE).write_text(json.dumps(processor, indent=2))
    return [folder / WEIGHT_FILES[0], folder / "config.json", folder / _PROCESSOR_FILE]


register(FeatureType("videomae", ExtractVideoMAE, VIDEOMAE_WEIGHTS))
