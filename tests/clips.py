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
    codec_options: dict[str, str] | None = None,
    b_frames: int | None = None,
) -> Path:
    """Encode a clip whose frames all differ (seeded noise, or a moving gradient: quicker to encode), or are one
    solid ``color``.

    ``times_ms`` gives each frame's presentation time (a variable-frame-rate clip); otherwise frames are
    ``1/rate`` apart. ``size`` is (width, height). ``codec_options`` go to the encoder (``x264-params``...),
    ``b_frames`` sets the encoder's maximum of consecutive B-frames.
    """
    width, height = size
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(str(path)))
    container = av.open(str(path), "w", options=container_options or {})
    stream = container.add_stream(codec, rate=rate, options=codec_options or {})
    stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
    stream.codec_context.gop_size = gop
    if b_frames is not None:
        stream.codec_context.max_b_frames = b_frames
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


def frames_on_screen(path: Path, fps: float) -> list[np.ndarray]:
    """The frame on screen at each k / fps s, from a plain sequential decode (the last frame shown by then)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        time_base, start = stream.time_base, stream.start_time or 0
    pts, frames = sequential_decode(path)
    times = [(value - start) * time_base for value in pts]
    chosen, k = [], 0
    while Fraction(k) / Fraction(fps).limit_denominator(1000) <= times[-1]:
        target = Fraction(k) / Fraction(fps).limit_denominator(1000)
        chosen.append(frames[max(index for index, time in enumerate(times) if time <= target)])
        k += 1
    return chosen


def write_with_audio(path: Path, seconds: float = 3.0, audio_codec: str = "aac", sample_rate: int = 44100,
                     layout: str = "stereo", video_codec: str | None = "libx264", audio_start_s: float = 0.0,
                     samples: np.ndarray | None = None) -> Path:
    """A file with an audio stream (and a small video stream, unless ``video_codec`` is None) of ``seconds``.

    The audio is ``samples`` (float in [-1, 1], one row per channel, at ``sample_rate``), by default a tone with
    a little seeded noise, starting ``audio_start_s`` after the video's first frame.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = 2 if layout == "stereo" else 1
    if samples is None:
        time = np.arange(int(seconds * sample_rate)) / sample_rate
        noise = np.random.default_rng(len(path.name)).normal(0, 0.02, (channels, len(time)))
        samples = 0.3 * np.sin(2 * np.pi * 440 * time)[None] * np.linspace(1, 0.5, channels)[:, None] + noise
    with av.open(str(path), "w") as container:
        if video_codec:
            video = container.add_stream(video_codec, rate=25)
            video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = container.add_stream(audio_codec, rate=sample_rate, layout=layout)
        audio_format = audio.codec_context.codec.audio_formats[0]
        step = audio.codec_context.frame_size or 1024
        start = round(audio_start_s * sample_rate)
        for index in range(0, samples.shape[1], step):
            chunk = _as_format(samples[:, index : index + step], audio_format)
            frame = av.AudioFrame.from_ndarray(chunk, format=audio_format.name, layout=layout)
            frame.sample_rate, frame.pts, frame.time_base = sample_rate, start + index, Fraction(1, sample_rate)
            container.mux(audio.encode(frame))
        container.mux(audio.encode())
        if video_codec:
            for index in range(int(seconds * 25)):
                image = np.full((48, 64, 3), (index * 7) % 256, np.uint8)
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts = index
                container.mux(video.encode(frame))
            container.mux(video.encode())
    return path


def _as_format(samples: np.ndarray, audio_format: av.AudioFormat) -> np.ndarray:
    """(channels, n) float samples in an encoder's sample format: planar rows, or one interleaved row."""
    kind = {"s16": np.int16, "s32": np.int32, "flt": np.float32, "dbl": np.float64}[audio_format.name.rstrip("p")]
    scale = np.iinfo(kind).max if np.issubdtype(kind, np.integer) else 1.0
    converted = np.clip(samples * scale, -scale, scale).astype(kind)
    return converted if audio_format.is_planar else np.ascontiguousarray(converted.T).reshape(1, -1)
