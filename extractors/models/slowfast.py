"""SlowFast-R50 8x8 clip features (Kinetics-400), as the moment-retrieval feature sets were made.

QVHighlights' and Moment-DETR's SlowFast features come from HERO_Video_Feature_Extractor (linjieli222), which
runs PySlowFast's ``SLOWFAST_8x8_R50`` with the Kinetics-400 checkpoint of PySlowFast's model zoo in Caffe2
format (``SLOWFAST_8x8_R50.pkl``, ``TEST.CHECKPOINT_TYPE: caffe2``). That is the default weights here. Step by
step, what that extractor computes and what is done here:

- frames at 30 fps (its ffmpeg ``fps`` filter; here the frame on screen at each k / 30 s), the short side resized
  to 224 and a centre crop of 224 x 224 (ffmpeg's bicubic scaler; here bicubic, antialiased, on tensors), RGB;
- clips of 2 s (``--clip_len 2``, the QVHighlights setting: 60 frames), the last one padded by repeating its last
  frame (``--pad_last``, its "tile" padding). From each clip it takes 32 frames at
  ``floor(linspace(0, 64 * fps / 30 - 1, 32))`` (clamped to the clip), ``fps`` being the video's average frame
  rate rounded down (its ``get_start_end_idx`` and ``temporal_sampling`` with ``NUM_FRAMES 32``,
  ``SAMPLING_RATE 2``): the fast pathway's input; the slow pathway takes 8 of them at
  ``linspace(0, 31, 8)`` (``ALPHA 4``);
- ``(RGB / 255 - 0.45) / 0.225``;
- the feature: the slow (2048) and fast (256) pathways' last stages, each averaged over time and space and
  concatenated, 2304-d (its head with ``last_fc``, before the classifier). ``--show_pred`` applies the
  classifier (``pred_w``, ``pred_b``).

The network has PySlowFast's module names (``s1.pathway0_stem.conv``, ``s2.pathway1_res0.branch2.a_bn``,
``s3_fuse.conv_f2s``, ``head.projection``). A Caffe2 file's blob names (``t_res3_1_branch2b_bn_riv``) are
converted to them by the rules of PySlowFast's ``c2_model_loading``; its optimiser blobs (``*_momentum``,
``lr``, ``iter``) are left out and every tensor of the network must be in the file. A PySlowFast PyTorch
checkpoint (``{"model_state": ...}``, a ``.pyth``) loads with ``--checkpoint`` as it is.
"""
from __future__ import annotations

import math
import pickle
import re
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn
from torchvision.transforms import InterpolationMode

from extractors.engine_options import WEIGHTS
from extractors.predictions import kinetics400_labels
from extractors.registry import FeatureType, ModelDocs, register
from extractors.transforms import FramePreprocessing
from extractors.video_classifier import VideoClassifierExtractor
from extractors.weights import Meta, Weights, WeightsTable, lively
from extractors.windows import STACK_SIZE
from io_utils.checkpoints import load_strictly, renamed_key
from io_utils.errors import UsageError
from io_utils.readers import FrameReader
from io_utils.video_list import VideoJob

ALPHA = 4  # frames of the fast pathway per frame of the slow one
FAST_FRAMES = 32
CLIP_FRAMES = 60  # 2 s at 30 fps
_STAGE_BLOCKS = (3, 4, 6, 3)
_SLOW_TEMPORAL = (1, 1, 3, 3)  # temporal kernel of the first conv of each block, res2..res5; the fast one: 3
_ZOO = "https://dl.fbaipublicfiles.com/pyslowfast/model_zoo/kinetics400"


