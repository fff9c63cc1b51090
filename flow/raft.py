"""RAFT (Teed and Deng, 2020): torchvision's model, loading torchvision's checkpoints or princeton-vl's, whose keys
are converted on load."""
from __future__ import annotations

import re
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import optical_flow

from io_utils.checkpoints import load_state_dict_strictly, renamed_key
from io_utils.errors import VideoError

MIN_SIDE = 128  # the correlation pyramid pools 1/8-resolution features 3 times
# torchvision's RAFT networks with random weights, and their weight enums, by model (``--raft_model``)
RAFT_NETWORKS = {"large": partial(optical_flow.raft_large, weights=None, progress=False),
                 "small": partial(optical_flow.raft_small, weights=None, progress=False)}
RAFT_ENUMS = {"large": optical_flow.Raft_Large_Weights, "small": optical_flow.Raft_Small_Weights}
RAFT_MODELS = tuple(RAFT_NETWORKS)


class RAFT(nn.Module):
    """``forward(first, second)``: (B, 3, H, W) RGB in [0, 255], any size -> (B, 2, H, W) flow in pixels.

    RAFT needs sizes that are multiples of 8: inputs are padded by edge replication, split evenly on both
    sides as the publisher's ``InputPadder`` does, and the flow is cropped back.
    """

    def __init__(self, model: str = "large", iterations: int = 20):
        super().__init__()
        self.raft = RAFT_NETWORKS[model]()
        self.iterations = iterations

    def forward(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        height, width = first.shape[-2:]
        if min(height, width) < MIN_SIDE:
            raise VideoError(f"RAFT needs frames of at least {MIN_SIDE}x{MIN_SIDE} pixels, got {width}x{height}; "
                             f"use --side_size {MIN_SIDE} or more")
        pad_h, pad_w = -height % 8, -width % 8
        padding = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
        first, second = (F.pad(image / 127.5 - 1.0, padding, mode="replicate") for image in (first, second))
        flow = self.raft(first, second, num_flow_updates=self.iterations)[-1]
        return flow[..., padding[2] : padding[2] + height, padding[0] : padding[0] + width]

    def load_checkpoint(self, path: Path) -> None:
        """A torchvision state dict, or princeton-vl's (``module.fnet.conv1.weight``...), strictly."""
        load_state_dict_strictly(self.raft, path, "a RAFT checkpoint for this --raft_model", _torchvision_keys)


def _torchvision_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if any(key.startswith(("module.", "fnet.", "cnet.")) for key in state_dict):
        return convert_princeton_state_dict(state_dict)
    return state_dict


def convert_princeton_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """princeton-vl/RAFT key names -> torchvision's.

    The publisher's residual blocks register the shortcut's norm twice (``normK`` and ``downsample.1``); the
    ``normK`` copy with no matching ``convK`` is that alias and is dropped.
    """
    state_dict = {key.removeprefix("module."): value for key, value in state_dict.items()}
    converted = {}
    for key, value in state_dict.items():
        new_key = _convert_key(key, state_dict)
        if new_key is not None:
            converted[new_key] = value
    return converted


_UPDATE_BLOCK_RENAMES = [
    (r"^update_block\.encoder\.convc(\d)\.", r"update_block.motion_encoder.convcorr\1.0."),
    (r"^update_block\.encoder\.convf(\d)\.", r"update_block.motion_encoder.convflow\1.0."),
    (r"^update_block\.encoder\.conv\.", r"update_block.motion_encoder.conv.0."),
    (r"^update_block\.gru\.conv([zrq])(\d)\.", r"update_block.recurrent_block.convgru\2.conv\1."),
    (r"^update_block\.gru\.conv([zrq])\.", r"update_block.recurrent_block.convgru1.conv\1."),
    (r"^update_block\.mask\.0\.", r"mask_predictor.convrelu.0."),
    (r"^update_block\.mask\.2\.", r"mask_predictor.conv."),
]
_ENCODERS = {"fnet": "feature_encoder", "cnet": "context_encoder"}


def _convert_key(key: str, state_dict: dict[str, torch.Tensor]) -> str | None:
    if key.startswith("update_block."):  # the rules are anchored and exclusive: one applies at most
        return renamed_key(key, _UPDATE_BLOCK_RENAMES)
    encoder, _, rest = key.partition(".")
    if encoder not in _ENCODERS:
        return key
    block = re.match(r"^(layer\d\.\d)\.(conv|norm)(\d)\.(.+)$", rest)
    if block:
        prefix, kind, number, parameter = block.groups()
        if kind == "norm" and f"{encoder}.{prefix}.conv{number}.weight" not in state_dict:
            return None  # the alias of downsample.1
        return f"{_ENCODERS[encoder]}.{prefix}.convnormrelu{number}.{0 if kind == 'conv' else 1}.{parameter}"
    rest = re.sub(r"^conv1\.", "convnormrelu.0.", rest)
    rest = re.sub(r"^norm1\.", "convnormrelu.1.", rest)
    rest = re.sub(r"^conv2\.", "conv.", rest)
    return f"{_ENCODERS[encoder]}.{rest}"
