"""Optical flow networks behind one interface: ``network(first, second)`` takes two (B, 3, H, W) float RGB
batches in [0, 255] and returns (B, 2, H, W) flow in pixels (x then y), at the input size."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from flow.pwc import PWCNet
from flow.raft import RAFT, RAFT_MODELS  # noqa: F401  (the choices of --raft_model)
from io_utils.checkpoints import load_state_dict_strictly

FLOW_NETWORKS = ("raft", "pwc")


class PWCOnRGB(nn.Module):
    """The publisher's PWC-Net takes BGR in [0, 1]."""

    def __init__(self):
        super().__init__()
        self.pwc = PWCNet()

    def forward(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        return self.pwc(first.flip(1) / 255.0, second.flip(1) / 255.0)


def load_flow_network(name: str, path: Path, raft_model: str = "large", raft_iters: int = 20) -> nn.Module:
    """The flow network ``name`` (raft or pwc) with the checkpoint at ``path``, on the CPU, in eval mode."""
    if name == "raft":
        network = RAFT(raft_model, raft_iters)
        network.load_checkpoint(path)
        return network.eval()
    network = PWCOnRGB()
    load_state_dict_strictly(network.pwc, path, "a PWC-Net checkpoint in the format of network-default.pytorch")
    return network.eval()
