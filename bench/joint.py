"""Several feature types from one decode (issue 25): decode-only seconds of a joint run against the runs alone.

For each pair of feature types, on the 10-minute 720p clip of typical bitrate: the frames each type asks for
(planned as the engine plans them) decoded alone, and the union of both types' frames decoded once, as a joint run
decodes it; then the decoding thread (decoding and each type's preprocessing, no model) of each type alone and of
the joint run. Each figure is the best of ``--repeats`` runs; the models carry random weights (their output is
not used).

    python bench/joint.py [--minutes 10] [--repeats 2]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench.inputs import DATA, make_typical_clip  # noqa: E402
from extractors.catalog import write_random_weights  # noqa: E402
from extractors.joint import JointExtractor, _JointInput, _SharedFrames  # noqa: E402
from io_utils.video import VideoReader  # noqa: E402

PAIRS = {"HowTo100M (resnet152 at 1 fps + resnext101_3d at 24 fps)": ("resnet152", "resnext101_3d"),
         "CLIP + SlowOnly": ("CLIP-ViT-B/32", "slowonly")}


def best_seconds(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def decoded(video: str, joint: JointExtractor, indices: list[int]) -> int:
    """Frames decoded for the types ``indices`` of ``joint``, as one union (planning included)."""
    job = joint.members[0].video_job(video)
    with VideoReader(video) as reader:
        shared = _SharedFrames(reader, {index: joint.members[index] for index in indices}, job)
        return sum(1 for _ in reader.read_at(shared._union))


def decoding_thread(video: str, joint: JointExtractor, indices: list[int]) -> int:
    """Batches the decoding thread makes for the types ``indices`` (decoding and preprocessing, no model)."""
    job = joint.members[0].video_job(video)
    with torch.inference_mode(), _JointInput(joint.members, joint._shares, job.path, indices) as opened:
        return sum(1 for _ in joint._batched(opened, job))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    video = str(make_typical_clip(DATA / f"typical_720p_{args.minutes:g}min.mp4", args.minutes))
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as weights:
        for title, kinds in PAIRS.items():
            for seed, kind in enumerate(kinds):
                write_random_weights(kind, Path(weights), seed)
            joint = JointExtractor({"feature_type": list(kinds), "cpu": True, "weights_dir": weights},
                                   external_call=True)
            print(f"\n{title}, {args.minutes:g} min of 720p")
            print("| decoded for | decode only (s) | frames decoded | decoding thread (s) |")
            print("|---|---|---|---|")
            rows = [([index], kind) for index, kind in enumerate(kinds)] + [([0, 1], "both, from one decode")]
            alone = []
            for indices, label in rows:
                frames = decoded(video, joint, indices)
                seconds = best_seconds(lambda: decoded(video, joint, indices), args.repeats)
                thread = best_seconds(lambda: decoding_thread(video, joint, indices), args.repeats)
                alone.append((seconds, thread))
                print(f"| {label} | {seconds:.1f} | {frames} | {thread:.1f} |")
            (first, first_thread), (second, second_thread), (both, both_thread) = alone
            print(f"joint decode / densest alone: {both / max(first, second):.2f}x; joint / sum alone: "
                  f"{both / (first + second):.2f}x (decoding thread: {both_thread / (first_thread + second_thread):.2f}x)")


if __name__ == "__main__":
    main()
