"""Throughput of the flow networks and of I3D, per frame pair and per window, with random weights.

Speed does not depend on the weights' values. Each figure is the median of ``--repeats`` runs after one
warm-up, on the device given (``--device cuda:0`` on a GPU machine).

    python bench/flow.py                 # 256x341 (I3D's input size), CPU
    python bench/flow.py --size 720 1280 --pairs 2
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from extractors.models.i3d import InceptionI3d  # noqa: E402
from flow import PWCOnRGB  # noqa: E402
from flow.raft import RAFT  # noqa: E402


def median_seconds(function, repeats: int, device: torch.device) -> float:
    def once() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        function()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    once()  # warm-up
    return statistics.median(once() for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, nargs=2, default=(256, 341), metavar=("H", "W"))
    parser.add_argument("--pairs", type=int, default=8, help="frame pairs per forward pass")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    height, width = args.size
    first, second = (torch.rand(args.pairs, 3, height, width, device=device) * 255 for _ in range(2))
    networks = {
        "raft_small, 12 iterations": RAFT("small", 12),
        "raft_small, 20 iterations": RAFT("small", 20),
        "raft_large, 20 iterations": RAFT("large", 20),
        "pwc": PWCOnRGB(),
    }
    print(f"{platform.node()} | torch {torch.__version__} | {torch.get_num_threads()} threads | {device} | "
          f"{height}x{width}, {args.pairs} pairs per pass")
    print("| model | ms per pair |\n| --- | --- |")
    with torch.inference_mode():
        for name, network in networks.items():
            network = network.to(device).eval()
            seconds = median_seconds(lambda: network(first, second), args.repeats, device)
            print(f"| {name} | {1000 * seconds / args.pairs:.0f} |")
        for channels, stream in ((3, "rgb"), (2, "flow")):
            network = InceptionI3d(channels).to(device).eval()
            window = torch.rand(1, channels, 64, 224, 224, device=device)
            seconds = median_seconds(lambda: network.features(window), args.repeats, device)
            print(f"| i3d {stream}, one 64-frame window | {1000 * seconds:.0f} per window |")


if __name__ == "__main__":
    main()
