"""MMAction2's Kinetics-400 TSN-R50 and SlowOnly-R50 clip features, without MMAction2 or mmcv.

What MMAction2's ``tools/misc/clip_feature_extraction.py`` computes with its two feature-extraction configs
(0.x), step by step:

- sampling (``SampleFrames`` in test mode) over the decoded frames: ``num_clips`` clips of ``clip_len`` frames
  ``frame_interval`` apart, each starting at the centre of one of ``num_clips`` equal segments of the possible
  starts; in a video shorter than one clip every start is 0 and indices wrap around modulo the frame count.
  TSN: 25 clips of 1 frame; SlowOnly: 10 clips of 4 frames, one every 16 frames. ``--views N`` changes the
  number of clips.
- preprocessing: short side to 256 (mmcv's rounding, OpenCV bilinear on uint8), centre crop 256 x 256 (mmcv's
  rounding down), ``(RGB - mean) / std`` with mmcv's ImageNet constants in 0..255.
- the feature: the last stage's output averaged over space (and time), then over the clips: one 2048-d row
  per video. ``--pool none`` keeps one row per clip (at the clip's time) instead.

Checkpoints are mmcv's ``{"meta": ..., "state_dict": ...}``. SlowOnly's module names here are the file's keys.
TSN runs torchvision's ResNet-50 under a ``backbone.`` prefix; files with mmcv's ConvModule names
(``conv1.conv``, ``conv1.bn``, ``downsample.conv``) are renamed on loading, files with torchvision's names load
as they are.
"""
from __future__ import annotations

import abc
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import cv2
import numpy as np
import torch
from torch import nn
from torchvision.models import resnet50

from extractors.base import BaseExtractor
from extractors.config import RunConfig
from extractors.engine_options import BATCH_SIZE, CHECKPOINT, FEATURE_OPTIONS, POOL, VIEWS
from extractors.predictions import SHOW_PRED, HeadPredictions, kinetics400_labels
from extractors.registry import FeatureType, ModelDocs, feature_type, register
from extractors.transforms import CROPS, crop_views
from extractors.weights import Meta, Weights, WeightsTable, lively
from io_utils.checkpoints import Renames, load_state_dict_strictly, renamed_keys, sha256_in_file_name
from io_utils.errors import VideoError
from io_utils.readers import FrameReader
from io_utils.video_list import VideoJob

_OPENMMLAB = "https://download.openmmlab.com/mmaction/recognition"
MMCV_MEAN = (123.675, 116.28, 103.53)
MMCV_STD = (58.395, 57.12, 57.375)


def mmaction_clip_indices(num_frames: int, clip_len: int, frame_interval: int, num_clips: int) -> np.ndarray:
    """(num_clips, clip_len) frame indices of ``SampleFrames`` in test mode, for a video of ``num_frames``."""
    span = clip_len * frame_interval
    if num_frames > span - 1:
        segment = (num_frames - span + 1) / float(num_clips)
        starts = (np.arange(num_clips) * segment + segment / 2.0).astype(np.int64)
    else:
        starts = np.zeros(num_clips, dtype=np.int64)
    return (starts[:, None] + np.arange(clip_len)[None, :] * frame_interval) % num_frames


