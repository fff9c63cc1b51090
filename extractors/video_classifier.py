"""What the clip-level video classifiers (r21d, s3d, resnext101_3d) share.

Each window of ``--stack_size`` frames is preprocessed frame by frame (``self.transform``, set by
``load_model``), stacked to (C, T, H, W) and run through the backbone, which pools it to one vector. The
classifier is kept apart for ``--show_pred``.
"""
from __future__ import annotations

import argparse

import torch

from extractors.base import WindowExtractor
from extractors.predictions import HeadPredictions
from io_utils.errors import UsageError


class VideoClassifierExtractor(HeadPredictions, WindowExtractor):
    supports_crops = True
    model_options: tuple[str, ...] = ("checkpoint",)
    min_stack_size = 1

    @classmethod
    def validate_args(cls, args: argparse.Namespace) -> None:
        super().validate_args(args)
        if args.stack_size < cls.min_stack_size:
            raise UsageError(f"--stack_size {args.stack_size}: {args.feature_type} needs at least "
                             f"{cls.min_stack_size} frames per window")

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """(B, T, C, H, W) windows -> (B, D) features."""
        return self.model["backbone"](batch.transpose(1, 2))
