"""Throughput benchmark: this tool against the anchors' way of doing the same work.

For each scenario (a video and a sampling method) it measures, with the model already loaded:

- end-to-end: ``extractor.extract`` (decode thread + model, overlapped);
- decode-only: the decoder side alone (index pass, seeks, decoding, RGB conversion, preprocessing);
- model-only: the model on as many preprocessed frames, in the same batches;
- CPU bound: max(decode-only, model-only, (decode CPU s + model CPU s) / cores): when the decoder and the
  model both need the CPU, overlapping them cannot finish sooner than this;
- sparse decode: the reader alone (open, index, seeks, decoding to RGB), against the keyframe floor:
  decoding only from each target's preceding keyframe up to the target, with nothing else (no index, no RGB);
- anchor: every frame decoded with OpenCV, the sampled ones picked by frame index, then the model, one video
  at a time and no overlap (what the older tools do).

Then the same video list through ``main.py`` with 1 and 2 CPU workers (start-up included).
Weights are random (a ViT-B/32 in OpenAI's format): speed does not depend on their values.

    python bench/run.py            # everything (about 20 minutes on 2 cores)
    python bench/run.py --quick    # the samples and uni_12 on the long clip only
"""
from __future__ import annotations

import argparse
import bisect
import os
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

from bench.inputs import DATA, SAMPLES, distinct_copies, make_long_clip  # noqa: E402
from extractors import ExtractCLIP  # noqa: E402
from extractors.catalog import write_random_weights  # noqa: E402
from extractors.prefetch import batches  # noqa: E402
from io_utils.sampling import parse_extract_method  # noqa: E402
from io_utils.video import VideoReader  # noqa: E402

BATCH_SIZE = 32
REPEATS = 3


def timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - start, result


def timed_cpu(function, *args) -> tuple[float, float]:
    """Wall seconds and CPU seconds (all threads of this process)."""
    wall, cpu = time.perf_counter(), time.process_time()
    function(*args)
    return time.perf_counter() - wall, time.process_time() - cpu


def sparse_decode(video: Path, method_text: str) -> int:
    """The reader alone: open, index, seeks and decoding to RGB frames (what the keyframe floor bounds)."""
    with VideoReader(video) as reader:
        method = parse_extract_method(method_text)
        return sum(1 for _ in reader.read_at(method.target_pts(reader.start_pts, reader.end_pts, reader.time_base)))


def decode_only(extractor: ExtractCLIP, video: Path) -> int:
    with VideoReader(video) as reader:
        inputs = extractor.model_inputs(reader, extractor.video_job(video))
        return sum(len(times) for _, times in batches(inputs, BATCH_SIZE))


def model_only(extractor: ExtractCLIP, count: int) -> None:
    batch = torch.randn(BATCH_SIZE, 3, *extractor.transform.crop)
    with torch.inference_mode():
        for start in range(0, count, BATCH_SIZE):
            extractor.forward(batch[: min(BATCH_SIZE, count - start)])


def keyframe_floor(video: Path, method_text: str) -> float:
    """Decode from each target's keyframe to the target and nothing else; return the seconds this takes.

    The frame list comes from a packet scan done beforehand, outside the timing.
    """
    with VideoReader(video) as reader:
        method = parse_extract_method(method_text)
        targets = method.target_pts(reader.start_pts, reader.end_pts, reader.time_base)
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        packets = [(p.pts, p.is_keyframe) for p in container.demux(stream) if p.size and p.pts is not None]
    pts = sorted(p for p, _ in packets)
    keyframes = sorted(p for p, key in packets if key)
    wanted = sorted({pts[bisect.bisect_right(pts, t) - 1] for t in targets})
    plan = [(keyframes[bisect.bisect_right(keyframes, w) - 1], w) for w in wanted]
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        start = time.perf_counter()
        position, frames = None, None
        for keyframe, frame_pts in plan:
            if position is None or keyframe > position:
                container.seek(keyframe, stream=stream)
                frames = container.decode(stream)
            for frame in frames:
                position = frame.pts
                if frame.pts >= frame_pts:
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


def warm_page_cache(video: Path) -> None:
    with video.open("rb") as handle:
        while handle.read(1 << 24):
            pass