@dataclass(frozen=True)
class MMActionPreprocessing:
    """One (H, W, 3) uint8 RGB frame -> (3, 256, 256) float32, or (crops, 3, 256, 256)."""

    short_side: int = 256
    crop: tuple[int, int] = (256, 256)
    mean: tuple[float, ...] = MMCV_MEAN
    std: tuple[float, ...] = MMCV_STD

    def __call__(self, rgb: np.ndarray, crops: int = 1) -> torch.Tensor:
        height, width = rgb.shape[:2]
        scale = self.short_side / min(height, width)  # mmcv.rescale_size with scale (inf, short side)
        size = (int(width * scale + 0.5), int(height * scale + 0.5))
        image = torch.from_numpy(cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR)).permute(2, 0, 1)
        if crops == 1:
            height, width = self.crop
            top, left = (size[1] - height) // 2, (size[0] - width) // 2  # mmaction's CenterCrop rounds down
            return self._normalize(image[:, top : top + height, left : left + width])
        return torch.stack([self._normalize(view) for view in crop_views(image, self.crop, crops)])

    def _normalize(self, image: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        return (image.float() - mean) / std


class ConvBN(nn.Module):
    """mmcv's ConvModule without its activation: ``conv`` then ``bn`` (the checkpoint's ``.conv`` and ``.bn``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: Sequence[int], stride: Sequence[int] = (1, 1, 1),
                 padding: Sequence[int] = (0, 0, 0)):
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, tuple(kernel), tuple(stride), tuple(padding), bias=False)
        self.bn = nn.BatchNorm3d(out_channels, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class SlowOnlyBottleneck(nn.Module):
    """1x1x1 (3x1x1 where inflated) -> 1x3x3 with the spatial stride -> 1x1x1 to 4x ``planes``, plus the shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int, inflate: bool):
        super().__init__()
        self.conv1 = ConvBN(in_planes, planes, (3, 1, 1) if inflate else (1, 1, 1), padding=(1, 0, 0) if inflate else (0, 0, 0))
        self.conv2 = ConvBN(planes, planes, (1, 3, 3), (1, stride, stride), (0, 1, 1))
        self.conv3 = ConvBN(planes, planes * 4, (1, 1, 1))
        self.downsample = None
        if stride != 1 or in_planes != planes * 4:
            self.downsample = ConvBN(in_planes, planes * 4, (1, 1, 1), (1, stride, stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return torch.relu(self.conv3(out) + shortcut)


class SlowOnlyBackbone(nn.Module):
    """The slow pathway of a 3D ResNet-50: a (1, 7, 7) stem, a (1, 3, 3) max pool, no temporal striding,
    temporal kernels (3, 1, 1) in every block of the last two stages."""

    def __init__(self):
        super().__init__()
        self.conv1 = ConvBN(3, 64, (1, 7, 7), (1, 2, 2), (0, 3, 3))
        self.maxpool = nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1))
        in_planes = 64
        for index, (planes, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3)), start=1):
            layer = []
            for block in range(blocks):
                layer.append(SlowOnlyBottleneck(in_planes, planes, 2 if index > 1 and block == 0 else 1, inflate=index > 2))
                in_planes = planes * 4
            self.add_module(f"layer{index}", nn.Sequential(*layer))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) -> (B, 2048, T, H / 32, W / 32)."""
        x = self.maxpool(torch.relu(self.conv1(x)))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class MMActionRecognizer(nn.Module):
    """``backbone`` and ``cls_head.fc_cls``, the layout of MMAction2's recognizers; its output is the backbone's
    averaged over everything but the batch and the channels (the classifier is for ``--show_pred``)."""

    def __init__(self, backbone: nn.Module, num_classes: int = 400):
        super().__init__()
        self.backbone = backbone
        self.cls_head = nn.Module()
        self.cls_head.fc_cls = nn.Linear(2048, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.backbone(x)
        return out.mean(dim=tuple(range(2, out.dim()))) if out.dim() > 2 else out


def build_tsn() -> MMActionRecognizer:
    """torchvision's ResNet-50 (its pooling kept, its classifier dropped) as the backbone."""
    backbone = resnet50()
    backbone.fc = nn.Identity()
    return MMActionRecognizer(backbone)


def build_slowonly() -> MMActionRecognizer:
    return MMActionRecognizer(SlowOnlyBackbone())


_CONV_MODULE_TO_TORCHVISION = [(r"\.conv(\d)\.conv\.", r".conv\1."), (r"\.conv(\d)\.bn\.", r".bn\1."),
                               (r"\.downsample\.conv\.", ".downsample.0."), (r"\.downsample\.bn\.", ".downsample.1.")]
_TORCHVISION_TO_CONV_MODULE = [(r"\.conv(\d)\.(weight)$", r".conv\1.conv.\2"), (r"\.bn(\d)\.", r".conv\1.bn."),
                               (r"\.downsample\.0\.", ".downsample.conv."), (r"\.downsample\.1\.", ".downsample.bn.")]


