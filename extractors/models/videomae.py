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

Loading is strict, by transformers' ``from_pretrained`` of the class ``config.json`` names
(``VideoMAEForVideoClassification``, ``VideoMAEForPreTraining``). The published files name the query and value
biases ``attention.attention.q_bias`` / ``v_bias``, which transformers v5 calls ``query.bias`` / ``value.bias``;
its loader renames them (a test checks that they are loaded, not left at zero), and the random weights here are
written under the published names so that this stays checked.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from extractors.models.hub_video import HubVideoExtractor
from extractors.models.hub_repository import hub_entry
from extractors.predictions import kinetics400_labels
from extractors.registry import FeatureType, ModelDocs, register
from extractors.weights import WeightsTable
from io_utils.checkpoints import renamed_keys

# The published files' names of what transformers v5 calls query.bias / value.bias.
_PUBLISHED_BIASES = [(r"\.attention\.attention\.query\.bias$", ".attention.attention.q_bias"),
                     (r"\.attention\.attention\.value\.bias$", ".attention.attention.v_bias")]


def _repository(name: str, repository: str, width: int, classifier: bool):
    """A hub repository of VideoMAE weights; ``build`` makes the network of its size (for random weights)."""
    return hub_entry(name, repository, lambda: _network(width, classifier), embed_dim=width,
                     labels=kinetics400_labels() if classifier else None, stack_size=16, fps=7.5,
                     input_range="(RGB / 255 - mean) / std, ImageNet mean and std")


VIDEOMAE_WEIGHTS = WeightsTable([
    _repository("kinetics400_base", "MCG-NJU/videomae-base-finetuned-kinetics", 768, True),
    _repository("kinetics400_large", "MCG-NJU/videomae-large-finetuned-kinetics", 1024, True),
    _repository("pretrained_base", "MCG-NJU/videomae-base", 768, False),
    _repository("pretrained_large", "MCG-NJU/videomae-large", 1024, False),
], default="kinetics400_base")


def _network(width: int, classifier: bool) -> nn.Module:
    """A base (768) or large (1024) VideoMAE as the repositories publish it: the Kinetics classifier, or the
    pre-training model (encoder and pixel decoder)."""
    from transformers import VideoMAEConfig, VideoMAEForPreTraining, VideoMAEForVideoClassification

    size = dict(hidden_size=width, num_hidden_layers=12 if width == 768 else 24,
                num_attention_heads=12 if width == 768 else 16, intermediate_size=4 * width)
    if not classifier:
        return VideoMAEForPreTraining(VideoMAEConfig(**size, use_mean_pooling=False))
    labels = kinetics400_labels()
    return VideoMAEForVideoClassification(VideoMAEConfig(
        **size, use_mean_pooling=True, id2label=dict(enumerate(labels)),
        label2id={label: index for index, label in enumerate(labels)}))


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
    repository_needs = ("preprocessor_config.json",)

    def feature_modules(self, network: nn.Module) -> nn.ModuleDict:
        """A classifier's feature is its head's input: ``fc_norm`` of the token mean; a pre-training model's (or a
        bare encoder's) the token mean of its encoder."""
        if hasattr(network, "classifier"):
            norm = network.fc_norm if network.fc_norm is not None else nn.Identity()
            return nn.ModuleDict({"backbone": MeanPooled(network.videomae, norm), "head": network.classifier})
        return nn.ModuleDict({"backbone": MeanPooled(getattr(network, "videomae", network), nn.Identity())})

    @staticmethod
    def publishes_processor(network: nn.Module) -> Any:
        """The authors' processor file: the short side to 224, bilinear; a 224 crop; ImageNet mean and std."""
        from transformers import VideoMAEImageProcessor

        return VideoMAEImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224},
                                      image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])

    @staticmethod
    def published_names(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return renamed_keys(tensors, _PUBLISHED_BIASES)


register(FeatureType("videomae", ExtractVideoMAE, VIDEOMAE_WEIGHTS))
