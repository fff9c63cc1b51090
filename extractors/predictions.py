"""``--show_pred``: the classes a model sees, printed per frame or window."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from extractors.options import Option
from io_utils.errors import UsageError

SHOW_PRED = Option("show_pred", False, "print the top-5 classes per frame or window", True, changes_features=False)


def kinetics400_labels() -> list[str]:
    """Kinetics-400 class names in the order of the Kinetics heads (torchvision's video weights carry them,
    so no label file is shipped)."""
    from torchvision.models.video import R2Plus1D_18_Weights

    return R2Plus1D_18_Weights.KINETICS400_V1.meta["categories"]


def print_top_classes(names: Sequence[str], probabilities: torch.Tensor, timestamps_ms: Sequence[float],
                      tag: str = "", k: int = 5) -> None:
    """One line per row of ``probabilities`` (rows, classes): its time and its ``k`` likeliest names."""
    top = probabilities.topk(min(k, len(names)), dim=-1)
    for time_ms, scores, indices in zip(timestamps_ms, top.values.cpu(), top.indices.cpu()):
        ranked = ", ".join(f"{names[i]} ({p:.3f})" for p, i in zip(scores.tolist(), indices.tolist()))
        print(f"  {tag}{time_ms:9.1f} ms: {ranked}")


def with_separate_head(network: nn.Module, head_name: str) -> nn.ModuleDict:
    """``{"backbone": network with its classifier replaced by the identity, "head": the classifier}``: the
    backbone gives the pooled features that are saved, the head turns them into classes for ``--show_pred``."""
    head = getattr(network, head_name)
    setattr(network, head_name, nn.Identity())
    return nn.ModuleDict({"backbone": network, "head": head})


class HeadPredictions:
    """``--show_pred`` for extractors whose model is :func:`with_separate_head`'s and whose weights name the
    head's classes (by default in their meta; a family whose repositories carry them overrides the two hooks);
    refused up front for weights whose class names were never published."""

    @classmethod
    def validate(cls, config, weights) -> None:
        super().validate(config, weights)
        if config[SHOW_PRED] and not cls.names_classes(weights):
            raise UsageError(f"--show_pred: the classes of {config.feature_type} {weights.name} have no published names")

    @classmethod
    def names_classes(cls, weights) -> bool:
        return weights.meta.labels is not None

    @property
    def class_names(self) -> Sequence[str]:
        return self.weights.meta.labels

    def show_predictions(self, outputs: Mapping[str, np.ndarray], timestamps_ms: Sequence[float]) -> None:
        with torch.inference_mode():
            logits = self.model["head"](torch.from_numpy(outputs[self.main_key]).to(self.device))
        print_top_classes(self.class_names, logits.float().softmax(-1), timestamps_ms)
