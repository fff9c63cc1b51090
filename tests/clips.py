"""Small test videos made with PyAV, and the plain sequential decode that sampled frames are checked against."""
from __future__ import annotations

import struct
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import av
import numpy as np


def write_clip(
    path: Path,
    num_frames: int = 50,
    rate: int = 25,
    size: tuple[int, int] = (96, 64),
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    gop: int = 12,
    times_ms: Sequence[int] | None = None,
    color: tuple[int, int, int] | None = None,
    noise: bool = True,
    container_options: dict[str, str] | None = None,
) -> Path:
    """Encode a clip whose frames all differ (seeded noise, or a moving gradient: quicker to encode), or are one
    solid ``color``.

    ``times_ms`` gives each frame's presentation time (a variable-frame-rate clip); otherwise frames are
    ``1/rate`` apart. ``size`` is (width, height).
    """
    width, height = size
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(str(path)))
    container = av.open(str(path), "w", options=container_options or {})
    stream = container.add_stream(codec, rate=rate)
    stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
    stream.codec_context.gop_size = gop
    if times_ms is not None:
        stream.codec_context.time_base = Fraction(1, 1000)
    for index in range(num_frames):
        if color is not None:
            image = np.empty((height, width, 3), np.uint8)
            image[:] = color
        elif not noise:
            columns = (np.arange(width) * 2 + index * 3) % 256
            image = np.broadcast_to(columns[None, :, None], (height, width, 3)).astype(np.uint8)
            image = np.ascontiguousarray(image)
            image[:, :, 1] = (np.arange(height)[:, None] + index) % 256
        else:
            image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            image[: height // 2] = image[: height // 2] // 4 + (index * 5) % 192  # a smooth, moving half
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        if times_ms is not None:
            frame.pts, frame.time_base = int(times_ms[index]), Fraction(1, 1000)
        else:
            frame.pts = index
        container.mux(stream.encode(frame))
    container.mux(stream.encode())
    container.close()
    return path


def write_audio_only(path: Path, seconds: float = 1.0) -> Path:
    container = av.open(str(path), "w")
    stream = container.add_stream("aac", rate=16000)
    samples = int(16000 * seconds)
    tone = (0.1 * np.sin(np.arange(samples) / 10)).astype(np.float32)[None]
    frame = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
    frame.sample_rate = 16000
    container.mux(stream.encode(frame))
    container.mux(stream.encode())
    container.close()
    return path


def set_mp4_rotation(path: Path, matrix: tuple[int, int, int, int]) -> None:
    """Write the (a, b, c, d) rotation part of the track's display matrix (16.16 fixed point), in place.

    This is what phones do instead of rotating pixels; ``(0, 1, -1, 0)`` is a portrait phone video
    (FFmpeg reports a display rotation of -90 degrees, players turn it 90 degrees clockwise).
    """
    data = bytearray(path.read_bytes())
    tkhd = data.find(b"tkhd")
    matrix_at = tkhd + 4 + 40  # past version/flags, times, track id, duration, layer, volume (version 0 box)
    a, b, c, d = (value * 0x10000 for value in matrix)
    data[matrix_at : matrix_at + 36] = struct.pack(">9i", a, b, 0, c, d, 0, 0, 0, 0x40000000)
    path.write_bytes(bytes(data))


def sequential_decode(path: Path) -> tuple[list[int], list[np.ndarray]]:
    """Every frame in order by plain, single-threaded decoding from the start: the reference."""
    pts, frames = [], []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            pts.append(frame.pts)
            frames.append(frame.to_ndarray(format="rgb24"))
    return pts, frames
