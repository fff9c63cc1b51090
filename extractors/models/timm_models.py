"""Any timm model as a frame-wise feature extractor (``--feature_type timm --model_name NAME``): DINOv2, DINOv3,
EVA, SigLIP towers, ConvNeXt, ...

The model is built without its classifier (``num_classes=0``). The feature is timm's pooled output by default;
for vision transformers ``--image_feature`` takes the class token, the mean of the patch tokens (registers and
other prefix tokens left out) or both concatenated (DINOv2's linear-probe feature), all after the final norm.
Weights come from timm's own source: the file of the model's Hugging Face hub repository (looked up as
``io_utils/hub.py`` says), a URL for the few models not on the hub, or ``--checkpoint``; timm's own key
conversion applies to each. Preprocessing is timm's eval transform of the pretrained config (input size,
``crop_pct``, crop mode, interpolation, mean/std), resizing a PIL image as timm does (``--fast_resize``: a tensor).
"""
from __future__ import annotations

import difflib
import math
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn
from torchvision.transforms import InterpolationMode

from extractors.base import WeightsFile
from extractors.engine_options import CHECKPOINT, MODEL_NAME
from extractors.frame_wise import FrameWiseExtractor
from extractors.options import Option
from extractors.registry import FeatureType, ModelDocs, register
from extractors.transforms import CROPS, FAST_RESIZE, PREPROCESS_ON_DEVICE, FramePreprocessing
from io_utils.errors import UsageError
from io_utils.hub import HubFile, located_weights, snapshot_folder, weights_address


def timm_preprocessing(config: Mapping[str, Any], pil: bool = True) -> FramePreprocessing:
    """timm's eval transform (``timm.data.create_transform`` of a data config from
    ``timm.data.resolve_data_config``) as a :class:`FramePreprocessing`: scale to ``size / crop_pct`` (the short
    side for ``center``, both sides for ``squash``, the long side with a padded border for ``border``), centre
    crop ``size``. ``pil``: resize a PIL image, as timm does."""
    _, height, width = config["input_size"]
    crop_pct = config.get("crop_pct") or 0.875
    mode = config.get("crop_mode") or "center"
    scaled = (math.floor(height / crop_pct), math.floor(width / crop_pct))
    common = dict(crop=(height, width), mean=tuple(config["mean"]), std=tuple(config["std"]),
                  interpolation=InterpolationMode(config["interpolation"]), pil=pil)
    if mode == "squash":
        return FramePreprocessing(scaled, **common)
    if mode == "border":
        return FramePreprocessing(scaled, keep_ratio=1.0, fill=tuple(round(255 * value) for value in config["mean"]),
                                  **common)
    if mode != "center":
        raise UsageError(f"timm crop_mode {mode!r} is not supported (center, squash and border are)")
    if scaled[0] == scaled[1]:
        return FramePreprocessing(scaled[0], **common)
    return FramePreprocessing(scaled, keep_ratio=0.0, **common)


IMAGE_FEATURE = Option("image_feature", "pooled", "pooled: the model's pooled output (timm's forward_head); cls: the "
                       "class token; patch_mean: the mean of the patch tokens; cls_patch_mean: both concatenated "
                       "(DINOv2's linear probe); the token choices need a vision transformer", "cls_patch_mean",
                       choices=("pooled", "cls", "patch_mean", "cls_patch_mean"))


