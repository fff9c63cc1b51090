"""Any timm model as a frame-wise feature extractor (``--feature_type timm --model_name NAME``).

The model is built without its classifier (``num_classes=0``), so the output is timm's pooled feature. Weights
come from timm's own source (the Hugging Face hub, cached under ``$HF_HOME``), or from ``--checkpoint``.
Preprocessing follows the pretrained config (input size, ``crop_pct``, interpolation, mean/std), applied with
torchvision's tensor resize: timm's reference pipeline resizes PIL images, which rounds differently by
about one grey level.
"""
from __future__ import annotations

import difflib
import math
from typing import Any, Mapping

import torch
from torch import nn
from torchvision.transforms import InterpolationMode

from extractors.base import CHECKPOINT, FrameWiseExtractor
from extractors.options import Option
from extractors.registry import FeatureType, register
from extractors.transforms import CROPS, FramePreprocessing
from io_utils.errors import UsageError

MODEL_NAME = Option("model_name", None, "the timm model, with its pretrained tag if it has several (e.g. "
                    "vit_base_patch16_224.augreg2_in21k_ft_in1k)", "resnet50.a1_in1k", metavar="NAME", required=True)


def timm_preprocessing(config: Mapping[str, Any]) -> FramePreprocessing:
    """The eval transform of a timm data config (``timm.data.resolve_data_config``) as a
    :class:`FramePreprocessing`: resize to ``size / crop_pct`` (short side, or both sides for ``squash``),
    centre crop ``size``."""
    _, height, width = config["input_size"]
    crop_pct = config.get("crop_pct") or 0.875
    mode = config.get("crop_mode") or "center"
    scaled = (math.floor(height / crop_pct), math.floor(width / crop_pct))
    if mode == "squash":
        resize: int | tuple[int, int] = scaled
    elif mode == "center" and height == width:
        resize = scaled[0]
    else:
        raise UsageError(f"timm crop_mode {mode!r} with input size {height}x{width} is not supported")
    return FramePreprocessing(resize, (height, width), tuple(config["mean"]), tuple(config["std"]),
                              interpolation=InterpolationMode(config["interpolation"]), antialias=True)


class ExtractTimm(FrameWiseExtractor):
    """Pooled features of sampled frames from ``--model_name``; the key is ``timm``. Its weights come from timm's
    own source, so it has no :class:`Weights` entry."""

    key = "timm"
    options = (*FrameWiseExtractor.options, MODEL_NAME, CHECKPOINT, CROPS)

    @classmethod
    def validate(cls, config, weights) -> None:
        super().validate(config, weights)
        import timm

        if not timm.is_model(config.model_name):
            close = difflib.get_close_matches(config.model_name, timm.list_models(), n=5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise UsageError(f"--model_name {config.model_name}: not a timm model{hint}")

    def load_model(self) -> tuple[nn.Module, FramePreprocessing]:
        import timm

        overlay = {"file": self.config.checkpoint} if self.config.checkpoint else None
        try:
            model = timm.create_model(self.config.model_name, pretrained=True, num_classes=0,
                                      pretrained_cfg_overlay=overlay)
        except Exception as error:  # hub, network, file and format errors come in many types
            raise UsageError(self._unavailable(error)) from error
        return model, timm_preprocessing(timm.data.resolve_data_config({}, model=model))

    def _unavailable(self, error: Exception) -> str:
        name, reason = self.config.model_name, f"{type(error).__name__}: {error}"
        if self.config.checkpoint:
            return f"--checkpoint {self.config.checkpoint}: not a timm {name} checkpoint ({reason})"
        import timm
        from huggingface_hub.constants import HF_HUB_CACHE

        source = timm.models.get_pretrained_cfg(name)
        hub_id = getattr(source, "hf_hub_id", None) or name
        return (f"timm model {name}: the pretrained weights are not in the Hugging Face cache ({HF_HUB_CACHE}) and "
                f"could not be downloaded ({reason}); on a machine with network, run "
                f"`huggingface-cli download {hub_id}` and copy that cache here, or pass --checkpoint PATH")

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model(batch)


register(FeatureType("timm", ExtractTimm))