def scenario(extractor: ExtractCLIP, video: Path, method_text: str) -> dict:
    """Timings of one video and method; short ones are the median of ``REPEATS`` runs."""
    extractor.args.extract_method = parse_extract_method(method_text)
    warm_page_cache(video)  # every contender then reads from memory
    frames = len(extractor.extract(video)["timestamps_ms"])
    repeats = REPEATS if frames <= 100 else 1
    runs = [_measure(extractor, video, method_text, frames) for _ in range(repeats)]
    row = {key: float(np.median([run[key] for run in runs])) for key in runs[0]}
    return dict(video=video.name, method=method_text, frames=frames, **row)


def _measure(extractor: ExtractCLIP, video: Path, method_text: str, frames: int) -> dict:
    end_to_end, _ = timed(extractor.extract, video)
    decode, decode_cpu = timed_cpu(decode_only, extractor, video)
    model, model_cpu = timed_cpu(model_only, extractor, frames)
    cpu_bound = (decode_cpu + model_cpu) / (os.cpu_count() or 1)  # no overlap can beat this on a busy CPU
    with VideoReader(video) as reader:
        dense = frames >= reader.num_frames / 30  # sampled at least once per 30 frames: one sequential pass
    reader_time, _ = timed(sparse_decode, video, method_text)
    return dict(end_to_end=end_to_end, decode=decode, model=model, bound=max(decode, model, cpu_bound),
                anchor=anchor(extractor, video, method_text)[0], reader=reader_time,
                floor=0.0 if dense else keyframe_floor(video, method_text))


def workers_run(weights_dir: Path, videos: list[Path], method: str, workers: int) -> float:
    command = [sys.executable, "main.py", "--feature_type", "CLIP-ViT-B/32", "--cpu", "--num_workers", str(workers),
               "--weights_dir", str(weights_dir), "--extract_method", method, "--on_extraction", "print",
               "--video_paths", *map(str, videos)]
    start = time.perf_counter()
    subprocess.run(command, cwd=Path(__file__).resolve().parents[1], check=True, capture_output=True)
    return time.perf_counter() - start


def print_table(rows: list[dict]) -> None:
    print("| video | method | frames | end-to-end s | frames/s | decode-only s | model-only s | e2e / max(dec, model) "
          "| CPU bound s | e2e / CPU bound | sparse decode s | keyframe floor s | decode / floor | anchor s "
          "| speed-up vs anchor |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        floor = f"{r['reader']:.2f} | {r['floor']:.2f} | {r['reader'] / r['floor']:.2f}" if r["floor"] else "- | - | -"
        print(f"| {r['video']} | {r['method']} | {r['frames']} | {r['end_to_end']:.2f} | {r['frames'] / r['end_to_end']:.1f} "
              f"| {r['decode']:.2f} | {r['model']:.2f} | {r['end_to_end'] / max(r['decode'], r['model']):.2f} "
              f"| {r['bound']:.2f} | {r['end_to_end'] / r['bound']:.2f} | {floor} "
              f"| {r['anchor']:.2f} | {r['anchor'] / r['end_to_end']:.1f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    options = parser.parse_args()
    long_clip = make_long_clip()
    if not (DATA / "ViT-B-32.pt").exists():
        write_random_weights("CLIP-ViT-B/32", DATA)
    extractor = ExtractCLIP(dict(feature_type="CLIP-ViT-B/32", cpu=True, weights_dir=str(DATA), batch_size=BATCH_SIZE),
                            external_call=True)
    model_only(extractor, BATCH_SIZE)  # warm-up: allocator, oneDNN kernels
    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}, PyAV {av.__version__} (FFmpeg {av.ffmpeg_version_info}), OpenCV {cv2.__version__}")
    plan = [(video, method) for video in SAMPLES for method in ("uni_12", "fix_1")] + [(long_clip, "uni_12")]
    if not options.quick:
        plan.append((long_clip, "fix_1"))
    rows = []
    for video, method in plan:
        rows.append(scenario(extractor, video, method))
        print(f"  measured {video.name} {method}", file=sys.stderr, flush=True)
    print_table(rows)

    videos = distinct_copies(SAMPLES, 4)
    one = workers_run(DATA, videos, "fix_2", 1)
    two = workers_run(DATA, videos, "fix_2", 2)
    print(f"\nmain.py on {len(videos)} videos (the samples x4), fix_2 (256 frames), start-up included: "
          f"1 CPU worker {one:.1f} s, 2 CPU workers {two:.1f} s (ratio {two / one:.2f})")


if __name__ == "__main__":
    main()
