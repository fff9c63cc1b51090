"""Packing an output folder into one HDF5 file: time and peak memory for many small videos.

Writes a synthetic resnet18 output folder (``--videos`` videos of 1 to 10 rows of 512 float32, their
``timestamps_ms`` and ``fps``; half of them in a sub-folder), packs it with ``main.py pack`` in a child process,
then packs again after adding 100 videos. Peak RSS is the child's (``ru_maxrss``).

    python bench/pack.py --videos 10000
"""
from __future__ import annotations

import argparse
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def write_videos(folder: Path, first: int, count: int) -> None:
    rng = np.random.default_rng(first)
    for index in range(first, first + count):
        stem = folder / ("sub" if index % 2 else "") / f"video{index:06d}"
        stem.parent.mkdir(parents=True, exist_ok=True)
        rows = 1 + index % 10
        np.save(f"{stem}_resnet.npy", rng.normal(size=(rows, 512)).astype(np.float32))
        np.save(f"{stem}_timestamps_ms.npy", np.arange(rows) * 1000.0)
        np.save(f"{stem}_fps.npy", np.asarray(25.0))


def timed_pack(folder: Path, destination: Path) -> tuple[float, float, str]:
    """Seconds, peak RSS of the child (MiB) and its output line."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "main.py", "pack", str(folder), "--to", str(destination),
                             "--feature_type", "resnet18"], cwd=ROOT, capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return seconds, max(peak, before) / 1024, result.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=10000)
    args = parser.parse_args()
    print(f"{platform.node()} | {args.videos} videos")
    with tempfile.TemporaryDirectory() as scratch:
        folder, destination = Path(scratch) / "resnet18", Path(scratch) / "features.h5"
        write_videos(folder, 0, args.videos)
        seconds, peak, line = timed_pack(folder, destination)
        print(f"pack: {seconds:.1f} s, peak RSS {peak:.0f} MiB, {destination.stat().st_size / 2**20:.0f} MiB written ({line})")
        write_videos(folder, args.videos, 100)
        seconds, peak, line = timed_pack(folder, destination)
        print(f"re-pack after adding 100: {seconds:.1f} s, peak RSS {peak:.0f} MiB ({line})")


if __name__ == "__main__":
    main()
