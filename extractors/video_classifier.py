"""What the clip-level video classifiers share (r21d, s3d, resnext101_3d, slowfast, and through
``extractors/models/hub_video.py`` videomae and vjepa2; ``--list_models`` shows each one's family module).

Each window of ``--stack_size`` frames is preprocessed frame by frame (the weights' preprocessing), stacked along
time and run through the backbone, which pools it to one vector. The classifier is kept apart for
``--show_pred``.
"""
from __future__ import annotations

import torch

from extractors.engine_options import CHECKPOINT
from extractors.predictions import SHOW_PRED, HeadPredictions
from extractors.transforms import CROPS
from extractors.windows import WINDOW_OPTIONS, WindowExtractor


class VideoClassifierExtractor(HeadPredictions, WindowExtractor):
    options = (*WINDOW_OPTIONS, CHECKPOINT, CROPS, SHOW_PRED)  # and the weights, each family's way

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """(B, T, C, H, W) windows -> (B, D) features."""
        return self.model["backbone"](batch.transpose(1, 2))
