"""What the image-text families share (OpenAI's CLIP, ``extractors/models/clip.py``; open_clip's zoo,
``extractors/models/open_clip_models.py``): frame-wise image embeddings, the text tower kept only for
``--show_pred`` (zero-shot scores over ``--pred_texts`` or the Kinetics-400 classes), and open_clip's
preprocessing of a model's ``preprocess_cfg``.
"""
from __future__ import annotations

import abc
import contextlib
import logging
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torchvision.transforms import InterpolationMode

from extractors.frame_wise import FrameWiseExtractor
from extractors.options import Option
from extractors.predictions import SHOW_PRED, kinetics400_labels, print_top_classes
from extractors.transforms import FramePreprocessing
from io_utils.errors import UsageError

PRED_TEXTS = Option("pred_texts", None, "with --show_pred: score these texts instead of the Kinetics-400 classes",
                    ("a dog",), many=True, metavar="TEXT", changes_features=False)


def open_clip_preprocessing(config: Mapping[str, Any], pil: bool = True) -> FramePreprocessing:
    """open_clip's eval transform (``open_clip.image_transform_v2`` of a ``PreprocessCfg``) as a
    :class:`FramePreprocessing`: ``shortest`` resizes the short side and centre crops, ``squash`` resizes to
    the size, ``longest`` fits the long side and pads with ``fill_color``. ``pil``: resize a PIL image, as
    open_clip (and OpenAI's CLIP) do."""
    size = config["size"]
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    common = dict(crop=(height, width), mean=tuple(config["mean"]), std=tuple(config["std"]),
                  interpolation=InterpolationMode(config["interpolation"]), pil=pil)
    mode = config["resize_mode"]
    if mode == "squash":
        return FramePreprocessing((height, width), **common)
    if mode == "longest":
        return FramePreprocessing((height, width), keep_ratio=1.0, fill=config.get("fill_color", 0), **common)
    if mode != "shortest":
        raise UsageError(f"open_clip resize_mode {mode!r} is not supported (shortest, squash and longest are)")
    if height == width:
        return FramePreprocessing(height, **common)
    return FramePreprocessing((height, width), keep_ratio=0.0, **common)


class _NoRandomInitWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("No pretrained weights loaded")


@contextlib.contextmanager
def built_without_weights():
    """open_clip's warning that a model was "initialized randomly" silenced: it logs it on the root logger for
    every model built without its pretrained tag, which is what the tool asks for when it loads a checkpoint
    itself or writes random weights on purpose; read there, it looks like a failure."""
    muted = _NoRandomInitWarning()
    logging.getLogger().addFilter(muted)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(muted)


class ImageTextExtractor(FrameWiseExtractor):
    """Image embeddings (before normalisation, ``encode_image``) of sampled frames from an open_clip model, and
    its zero-shot scores with ``--show_pred``. Subclasses say where the model comes from and how to tokenize."""

    @classmethod
    def validate(cls, config, weights) -> None:
        super().validate(config, weights)
        if config[PRED_TEXTS] and not config[SHOW_PRED]:
            raise UsageError("--pred_texts are the texts that --show_pred scores; give --show_pred too")

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.texts: list[str] = []
        if self.config[SHOW_PRED]:  # the tokenizer loads now, so that a missing one stops the run, not each video
            self.texts = list(self.config[PRED_TEXTS] or [f"a photo of {label}" for label in kinetics400_labels()])
            with torch.inference_mode():
                features = self.model.encode_text(self.tokenize(self.texts).to(self.device)).float()
            self.text_features = torch.nn.functional.normalize(features, dim=-1).cpu()

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(batch.to(next(self.model.visual.parameters()).dtype))

    def image_tower(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` without its text tower unless ``--show_pred`` needs it: features come from the image tower
        alone, and the text tower is as large (SigLIP 2's 256k-token embedding) or larger (EVA02-E, bigG)."""
        if not self.config[SHOW_PRED]:
            for name in ("text", "transformer", "token_embedding", "ln_final", "positional_embedding", "text_projection"):
                if hasattr(model, name):
                    setattr(model, name, None)
        return model

    @abc.abstractmethod
    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """Token ids of ``texts``, with the model's own tokenizer."""

    def show_predictions(self, outputs: Mapping[str, np.ndarray], timestamps_ms: Sequence[float]) -> None:
        """Top-5 zero-shot classes per frame, over ``--pred_texts`` or "a photo of {Kinetics-400 label}", scored
        as the model was trained (:func:`zero_shot_scores`)."""
        image_features = torch.nn.functional.normalize(torch.from_numpy(outputs[self.main_key]), dim=-1)
        print_top_classes(self.texts, zero_shot_scores(self.model, image_features, self.text_features), timestamps_ms)


def zero_shot_scores(model: torch.nn.Module, image_features: torch.Tensor, text_features: torch.Tensor
                     ) -> torch.Tensor:
    """(frames, texts) scores of unit-norm features, as open_clip's zero-shot examples compute them."""
    scale = model.logit_scale.detach().float().exp().cpu()
    logits = scale * image_features @ text_features.T
    bias = getattr(model, "logit_bias", None)
    if bias is not None:
        return torch.sigmoid(logits + bias.detach().float().cpu())
    return logits.softmax(dim=-1)
