"""Audio as mono float samples at one rate, decoded with PyAV in chunks, on the timeline of the visual features.

Every codec FFmpeg has is read, from videos and plain audio files alike, with no ffmpeg binary and no
temporary file. Channels are averaged (as AudioSet's reference front end averages them) after libswresample
(PyAV's ``AudioResampler``) has brought every channel to the target rate: it streams, so a two-hour track never
sits in memory, where ``scipy.signal.resample_poly`` or resampy would need the whole signal.

The timeline is the one of the visual features: time 0 is the presentation time of the first video frame
(of the audio itself in a file without video). Audio streams often start before or after their video, so
sample 0 of the decoded audio sits at ``audio_start_s`` on that timeline, possibly negative.
"""
from __future__ import annotations

import os
import sys
from typing import Iterator

import av
import numpy as np

from io_utils.activity import ACTIVITY, READER
from io_utils.errors import VideoError
from io_utils.limits import InputLimits
from io_utils.sources import Source, as_source, for_reading
from io_utils.containers import chosen_stream, close_container, error_reason, is_cover, open_container
from io_utils.video import VideoReader

AUDIO_EXTENSIONS = frozenset(".wav .mp3 .flac .m4a .aac .ogg .opus .oga .wma .aif .aiff .mka".split())
_GAP_S = 0.002  # a jump in the packets' times larger than this (a damaged packet skipped) is filled with silence


class AudioReader:
    """The audio stream of a file that players pick (see :func:`chosen_stream`) as chunks of mono float32 samples
    at ``rate`` (use as a context manager).

    ``video`` is the file's :class:`VideoReader` (None for an audio file): its frame times serve sampling that
    must line up with visual features. ``duration_s`` is the video's duration, else the audio's as the container
    declares it (None if it declares none).
    """

    def __init__(self, path: str | os.PathLike | Source, rate: int = 16000, verbose: bool = False,
                 limits: InputLimits | None = None):
        self.path, self.rate, self._verbose = for_reading(as_source(path)), rate, verbose
        self._limits = limits or InputLimits()
        self.video: VideoReader | None = None
        self._container, self._handle = open_container(self.path, "media")
        try:
            self._stream = chosen_stream(self._container, "audio")
            self._limits.check_audio(self._stream.codec_context.sample_rate, self._stream.codec_context.channels)
            moving = any(stream.type == "video" and not is_cover(stream) for stream in self._container.streams)
            self.video = VideoReader(self.path, limits=self._limits) if moving else None
            self.duration_s = (self.video.duration_s if self.video
                               else _declared_duration(self._container, self._stream))
            self._limits.check_duration(self.duration_s or 0.0)
        except BaseException:
            self.close()
            raise
        self.fps = self.video.fps if self.video else 0.0
        self.origin_s = float(self.video.start_pts * self.video.time_base) if self.video else None
        self.audio_start_s: float | None = None  # known once the first samples are decoded
        self.skipped_packets = 0

    def facts(self) -> dict[str, object]:
        """What a manifest records of the audio stream (and of the video's, if any)."""
        audio = {"audio_codec": self._stream.codec_context.name, "sample_rate": self._stream.codec_context.sample_rate,
                 "channels": self._stream.codec_context.channels, "audio_start_s": self.audio_start_s}
        return {**(self.video.facts() if self.video else {"fps": self.fps, "duration_s": self.duration_s}), **audio}

    def __enter__(self) -> AudioReader:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        if self.video is not None:
            self.video.close()
        close_container(self._container, self._handle)

    def chunks(self) -> Iterator[np.ndarray]:
        """The samples in order, one decoded packet's worth at a time. ``audio_start_s`` is set before the first
        chunk. A packet that cannot be decoded is skipped and its time filled with silence."""
        resampler = av.AudioResampler(format="fltp", rate=self.rate)
        expected_s: float | None = None
        time_base = self._stream.time_base
        for packet in self._container.demux(self._stream):
            ACTIVITY.note(READER, "reading and decoding the audio", packet.pts, time_base)
            try:
                frames = packet.decode()
            except av.error.FFmpegError as error:
                self._report_skip(packet, error)
                continue
            for frame in frames:
                start_s = float(frame.pts * frame.time_base) if frame.pts is not None else expected_s
                if self.audio_start_s is None:  # an audio file's timeline starts with its audio
                    self.audio_start_s = (start_s or 0.0) - self.origin_s if self.origin_s is not None else 0.0
                elif start_s is not None and expected_s is not None and start_s - expected_s > _GAP_S:
                    yield from self._silence(start_s - expected_s)
                if start_s is not None:
                    expected_s = start_s + frame.samples / frame.sample_rate
                frame.pts = None  # the resampler's own running time; the gap is handled above
                yield from self._resampled(resampler, frame)
        yield from self._resampled(resampler, None)

    def _resampled(self, resampler: av.AudioResampler, frame: av.AudioFrame | None) -> Iterator[np.ndarray]:
        try:
            converted = resampler.resample(frame)
        except av.error.FFmpegError as error:  # e.g. more channels than libswresample takes (64)
            raise VideoError(f"the audio cannot be converted to {self.rate} Hz ({error_reason(error)})") from error
        return (_mono(out) for out in converted)

    def _silence(self, gap_s: float) -> Iterator[np.ndarray]:
        """The samples of a gap in the packets' times, a second at a time (a damaged timestamp can open a gap of
        years: it fails at the duration limit instead of filling memory)."""
        self._limits.check_duration(gap_s)
        samples = round(gap_s * self.rate)
        while samples > 0:
            yield np.zeros(min(samples, self.rate), np.float32)
            samples -= self.rate

    def _report_skip(self, packet: av.Packet, error: av.error.FFmpegError) -> None:
        self.skipped_packets += 1
        if self._verbose:
            time = f" at {float(packet.pts * packet.time_base):.3f} s" if packet.pts is not None else ""
            print(f"{self.path}: skipped a damaged audio packet{time} ({error})", file=sys.stderr)


def _declared_duration(container, stream) -> float | None:
    if stream.duration is not None:
        return float(stream.duration * stream.time_base)
    return container.duration / av.time_base if container.duration is not None else None


def _mono(frame: av.AudioFrame) -> np.ndarray:
    """The mean of the channels (planar float)."""
    samples = frame.to_ndarray()
    return samples.mean(axis=0, dtype=np.float32) if samples.shape[0] > 1 else samples[0].astype(np.float32, copy=False)