def mmcv_state_dict(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The state dict of an mmcv checkpoint (``{"meta": ..., "state_dict": ...}``), or a bare state dict."""
    return checkpoint["state_dict"] if isinstance(checkpoint.get("state_dict"), dict) else checkpoint


def tsn_state_dict(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The state dict of an mmcv checkpoint (or a bare state dict) under the module names of :func:`build_tsn`:
    mmcv's ConvModule names are renamed, torchvision's (the naming before MMAction2's July 2020 rename) kept."""
    state_dict = mmcv_state_dict(checkpoint)
    if "backbone.conv1.conv.weight" not in state_dict:
        return state_dict
    return renamed_keys(state_dict, _CONV_MODULE_TO_TORCHVISION)


def _save_mmcv_checkpoint(network: nn.Module, path, rules: Renames | None) -> None:
    """mmcv's checkpoint container: ``meta`` (here a note that the weights are random) and ``state_dict``."""
    state_dict = network.state_dict()
    if rules is not None:
        state_dict = renamed_keys(state_dict, rules)
    torch.save({"meta": {"note": "random weights written by video_features"}, "state_dict": state_dict}, path)


def _save_tsn(network: nn.Module, path) -> None:
    _save_mmcv_checkpoint(network, path, _TORCHVISION_TO_CONV_MODULE)


def _save_slowonly(network: nn.Module, path) -> None:
    _save_mmcv_checkpoint(lively(network), path, None)


def _openmmlab(family: str, file_name: str) -> str:
    """``<family>/<file name without its date and hash>/<file name>``."""
    folder = re.sub(r"_\d{8}-[0-9a-f]{8}\.pth$", "", file_name)
    return f"{_OPENMMLAB}/{family}/{folder}/{file_name}"


_TSN_FILE = "tsn_r50_320p_1x1x3_100e_kinetics400_rgb_20200702-cc665e2a.pth"
_SLOWONLY_FILE = "slowonly_r50_video_320p_4x16x1_256e_kinetics400_rgb_20201014-c9cdc656.pth"
_INPUT_RANGE = "(RGB - mmcv mean) / mmcv std, in 0..255"
TSN_WEIGHTS = WeightsTable([
    Weights("kinetics400", _openmmlab("tsn", _TSN_FILE), sha256_in_file_name(_TSN_FILE), build_tsn,
            MMActionPreprocessing(), Meta(embed_dim=2048, labels=kinetics400_labels(), stack_size=1,
                                          input_range=_INPUT_RANGE), save_random=_save_tsn),
], default="kinetics400")
SLOWONLY_WEIGHTS = WeightsTable([
    Weights("kinetics400", _openmmlab("slowonly", _SLOWONLY_FILE), sha256_in_file_name(_SLOWONLY_FILE),
            build_slowonly, MMActionPreprocessing(),
            Meta(embed_dim=2048, labels=kinetics400_labels(), stack_size=4, step_size=16, input_range=_INPUT_RANGE),
            save_random=_save_slowonly),
], default="kinetics400")


class MMActionExtractor(HeadPredictions, BaseExtractor):
    """Clips sampled as MMAction2 tests, one model input per clip; the video's row is their mean."""

    docs = ModelDocs("MMAction2", "mmaction.md", "MMAction2's Kinetics TSN-R50 and SlowOnly-R50 clip features",
                     "clips", "`tsn`, `slowonly`, 2048")

    options = (*FEATURE_OPTIONS, BATCH_SIZE, CHECKPOINT, CROPS, SHOW_PRED)
    num_clips: int  # MMAction2's default number of clips (``--views``)
    state_dict_of = staticmethod(mmcv_state_dict)  # the file's contents -> the network's state dict

    @classmethod
    def option_defaults(cls, config: RunConfig, weights: Weights | None) -> dict[str, Any]:
        """MMAction2's clips and its per-video mean, unless ``--views`` or ``--pool none`` say otherwise."""
        return {**super().option_defaults(config, weights), "views": config[VIEWS] or cls.num_clips,
                "pool": config[POOL] or "mean"}

    @classmethod
    def sampling_rule(cls, config: RunConfig) -> str:
        meta = feature_type(config.feature_type).weights_for(config).meta
        return (f"MMAction2 SampleFrames in test mode over the decoded frames: {config[VIEWS]} clips of {meta.stack_size} "
                f"frame(s) {meta.step_size or 1} apart, indices wrapping around in short videos")

    def load_model(self) -> tuple[nn.Module, MMActionPreprocessing]:
        network = self.weights.build()
        load_state_dict_strictly(network, self.checkpoint_file(), f"an MMAction2 {self.feature_type} checkpoint "
                                 f"({self.weights.file_name})", convert=self.state_dict_of)
        # the layout HeadPredictions expects: the pooled features, and the classifier
        return nn.ModuleDict({"backbone": network, "head": network.cls_head.fc_cls}), self.weights.preprocessing

    def model_inputs(self, video: FrameReader, job: VideoJob) -> Iterator[tuple[torch.Tensor, float]]:
        """Frames are decoded once each, in presentation order, and each held until its last clip is out."""
        shown = video.frame_pts()
        if not shown:
            raise VideoError("no frames")
        meta = self.weights.meta
        clips = mmaction_clip_indices(len(shown), meta.stack_size, meta.step_size or 1, self.config[VIEWS]).tolist()
        uses = Counter(index for clip in clips for index in clip)
        wanted = sorted(uses)
        frames = zip(wanted, video.read_at([shown[index] for index in wanted]))
        held: dict[int, tuple[torch.Tensor, float]] = {}
        for clip in clips:
            while max(clip) not in held:
                index, frame = next(frames, (None, None))
                if frame is None:
                    raise VideoError("the video ended before its last frames could be decoded (truncated or corrupt)")
                held[index] = (self.preprocess(frame.rgb), frame.time_ms)
            times = [held[index][1] for index in clip]
            yield self.clip_input([held[index][0] for index in clip]), (min(times) + max(times)) / 2
            for index in clip:
                uses[index] -= 1
                if not uses[index]:
                    del held[index]

    @abc.abstractmethod
    def clip_input(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        """One clip's input from its frames' preprocessed forms."""

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model["backbone"](batch)


class ExtractTSN(MMActionExtractor):
    """TSN-R50: clips of one frame; key ``tsn``."""

    key = "tsn"
    num_clips = 25
    state_dict_of = staticmethod(tsn_state_dict)

    def clip_input(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        return inputs[0]


class ExtractSlowOnly(MMActionExtractor):
    """SlowOnly-R50 4x16: clips of 4 frames 16 apart, fed as (3, 4, 256, 256); key ``slowonly``."""

    key = "slowonly"
    num_clips = 10

    def clip_input(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(inputs, dim=-3)  # (..., 3, H, W) frames -> (..., 3, T, H, W)


register(FeatureType("tsn", ExtractTSN, TSN_WEIGHTS), FeatureType("slowonly", ExtractSlowOnly, SLOWONLY_WEIGHTS))