class Stem(nn.Module):
    """conv (T x 7 x 7, stride 1 x 2 x 2) -> bn -> relu -> max pool (1 x 3 x 3, stride 1 x 2 x 2)."""

    def __init__(self, out_channels: int, temporal: int):
        super().__init__()
        self.conv = nn.Conv3d(3, out_channels, (temporal, 7, 7), (1, 2, 2), (temporal // 2, 3, 3), bias=False)
        self.bn = nn.BatchNorm3d(out_channels, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.max_pool3d(torch.relu(self.bn(self.conv(x))), (1, 3, 3), (1, 2, 2), (0, 1, 1))


class Bottleneck(nn.Module):
    """PySlowFast's bottleneck transform: ``a`` (T x 1 x 1) -> ``b`` (1 x 3 x 3, the spatial stride) -> ``c``
    (1 x 1 x 1), each with its batch norm."""

    def __init__(self, dim_in: int, dim_out: int, dim_inner: int, temporal: int, stride: int):
        super().__init__()
        self.a = nn.Conv3d(dim_in, dim_inner, (temporal, 1, 1), 1, (temporal // 2, 0, 0), bias=False)
        self.a_bn = nn.BatchNorm3d(dim_inner, eps=1e-5)
        self.b = nn.Conv3d(dim_inner, dim_inner, (1, 3, 3), (1, stride, stride), (0, 1, 1), bias=False)
        self.b_bn = nn.BatchNorm3d(dim_inner, eps=1e-5)
        self.c = nn.Conv3d(dim_inner, dim_out, 1, bias=False)
        self.c_bn = nn.BatchNorm3d(dim_out, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.a_bn(self.a(x)))
        return self.c_bn(self.c(torch.relu(self.b_bn(self.b(x)))))


class ResBlock(nn.Module):
    """``branch2`` plus the identity, or ``branch1`` (1 x 1 x 1 projection) where the shape changes; then relu."""

    def __init__(self, dim_in: int, dim_out: int, dim_inner: int, temporal: int, stride: int):
        super().__init__()
        if dim_in != dim_out or stride != 1:
            self.branch1 = nn.Conv3d(dim_in, dim_out, 1, (1, stride, stride), bias=False)
            self.branch1_bn = nn.BatchNorm3d(dim_out, eps=1e-5)
        self.branch2 = Bottleneck(dim_in, dim_out, dim_inner, temporal, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.branch1_bn(self.branch1(x)) if hasattr(self, "branch1") else x
        return torch.relu(shortcut + self.branch2(x))


class FastToSlow(nn.Module):
    """The lateral connection: a 7 x 1 x 1 convolution with temporal stride ``ALPHA`` of the fast pathway,
    bn, relu, concatenated to the slow pathway's channels."""

    def __init__(self, fast_channels: int):
        super().__init__()
        self.conv_f2s = nn.Conv3d(fast_channels, 2 * fast_channels, (7, 1, 1), (ALPHA, 1, 1), (3, 0, 0), bias=False)
        self.bn = nn.BatchNorm3d(2 * fast_channels, eps=1e-5)

    def forward(self, slow: torch.Tensor, fast: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.cat([slow, torch.relu(self.bn(self.conv_f2s(fast)))], dim=1), fast


class Head(nn.Module):
    """The classifier, kept apart: features are taken before it."""

    def __init__(self, num_classes: int = 400):
        super().__init__()
        self.projection = nn.Linear(2048 + 256, num_classes)


class SlowFastR50(nn.Module):
    """SlowFast-R50 with PySlowFast's module names: (B, 3, 32, H, W) fast frames -> (B, 2304) pooled features
    (slow pathway first). The slow pathway's frames are taken from the fast ones."""

    def __init__(self):
        super().__init__()
        self.s1 = nn.Module()
        self.s1.pathway0_stem, self.s1.pathway1_stem = Stem(64, 1), Stem(8, 5)
        self.s1_fuse = FastToSlow(8)
        slow_in, fast_in = 64 + 16, 8
        for stage, (blocks, temporal) in enumerate(zip(_STAGE_BLOCKS, _SLOW_TEMPORAL), start=2):
            width = 64 * 2 ** (stage - 2)  # the slow pathway's inner width; the fast one's is 1/8
            module = nn.Module()
            for block in range(blocks):
                stride = 2 if stage > 2 and block == 0 else 1
                module.add_module(f"pathway0_res{block}", ResBlock(slow_in if block == 0 else 4 * width, 4 * width,
                                                                   width, temporal, stride))
                module.add_module(f"pathway1_res{block}", ResBlock(fast_in if block == 0 else width // 2, width // 2,
                                                                   width // 8, 3, stride))
            self.add_module(f"s{stage}", module)
            if stage < 5:
                self.add_module(f"s{stage}_fuse", FastToSlow(width // 2))
            slow_in, fast_in = 4 * width + width, width // 2
        self.head = Head()

    def forward(self, fast: torch.Tensor) -> torch.Tensor:
        slow_index = torch.linspace(0, fast.shape[2] - 1, fast.shape[2] // ALPHA, device=fast.device).long()
        slow = fast.index_select(2, slow_index)
        slow, fast = self.s1_fuse(self.s1.pathway0_stem(slow), self.s1.pathway1_stem(fast))
        for stage, blocks in enumerate(_STAGE_BLOCKS, start=2):
            module = getattr(self, f"s{stage}")
            for block in range(blocks):
                slow = getattr(module, f"pathway0_res{block}")(slow)
                fast = getattr(module, f"pathway1_res{block}")(fast)
            if stage < 5:
                slow, fast = getattr(self, f"s{stage}_fuse")(slow, fast)
        return torch.cat([slow.mean(dim=(2, 3, 4)), fast.mean(dim=(2, 3, 4))], dim=1)


# PySlowFast's c2_model_loading rules, in their order: a Caffe2 blob name -> the module name here.
_CAFFE2_PREFIXES = [
    (r"^t_pool1_subsample_bn_(.*)", r"s1_fuse.bn.\1"),
    (r"^t_pool1_subsample_(.*)", r"s1_fuse.conv_f2s.\1"),
    (r"^t_res(\d+)_\d+_branch2c_bn_subsample_bn_(.*)", r"s\1_fuse.bn.\2"),
    (r"^t_res(\d+)_\d+_branch2c_bn_subsample_(.*)", r"s\1_fuse.conv_f2s.\2"),
    (r"^res(\d+)_(\d+)_branch(\d+)([a-z])_(.*)", r"s\1.pathway0_res\2.branch\3.\4_\5"),
    (r"^res_conv1_bn_(.*)", r"s1.pathway0_stem.bn.\1"),
    (r"^conv1_(.*)", r"s1.pathway0_stem.conv.\1"),
    (r"^res(\d+)_(\d+)_branch(\d+)_(.*)", r"s\1.pathway0_res\2.branch\3_\4"),
    (r"^t_res(\d+)_(\d+)_branch(\d+)([a-z])_(.*)", r"s\1.pathway1_res\2.branch\3.\4_\5"),
    (r"^t_res_conv1_bn_(.*)", r"s1.pathway1_stem.bn.\1"),
    (r"^t_conv1_(.*)", r"s1.pathway1_stem.conv.\1"),
    (r"^t_res(\d+)_(\d+)_branch(\d+)_(.*)", r"s\1.pathway1_res\2.branch\3_\4"),
    (r"^pred_(.*)", r"head.projection.\1"),
    (r"(.*)bn.b$", r"\1bn.bias"),
    (r"(.*)bn.s$", r"\1bn.weight"),
    (r"(.*)bn.rm$", r"\1bn.running_mean"),
    (r"(.*)bn.riv$", r"\1bn.running_var"),
    (r"(.*)[._]b$", r"\1.bias"),
    (r"(.*)[._]w$", r"\1.weight"),
]


def caffe2_to_module_name(blob: str) -> str:
    return renamed_key(blob, _CAFFE2_PREFIXES)


class _ArraysOnly(pickle.Unpickler):
    """Unpickles dicts, lists and NumPy arrays only: a pickle can otherwise run any code."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"), ("collections", "OrderedDict"),
                ("_codecs", "encode")}  # how a protocol-2 pickle written by Python 3 stores an array's bytes

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not an array")
        return super().find_class(module, name)


def slowfast_state_dict(path: Path, network: nn.Module) -> dict[str, torch.Tensor]:
    """The network's tensors from a Caffe2 model-zoo pickle (``{"blobs": {name: array}}``) or a PySlowFast
    PyTorch checkpoint (``{"model_state": state_dict}``), under the network's names."""
    try:
        if path.suffix == ".pkl":
            with open(path, "rb") as file:
                checkpoint = _ArraysOnly(file, encoding="latin1").load()
        else:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle and torch raise several unrelated types for unreadable files
        raise UsageError(f"{path}: not a SlowFast checkpoint ({type(error).__name__}: {error})") from error
    if isinstance(checkpoint, dict) and "blobs" in checkpoint:
        wanted = network.state_dict()
        converted = {}
        for blob, array in checkpoint["blobs"].items():
            name = caffe2_to_module_name(blob)
            if name in wanted:
                converted[name] = torch.as_tensor(np.asarray(array)).reshape(wanted[name].shape)
            elif not (blob.endswith("_momentum") or blob in ("lr", "iter", "model_iter")):
                raise UsageError(f"{path}: not the Caffe2 SlowFast-R50 (blob {blob} has no place in the network)")
        return converted
    if isinstance(checkpoint, dict) and "model_state" in checkpoint:
        return {key.removeprefix("module."): value for key, value in checkpoint["model_state"].items()}
    raise UsageError(f"{path}: not a SlowFast checkpoint (neither Caffe2 blobs nor a model_state)")


def _save_caffe2(network: nn.Module, path: Path) -> None:
    """The model zoo's format: a pickle of ``{"blobs": {Caffe2 name: float32 array}}``, with momentum blobs and
    the iteration counter beside the weights, as a Caffe2 training run leaves them."""
    blobs = {}
    for name, tensor in network.state_dict().items():
        if not name.endswith("num_batches_tracked"):
            blobs[caffe2_name(name)] = tensor.numpy().astype(np.float32)
    blobs.update({f"{blob}_momentum": np.zeros_like(array) for blob, array in list(blobs.items())[:3]})
    blobs["iter"] = np.array([196 * 1000], np.int64)
    with open(path, "wb") as file:
        pickle.dump({"blobs": blobs}, file, protocol=2)


def caffe2_name(module_name: str) -> str:
    """The Caffe2 blob name of a tensor of :class:`SlowFastR50` (the model zoo's naming, written out)."""
    *parts, leaf = module_name.split(".")
    is_bn = parts[-1] == "bn" or parts[-1].endswith("_bn")
    suffix = ({"weight": "s", "bias": "b", "running_mean": "rm", "running_var": "riv"} if is_bn
              else {"weight": "w", "bias": "b"})[leaf]
    if parts[0] == "head":
        return f"pred_{suffix}"
    if parts[0] == "s1":
        pathway = "t_" if parts[1] == "pathway1_stem" else ""
        return f"{pathway}conv1_{suffix}" if parts[2] == "conv" else f"{pathway}res_conv1_bn_{suffix}"
    fuse = re.fullmatch(r"s(\d)_fuse", parts[0])
    if fuse:
        stage = int(fuse.group(1))
        base = "t_pool1_subsample" if stage == 1 else f"t_res{stage}_{_STAGE_BLOCKS[stage - 2] - 1}_branch2c_bn_subsample"
        return f"{base}_{suffix}" if parts[1] == "conv_f2s" else f"{base}_bn_{suffix}"
    stage, (pathway_index, block) = parts[0][1:], re.fullmatch(r"pathway(\d)_res(\d+)", parts[1]).groups()
    prefix = f"{'t_' if pathway_index == '1' else ''}res{stage}_{block}"
    if parts[2] == "branch2":
        layer = parts[3]  # a, a_bn, b, ...
        return f"{prefix}_branch2{layer[0]}_{'bn_' if layer.endswith('_bn') else ''}{suffix}"
    return f"{prefix}_branch1_{'bn_' if parts[2].endswith('_bn') else ''}{suffix}"


SLOWFAST_WEIGHTS = WeightsTable([
    Weights("kinetics400", f"{_ZOO}/SLOWFAST_8x8_R50.pkl", None, lambda: lively(SlowFastR50()),
            FramePreprocessing(224, (224, 224), (0.45,) * 3, (0.225,) * 3, interpolation=InterpolationMode.BICUBIC),
            Meta(embed_dim=2304, labels=kinetics400_labels(), fps=30.0, stack_size=CLIP_FRAMES,
                 min_stack_size=FAST_FRAMES, input_range="(RGB / 255 - 0.45) / 0.225"),
            save_random=_save_caffe2),
], default="kinetics400")


def hero_frame_indices(clip_frames: int, video_fps: float | None) -> list[int]:
    """Which of a clip's frames (at 30 fps) the fast pathway takes: 32 at ``floor(linspace(0, span - 1, 32))``
    with ``span = 64 * floor(fps) / 30`` frames (HERO passes the source's rate rounded down), clamped to the clip.
    The span starts at the clip's first frame (HERO's one "uniform" position of a single view)."""
    span = FAST_FRAMES * 2 * math.floor(video_fps or 30) / 30
    return torch.linspace(0, span - 1, FAST_FRAMES).clamp(0, clip_frames - 1).long().tolist()


class ExtractSlowFast(VideoClassifierExtractor):
    """One 2304-d feature per 2 s clip; key ``slowfast``."""

    key = "slowfast"
    docs = ModelDocs("SlowFast", "slowfast.md", "SlowFast-R50 (Kinetics-400), 2 s clips as QVHighlights' features",
                     "windows", "`slowfast`, 2304")
    options = (*VideoClassifierExtractor.options, WEIGHTS)

    @classmethod
    def sampling_rule(cls, config) -> str:
        return (f"{super().sampling_rule(config)}; of each window, {FAST_FRAMES} frames at "
                f"floor(linspace(0, 64 x floor(video fps) / 30 - 1, {FAST_FRAMES})) for the fast pathway (HERO's "
                f"choice) and {FAST_FRAMES // ALPHA} of those for the slow one")

    def load_model(self) -> tuple[nn.ModuleDict, FramePreprocessing]:
        network = SlowFastR50()
        path = Path(self.checkpoint_file())
        load_strictly(network, slowfast_state_dict(path, network), path, "the SlowFast-R50")
        head = network.head.projection
        network.head = nn.Module()  # the features are taken before the classifier
        self._fast_indices = hero_frame_indices(self.config[STACK_SIZE], 30.0)  # each video sets its own
        return nn.ModuleDict({"backbone": network, "head": head}), self.weights.preprocessing

    def model_inputs(self, video: FrameReader, job: VideoJob) -> Iterator[tuple[torch.Tensor, float]]:
        self._fast_indices = hero_frame_indices(self.config[STACK_SIZE], video.fps)
        return super().model_inputs(video, job)

    def window_input(self, indices: list[int], frames: list, inputs: list[torch.Tensor]) -> torch.Tensor:
        """The 32 frames of the fast pathway among the clip's, stacked along time."""
        return torch.stack([inputs[index] for index in self._fast_indices], dim=-4)


register(FeatureType("slowfast", ExtractSlowFast, SLOWFAST_WEIGHTS))
