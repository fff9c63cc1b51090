"""Benchmark inputs: the two sample videos and a generated 10-minute 1280x720 30 fps H.264 clip.

The long clip has a keyframe every 250 frames (x264, veryfast preset, B-frames), content that moves and
changes (gradients, moving blocks, mild noise) so it decodes like real footage rather than a still image.
It is written once under ``bench/data/`` (ignored by git) and reused.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Iterable, Iterator

import av
import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
SAMPLES = sorted((HERE.parent / "sample").glob("*.mp4"))
LONG_CLIP = DATA / "long_720p_10min.mp4"
WIDTH, HEIGHT, FPS, MINUTES, KEYFRAME_INTERVAL = 1280, 720, 30, 10, 250


def make_long_clip(path: Path = LONG_CLIP, minutes: float = MINUTES) -> Path:
    if path.exists():
        return path
    noise = np.random.default_rng(0).integers(0, 24, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH]

    def images() -> Iterator[np.ndarray]:
        for index in range(int(minutes * 60 * FPS)):
            image = np.empty((HEIGHT, WIDTH, 3), np.uint8)
            image[..., 0] = (xs + 4 * index) % 256
            image[..., 1] = (ys + 2 * index) % 256
            image[..., 2] = ((xs + ys) // 4 + index) % 256
            x0, y0 = (37 * index) % (WIDTH - 200), (23 * index) % (HEIGHT - 150)
            image[y0 : y0 + 150, x0 : x0 + 200] = (255 - index % 256, index % 256, 128)
            yield image + np.roll(noise, index * 7, axis=1)

    return _write_h264(path, images(), {"preset": "veryfast", "crf": "23"}, KEYFRAME_INTERVAL)


def make_typical_clip(path: Path = DATA / "typical_720p_3min.mp4", minutes: float = 3) -> Path:
    """720p at 30 fps of smooth moving content, x264 at its default rate control (crf 23, B-frames, keyframes as
    x264 places them): about the bitrate of a downloaded online video, unlike the noisy long clip."""
    if path.exists():
        return path
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH]

    def images() -> Iterator[np.ndarray]:
        for index in range(int(minutes * 60 * FPS)):
            image = np.empty((HEIGHT, WIDTH, 3), np.uint8)
            image[..., 0] = (xs // 3 + index) % 256
            image[..., 1] = (ys // 2 + 2 * index) % 256
            image[..., 2] = 128
            x0, y0 = (11 * index) % (WIDTH - 300), (7 * index) % (HEIGHT - 200)
            image[y0 : y0 + 200, x0 : x0 + 300] = (240, (3 * index) % 256, 40)
            yield image

    return _write_h264(path, images(), {"preset": "veryfast"})


def make_looped_clip(source: Path, minutes: float) -> Path:
    """``source`` played again and again up to ``minutes``, remuxed (no re-encoding: seconds, where encoding a long
    clip takes an hour on two cores); it decodes as ``source`` does. Written beside it, once."""
    path = source.with_name(f"{source.stem}_looped_{minutes:g}min.mp4")
    if path.exists():
        return path
    partial = path.with_suffix(".part.mp4")
    with av.open(str(source)) as reading, av.open(str(partial), "w") as writing:
        original = reading.streams.video[0]
        stream = writing.add_stream_from_template(original)
        length = original.duration or int(original.frames / FPS / original.time_base)
        end = int(minutes * 60 / original.time_base)
        for loop in range(int(end // length) + 1):
            reading.seek(0)
            for packet in reading.demux(original):
                if packet.pts is None or packet.pts + loop * length >= end:
                    continue
                packet.pts += loop * length
                packet.dts = packet.dts + loop * length if packet.dts is not None else None
                packet.stream = stream
                writing.mux(packet)
    partial.rename(path)
    return path


def _write_h264(path: Path, images: Iterable[np.ndarray], options: dict[str, str],
                keyframe_interval: int | None = None) -> Path:
    """RGB images at ``FPS`` as H.264 (x264 with ``options``; a keyframe exactly every ``keyframe_interval``
    frames if given), written under a temporary name first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".part.mp4")
    with av.open(str(partial), "w") as container:
        stream = container.add_stream("libx264", rate=FPS, options=options)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        if keyframe_interval:
            stream.codec_context.gop_size = keyframe_interval
            stream.codec_context.options = {**stream.codec_context.options, "keyint_min": str(keyframe_interval),
                                             "sc_threshold": "0"}
        for index, image in enumerate(images):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    partial.rename(path)
    return path


def distinct_copies(videos: list[Path], copies: int) -> list[Path]:
    """Hard links with distinct names (the same path twice is extracted once)."""
    folder = DATA / "copies"
    folder.mkdir(parents=True, exist_ok=True)
    links = []
    for number in range(copies):
        for video in videos:
            link = folder / f"{number}_{video.name}"
            if not link.exists():
                os.link(video, link)
            links.append(link)
    return links


def make_audio_track(minutes: float) -> Path:
    """``minutes`` of 44.1 kHz stereo AAC in M4A: a wavering tone with noise, written a second at a time."""
    path = DATA / f"tone_{minutes:g}min.m4a"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".part.m4a")
    rate, rng = 44100, np.random.default_rng(0)
    with av.open(str(partial), "w") as container:
        stream = container.add_stream("aac", rate=rate, layout="stereo")
        for second in range(int(minutes * 60)):
            time_s = second + np.arange(rate) / rate
            tone = 0.3 * np.sin(2 * np.pi * (300 + 200 * np.sin(time_s)) * time_s)
            samples = (tone + rng.normal(0, 0.05, (2, rate))).astype(np.float32)
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="stereo")
            frame.sample_rate, frame.pts = rate, second * rate
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    partial.rename(path)
    return path


if __name__ == "__main__":
    print(make_long_clip(minutes=float(sys.argv[1]) if len(sys.argv) > 1 else MINUTES))
