"""Optical flow networks behind one interface: ``network(first, second)`` takes two (B, 3, H, W) float RGB
batches in [0, 255] and returns (B, 2, H, W) flow in pixels (x then y), at the input size."""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

from flow.pwc import PWC_WEIGHTS, PWCNet
from flow.raft import RAFT, raft_checkpoint
from io_utils.weights import checkpoint_path, load_state_dict_strictly

FLOW_NETWORKS = ("raft", "pwc")


class PWCOnRGB(nn.Module):
    """The publisher's PWC-Net takes BGR in [0, 1]."""

    def __init__(self):
        super().__init__()
        self.pwc = PWCNet()

    def forward(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        return self.pwc(first.flip(1) / 255.0, second.flip(1) / 255.0)


def flow_checkpoint_path(name: str, args: argparse.Namespace) -> Path:
    """``--flow_checkpoint``, or the official checkpoint (looked up locally, else downloaded)."""
    checkpoint = raft_checkpoint(args.raft_model, args.raft_weights) if name == "raft" else PWC_WEIGHTS["default"]
    return checkpoint_path(checkpoint, args, "flow_checkpoint")


def load_flow_network(name: str, args: argparse.Namespace) -> nn.Module:
    """The flow network ``name`` (raft or pwc) with its weights, on the CPU, in eval mode."""
    path = flow_checkpoint_path(name, args)
    if name == "raft":
        network = RAFT(args.raft_model, args.raft_iters)
        network.load_checkpoint(path)
        return network.eval()
    network = PWCOnRGB()
    load_state_dict_strictly(network.pwc, path, "a PWC-Net checkpoint in the format of network-default.pytorch")
    return network.eval()
