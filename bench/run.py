"""Throughput benchmark: this tool against the anchors' way of doing the same work.

For each scenario (a video and a sampling method) it measures, with the model already loaded:

- end-to-end: ``extractor.extract`` (decode thread + model, overlapped);
- decode-only: the decoder side alone (index pass, seeks, decoding, RGB conversion, preprocessing);
- model-only: the model on as many preprocessed frames, in the same batches;
- keyframe floor (sparse sampling): decoding only from each target's preceding keyframe up to the target,
  with nothing else (no index pass, no RGB conversion);
- anchor: every frame decoded with OpenCV, the sampled ones picked by frame index, then the model, one video
  at a time and no overlap (what the older tools do).

Then the same video list through ``main.py`` with 1 and 2 CPU workers (start-up included).
Weights are random (a ViT-B/32 in OpenAI's format): speed does not depend on their values.

    python bench/run.py            # everything (about 15 minutes on 2 cores)
    python bench/run.py --quick    # the samples and uni_12 on the long clip only
"""
from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time
from pathlib import Path

import av
import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.inputs import DATA, LONG_CLIP, SAMPLES, make_long_clip  # noqa: E402
from extractors import ExtractCLIP  # noqa: E402
from extractors.base import _batches  # noqa: E402
from io_utils.sampling import parse_extract_method  # noqa: E402
from io_utils.video import VideoReader  # noqa: E402
from tests.checkpoints import write_random_clip  # noqa: E402

BATCH_SIZE = 32


def timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - start, result


def decode_only(extractor: ExtractCLIP, video: Path) -> int:
    with VideoReader(video) as reader:
        return sum(len(times) for _, times in _batches(extractor.model_inputs(reader), BATCH_SIZE))


def model_only(extractor: ExtractCLIP, count: int) -> None:
    batch = torch.randn(BATCH_SIZE, 3, extractor.image_size, extractor.image_size)
    with torch.inference_mode():
        for start in range(0, count, BATCH_SIZE):
            extractor.forward(batch[: min(BATCH_SIZE, count - start)])


def keyframe_floor(video: Path, method_text: str) -> float:
    """Decode from each target's keyframe to the target and nothing else; return the seconds this takes."""
    with VideoReader(video) as reader:
        method = parse_extract_method(method_text)
        wanted = sorted({reader.index.frame_at(t) for t in method.target_pts(reader.start_pts, reader.end_pts, reader.time_base)})
        plan = [(reader.index.keyframe_before(pts), pts) for pts in wanted]
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        start = time.perf_counter()
        position = None
        frames = None
        for keyframe, pts in plan:
            if position is None or keyframe > position:
                container.seek(keyframe, stream=stream)
                frames = container.decode(stream)
            for frame in frames:
                position = frame.pts
                if frame.pts >= pts:
                    break
        return time.perf_counter() - start


def anchor(extractor: ExtractCLIP, video: Path, method_text: str) -> tuple[float, int]:
    """OpenCV decodes every frame; frames are picked by index (uni: linspace, fix: every fps/F-th)."""
    start = time.perf_counter()
    capture = cv2.VideoCapture(str(video))
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    fps = capture.get(cv2.CAP_PROP_FPS)
    method = parse_extract_method(method_text)
    if method.kind == "uni":
        picked = set(np.linspace(0, total - 1, int(method.value)).round().astype(int).tolist())
    else:
        picked = set(range(0, total, max(1, round(fps / float(method.value)))))
    inputs, index = [], 0
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        if index in picked:
            inputs.append(extractor.preprocess(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
        index += 1
    capture.release()
    with torch.inference_mode():
        for batch_start in range(0, len(inputs), BATCH_SIZE):
            extractor.forward(torch.stack(inputs[batch_start : batch_start + BATCH_SIZE]))
    return time.perf_counter() - start, len(inputs)


def scenario(extractor: ExtractCLIP, video: Path, method_text: str) -> dict:
    extractor.args.extract_method = parse_extract_method(method_text)
    extractor.extract(video)  # warm-up: file cache, allocator, oneDNN kernels
    end_to_end, features = timed(extractor.extract, video)
    frames = len(features["timestamps_ms"])
    decode, _ = timed(decode_only, extractor, video)
    model, _ = timed(model_only, extractor, frames)
    anchor_time, anchor_frames = anchor(extractor, video, method_text)
    row = dict(video=video.name, method=method_text, frames=frames, end_to_end=end_to_end, decode=decode,
               model=model, anchor=anchor_time, anchor_frames=anchor_frames)
    with VideoReader(video) as reader:
        dense = frames >= reader.num_frames / 30  # sampled at least once per 30 frames: one sequential pass
    row["floor"] = None if dense else keyframe_floor(video, method_text)
    return row


def workers_run(checkpoint: Path, videos: list[Path], method: str, workers: int) -> float:
    command = [sys.executable, "main.py", "--feature_type", "CLIP-ViT-B/32", "--cpu", "--num_workers", str(workers),
               "--clip_checkpoint", str(checkpoint), "--extract_method", method, "--on_extraction", "print",
               "--video_paths", *map(str, videos)]
    start = time.perf_counter()
    subprocess.run(command, cwd=Path(__file__).resolve().parents[1], check=True, capture_output=True)
    return time.perf_counter() - start


def print_table(rows: list[dict]) -> None:
    print("| video | method | frames | end-to-end s | frames/s | decode-only s | model-only s | e2e / max(dec, model) "
          "| keyframe floor s | decode / floor | anchor s | speed-up vs anchor |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        floor = f"{r['floor']:.2f} | {r['decode'] / r['floor']:.2f}" if r["floor"] else "- | -"
        print(f"| {r['video']} | {r['method']} | {r['frames']} | {r['end_to_end']:.2f} | {r['frames'] / r['end_to_end']:.1f} "
              f"| {r['decode']:.2f} | {r['model']:.2f} | {r['end_to_end'] / max(r['decode'], r['model']):.2f} | {floor} "
              f"| {r['anchor']:.2f} | {r['anchor'] / r['end_to_end']:.1f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    options = parser.parse_args()
    long_clip = make_long_clip()
    checkpoint = DATA / "ViT-B-32.pt"
    if not checkpoint.exists():
        write_random_clip(checkpoint)
    extractor = ExtractCLIP(dict(feature_type="CLIP-ViT-B/32", cpu=True, clip_checkpoint=str(checkpoint),
                                 batch_size=BATCH_SIZE), external_call=True)
    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}, PyAV {av.__version__} (FFmpeg {av.ffmpeg_version_info}), OpenCV {cv2.__version__}")
    plan = [(video, method) for video in SAMPLES for method in ("uni_12", "fix_1")] + [(long_clip, "uni_12")]
    if not options.quick:
        plan += [(long_clip, "fix_0.2"), (long_clip, "fix_1")]
    rows = []
    for video, method in plan:
        rows.append(scenario(extractor, video, method))
        print(f"  measured {video.name} {method}", file=sys.stderr, flush=True)
    print_table(rows)

    videos = [*SAMPLES * 3, long_clip]
    one = workers_run(checkpoint, videos, "uni_12", 1)
    two = workers_run(checkpoint, videos, "uni_12", 2)
    print(f"\nmain.py on {len(videos)} videos (the samples x3 and the long clip), uni_12, start-up included: "
          f"1 CPU worker {one:.1f} s, 2 CPU workers {two:.1f} s (ratio {two / one:.2f})")


if __name__ == "__main__":
    main()