class ExtractTimm(FrameWiseExtractor):
    """Pooled features of sampled frames from ``--model_name``; the key is ``timm``. Its weights come from timm's
    own source, so it has no :class:`Weights` entry."""

    key = "timm"
    docs = ModelDocs("timm", "timm.md", "any timm model (`--model_name`): pooled, class token or patch-mean features",
                     "frames", "`timm`, the model's")
    options = (*FrameWiseExtractor.options, MODEL_NAME, CHECKPOINT, IMAGE_FEATURE, CROPS, FAST_RESIZE,
               PREPROCESS_ON_DEVICE)

    @classmethod
    def validate(cls, config, weights) -> None:
        super().validate(config, weights)
        import timm

        if not timm.is_model(config[MODEL_NAME]):
            close = difflib.get_close_matches(config[MODEL_NAME], timm.list_models(), n=5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise UsageError(f"--model_name {config[MODEL_NAME]}: not a timm model{hint}")

    @classmethod
    def prepare(cls, config) -> None:
        """Find or download the weights once per run, before workers start."""
        _weights_file(config[MODEL_NAME], config[CHECKPOINT], config.weights_dir)

    @classmethod
    def weights_files(cls, config) -> list[WeightsFile]:
        path = _weights_file(config[MODEL_NAME], config[CHECKPOINT], config.weights_dir, progress=False)
        if path is None:  # left to timm: a URL it caches itself
            return []
        return [WeightsFile(path, weights_address(_hub_source(config[MODEL_NAME]), path, config[CHECKPOINT]))]

    @classmethod
    def write_random(cls, config, folder: Path, seed: int = 0) -> list[Path]:
        """The model's hub repository with random weights (``config.json`` + ``model.safetensors``, timm's hub
        format), in the hub cache layout under ``folder``, where ``--weights_dir folder`` finds it."""
        import timm
        from timm.models._hub import save_for_hf

        source = _hub_source(config[MODEL_NAME])
        if source is None:
            raise UsageError(f"timm model {config[MODEL_NAME]}: its weights are not a hub checkpoint that timm loads "
                             f"as a state dict (timm reads them with the model's own code); random weights are "
                             f"written only in the hub format")
        torch.manual_seed(seed)
        destination = snapshot_folder(folder, source.repo_id)
        save_for_hf(timm.create_model(config[MODEL_NAME], pretrained=False), str(destination), safe_serialization=True)
        if source.file_names[0] != "model.safetensors":
            (destination / "model.safetensors").rename(destination / source.file_names[0])
        return [destination / source.file_names[0], destination / "config.json"]

    def load_model(self) -> tuple[nn.Module, FramePreprocessing]:
        import timm

        name = self.config[MODEL_NAME]
        path = _weights_file(name, self.config[CHECKPOINT], self.config.weights_dir, progress=not self.external_call)
        overlay = {"file": str(path)} if path is not None else None
        try:
            model = timm.create_model(name, pretrained=True, num_classes=0, pretrained_cfg_overlay=overlay)
        except Exception as error:  # hub, network, file and format errors come in many types
            reason = " ".join(f"{type(error).__name__}: {error}".split())[:500]
            raise UsageError(f"timm model {name}: cannot load {path or 'its weights'} ({reason}); pass "
                             f"--checkpoint PATH or put the hub repository in --weights_dir") from error
        _check_tokens(model, name, self.config[IMAGE_FEATURE])
        config = timm.data.resolve_data_config({}, model=model)
        return model, timm_preprocessing(config, pil=not self.config[FAST_RESIZE])

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        choice = self.config[IMAGE_FEATURE]
        if choice == "pooled":
            return self.model(batch)
        tokens = self.model.forward_features(batch)  # (B, prefix + patches, C), after the final norm
        parts = {"cls": tokens[:, 0], "patch_mean": tokens[:, self.model.num_prefix_tokens:].mean(dim=1)}
        return torch.cat([parts["cls"], parts["patch_mean"]], dim=1) if choice == "cls_patch_mean" else parts[choice]


def _check_tokens(model: nn.Module, name: str, choice: str) -> None:
    """Refuse a token choice the model has no tokens for: a class token needs one, patch tokens a transformer."""
    if choice == "pooled":
        return
    if not hasattr(model, "num_prefix_tokens"):
        raise UsageError(f"--image_feature {choice}: timm model {name} is not a vision transformer (no tokens); "
                         f"use pooled")
    if "cls" in choice and getattr(model, "cls_token", None) is None:
        raise UsageError(f"--image_feature {choice}: timm model {name} has no class token; use patch_mean or pooled")


def _hub_source(name: str) -> HubFile | None:
    """The hub repository of a timm model's pretrained weights and the file names timm tries there, in order
    (the safetensors file first); None for a model whose weights are not on the hub."""
    import timm

    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None or not cfg.hf_hub_id or cfg.custom_load:
        return None
    file_name = cfg.hf_hub_filename or "pytorch_model.bin"
    if file_name.endswith(".safetensors"):
        return HubFile(cfg.hf_hub_id, (file_name,))
    safe = "model.safetensors" if file_name == "pytorch_model.bin" else file_name.rsplit(".", 1)[0] + ".safetensors"
    return HubFile(cfg.hf_hub_id, (safe, file_name))


def _weights_file(name: str, checkpoint: str | None, weights_dir: str | None, progress: bool = True) -> Path | None:
    """``--checkpoint``, else the model's hub file found locally or downloaded; None: timm downloads it itself
    (weights published only at a URL, which timm caches under the torch hub folder)."""
    return located_weights(_hub_source(name), checkpoint, weights_dir, f"timm model {name}", progress)


register(FeatureType("timm", ExtractTimm))
