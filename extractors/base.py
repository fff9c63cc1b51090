"""The shared extraction loop: decode -> preprocess -> batch -> model -> arrays.

An extractor subclass only says how to load its model (``load_model``), how to turn one decoded RGB frame
into a model input (``preprocess``) and how to run a batch (``forward``). The base owns decoding, sampling,
batching, device placement, dtype of the results and output keys, so every model gets the same guarantees.
"""
from __future__ import annotations

import argparse
import os
from typing import Any, Iterator, Mapping

import numpy as np
import torch

from extractors.cli import complete_args
from io_utils.errors import UsageError, VideoError
from io_utils.video import VideoReader


class BaseExtractor:
    """Turns one video into a dict of arrays: ``{main_key: (N, D) float32, "fps": (), "timestamps_ms": (N,)}``."""

    main_key: str = "features"

    def __init__(self, args: argparse.Namespace | Mapping[str, Any], external_call: bool = False):
        self.args = complete_args(args)
        self.feature_type: str = self.args.feature_type
        self.external_call = external_call
        self.device = select_device(self.args)
        self.model = self.load_model().to(self.device).eval()

    @property
    def output_keys(self) -> list[str]:
        return [self.main_key, "fps", "timestamps_ms"]

    def load_model(self) -> torch.nn.Module:
        raise NotImplementedError

    def preprocess(self, rgb: np.ndarray) -> torch.Tensor:
        """One (H, W, 3) uint8 RGB frame -> one model input, on the CPU."""
        raise NotImplementedError

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """A batch of preprocessed inputs, on ``self.device`` -> (B, D) features."""
        raise NotImplementedError

    def model_inputs(self, video: VideoReader) -> Iterator[tuple[torch.Tensor, float]]:
        """Preprocessed inputs with their timestamps (ms), in time order."""
        raise NotImplementedError

    def show_predictions(self, features: np.ndarray, timestamps_ms: np.ndarray) -> None:
        """``--show_pred``: print what the model recognises; models without a head need not implement it."""
        raise UsageError(f"--show_pred is not available for {self.feature_type}")

    @torch.inference_mode()
    def extract(self, video_path: str | os.PathLike) -> dict[str, np.ndarray]:
        """Features of one video. Raises :class:`VideoError` for a video that cannot be processed."""
        with VideoReader(video_path) as video:
            chunks, timestamps = [], []
            for batch, batch_times in _batches(self.model_inputs(video), self.args.batch_size):
                chunks.append(self.forward(batch.to(self.device, non_blocking=True)).float().cpu())
                timestamps.extend(batch_times)
            fps = video.fps
        if not chunks:
            raise VideoError("no frames were sampled")
        features = torch.cat(chunks).numpy().astype(np.float32, copy=False)
        timestamps_ms = np.asarray(timestamps, dtype=np.float64)
        if self.args.show_pred:
            self.show_predictions(features, timestamps_ms)
        return {self.main_key: features, "fps": np.asarray(fps, dtype=np.float64), "timestamps_ms": timestamps_ms}


class FrameWiseExtractor(BaseExtractor):
    """Models that take single frames, sampled with ``--extract_method`` (``uni_N`` or ``fix_F``)."""

    def model_inputs(self, video: VideoReader) -> Iterator[tuple[torch.Tensor, float]]:
        method = self.args.extract_method
        targets = method.target_pts(video.start_pts, video.end_pts, video.time_base)
        if method.kind == "uni" and len(targets) > video.num_frames:
            raise VideoError(f"too short: {video.num_frames} frames, fewer than the {len(targets)} that {method} asks for")
        for frame in video.read_at(targets):
            yield self.preprocess(frame.rgb), frame.time_ms


def select_device(args: argparse.Namespace) -> torch.device:
    if args.cpu:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UsageError("CUDA is not available on this machine; pass --cpu to run on the CPU")
    device_id = args.device_ids[0]
    if device_id >= torch.cuda.device_count():
        raise UsageError(f"--device_ids {device_id}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return torch.device(f"cuda:{device_id}")


def _batches(inputs: Iterator[tuple[torch.Tensor, float]], batch_size: int) -> Iterator[tuple[torch.Tensor, list[float]]]:
    """Group inputs into stacked batches, so memory holds one batch whatever the number of frames."""
    tensors: list[torch.Tensor] = []
    times: list[float] = []
    for tensor, time_ms in inputs:
        tensors.append(tensor)
        times.append(time_ms)
        if len(tensors) == batch_size:
            yield torch.stack(tensors), times
            tensors, times = [], []
    if tensors:
        yield torch.stack(tensors), times
