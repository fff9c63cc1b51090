"""Several feature types from one decode (issue 25): decode-only seconds of a joint run against the runs alone.

For each pair of feature types, on 10 minutes of 720p at a typical bitrate (the 3-minute clip of
``bench/inputs.py`` looped, remuxed): the frames each type asks for (planned as the engine plans them) decoded
alone, and the union of both types' frames decoded once, as a joint run decodes it (the frames taken, and the
frames the decoder produced for them); then the decoding thread (decoding and each type's preprocessing, no
model) of each type alone and of the joint run. Each figure is the best of ``--repeats`` runs; the models carry
random weights (their output is not used).

    python bench/joint.py [--minutes 10] [--repeats 2] [--pairs howto100m clip_slowonly] [--decode_only]
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

from bench.inputs import make_looped_clip, make_typical_clip  # noqa: E402
from bench.skip import DecodedFrames  # noqa: E402
from extractors.catalog import write_random_weights  # noqa: E402
from extractors.joint import JointExtractor, _JointInput, _SharedFrames  # noqa: E402
from io_utils.video import VideoReader  # noqa: E402

PAIRS = {"howto100m": ("resnet152", "resnext101_3d"), "clip_slowonly": ("CLIP-ViT-B/32", "slowonly")}


def best_seconds(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def decoded(video: str, joint: JointExtractor, indices: list[int]) -> tuple[int, int]:
    """The frames the types ``indices`` of ``joint`` take, read as one union (planning included): how many, and
    how many frames the decoder produced for them."""
    job = joint.members[0].video_job(video)
    with VideoReader(video) as reader, DecodedFrames() as counted:
        shared = _SharedFrames(reader, {index: joint.members[index] for index in indices}, job)
        return sum(1 for _ in reader.read_at(shared._union)), counted.count


def decoding_thread(video: str, joint: JointExtractor, indices: list[int]) -> int:
    """Batches the decoding thread makes for the types ``indices`` (decoding and preprocessing, no model)."""
    job = joint.members[0].video_job(video)
    with torch.inference_mode(), _JointInput(joint.members, joint._shares, job.path, indices) as opened:
        return sum(1 for _ in joint._batched(opened, job))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--pairs", nargs="+", choices=tuple(PAIRS), default=tuple(PAIRS))
    parser.add_argument("--decode_only", action="store_true", help="leave out the decoding thread's column")
    args = parser.parse_args()
    video = str(make_looped_clip(make_typical_clip(), args.minutes))
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as weights:
        for title, kinds in ((title, PAIRS[title]) for title in args.pairs):
            for seed, kind in enumerate(kinds):
                write_random_weights(kind, Path(weights), seed)
            joint = JointExtractor({"feature_type": list(kinds), "cpu": True, "weights_dir": weights},
                                   external_call=True)
            print(f"\n{title} ({' + '.join(kinds)}), {args.minutes:g} min of 720p")
            print("| decoded for | decode only (s) | frames taken | frames decoded | decoding thread (s) |")
            print("|---|---|---|---|---|")
            rows = [([index], kind) for index, kind in enumerate(kinds)] + [([0, 1], "both, from one decode")]
            alone = []
            for indices, label in rows:
                taken, frames = decoded(video, joint, indices)
                seconds = best_seconds(lambda: decoded(video, joint, indices), args.repeats)
                thread = 0.0 if args.decode_only else best_seconds(lambda: decoding_thread(video, joint, indices),
                                                                    args.repeats)
                alone.append((seconds, thread))
                print(f"| {label} | {seconds:.1f} | {taken} | {frames} | {thread:.1f} |", flush=True)
            (first, first_thread), (second, second_thread), (both, both_thread) = alone
            ratio = both_thread / (first_thread + second_thread) if not args.decode_only else 0.0
            thread = f" (decoding thread: {ratio:.2f}x)" if ratio else ""
            print(f"joint decode / densest alone: {both / max(first, second):.2f}x; joint / sum alone: "
                  f"{both / (first + second):.2f}x{thread}")

if __name__ == "__main__":
    main()
