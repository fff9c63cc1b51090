"""Exact, cost-proportional frame reading with PyAV.

Opening a video demuxes its video packets once (no decoding) to learn every frame's presentation timestamp
and where the keyframes are. That index answers "which frame is on screen at time t" exactly and tells, for
each wanted frame, whether it is cheaper to keep decoding forward or to seek to the keyframe before it. So
sparse sampling decodes only from each target's preceding keyframe up to the target, dense sampling is one
sequential pass, and only one decoded frame is held at a time.
"""
from __future__ import annotations

import bisect
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Sequence

import av
import numpy as np

from io_utils.errors import VideoError


@dataclass(frozen=True)
class Frame:
    """One decoded frame, already rotated as it is meant to be displayed."""

    rgb: np.ndarray  # (H, W, 3) uint8
    pts: int
    time_ms: float


@dataclass(frozen=True)
class FrameIndex:
    """Presentation timestamps of all frames (sorted) and of the keyframes, in stream ticks."""

    pts: np.ndarray
    keyframe_pts: np.ndarray
    end_pts: int  # the end of the last frame's display time

    def frame_at(self, target_pts: int) -> int:
        """Timestamp of the frame on screen at ``target_pts`` (the last one starting at or before it)."""
        position = bisect.bisect_right(self.pts, target_pts) - 1
        return int(self.pts[max(position, 0)])

    def keyframe_before(self, frame_pts: int) -> int:
        return self.seek_points(frame_pts)[0]

    def seek_points(self, frame_pts: int, fallbacks: int = 2) -> list[int]:
        """The keyframe before ``frame_pts``, then earlier ones, for demuxers that seek past the wanted one."""
        position = max(bisect.bisect_right(self.keyframe_pts, frame_pts) - 1, 0)
        return [int(p) for p in self.keyframe_pts[max(position - fallbacks, 0):position + 1][::-1]]


class VideoReader:
    """Reads the frames on screen at given times from one video file.

    Use as a context manager; ``read_at`` yields one :class:`Frame` per target, in target order.
    """

    def __init__(self, path: str | os.PathLike, threads: bool = True):
        self.path = Path(path)
        self._container = _open_container(self.path)
        try:
            if not self._container.streams.video:
                kinds = sorted({stream.type for stream in self._container.streams})
                raise VideoError(f"no video stream (only {', '.join(kinds)})" if kinds else "no streams (truncated or not a video)")
            self._stream = self._container.streams.video[0]
            if threads:
                self._stream.thread_type = "AUTO"
            self.time_base: Fraction = self._stream.time_base
            self.index = _build_index(self._container, self._stream)
        except BaseException:
            self._container.close()
            raise
        self.fps = float(self._stream.average_rate or self._stream.guessed_rate or 0.0)
        self.start_pts = int(self.index.pts[0])
        self.end_pts = self.index.end_pts
        self.num_frames = len(self.index.pts)

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        self._container.close()

    def pts_to_ms(self, pts: int) -> float:
        return float((pts - self.start_pts) * self.time_base * 1000)

    def read_at(self, targets: Sequence[int]) -> Iterator[Frame]:
        """Yield the frame on screen at each target time (stream ticks, ascending)."""
        decoder = _ForwardDecoder(self._container, self._stream)
        last: Frame | None = None
        for target in targets:
            wanted = self.index.frame_at(target)
            if last is not None and last.pts == wanted:
                yield last
                continue
            if decoder.position is None or self.index.keyframe_before(wanted) > decoder.position:
                decoder.seek(self.index.seek_points(wanted), wanted)
            found = decoder.advance_to(target, wanted)
            if found is None:
                raise VideoError(f"no decodable frame at {float(target * self.time_base):.3f} s (truncated or corrupt)")
            last = Frame(_to_rgb(found), int(found.pts), self.pts_to_ms(found.pts))
            yield last


class _ForwardDecoder:
    """Decodes forward from the current position, keeping one frame of lookahead.

    The lookahead is the first frame past the previous target: it may be the answer for the next target.
    """

    def __init__(self, container: av.container.InputContainer, stream: av.video.stream.VideoStream):
        self._container = container
        self._stream = stream
        self._frames: Iterator[av.VideoFrame] = iter(())
        self._lookahead: av.VideoFrame | None = None
        self.position: int | None = None  # pts of the last frame handed out or skipped

    def seek(self, seek_points: list[int], wanted_pts: int) -> None:
        """Seek to the first of ``seek_points`` that lands at or before ``wanted_pts``, else to the start.

        Some demuxers seek on decoding timestamps, which can land one keyframe too late.
        """
        for seek_pts in [*seek_points, None]:
            self._restart(seek_pts)
            first = self._next()
            if first is not None and first.pts <= wanted_pts:
                self._lookahead = first
                return
        self._lookahead = first  # decoding from the very start: whatever comes first is the truth

    def advance_to(self, target_pts: int, wanted_pts: int) -> av.VideoFrame | None:
        """Return the last frame with pts <= target, stopping early at the index's expected frame."""
        best = None
        while True:
            frame = self._lookahead if self._lookahead is not None else self._next()
            self._lookahead = None
            if frame is None:
                return best
            if frame.pts > target_pts:
                self._lookahead = frame
                return best
            best = frame
            self.position = frame.pts
            if frame.pts == wanted_pts:
                return best

    def _restart(self, seek_pts: int | None) -> None:
        if seek_pts is None:
            self._container.seek(0)  # AV_TIME_BASE units: the start of the file
        else:
            self._container.seek(seek_pts, stream=self._stream, backward=True, any_frame=False)
        self._frames = self._container.decode(self._stream)
        self._lookahead = None
        self.position = None

    def _next(self) -> av.VideoFrame | None:
        try:
            for frame in self._frames:
                if frame.pts is not None:
                    return frame
        except av.error.FFmpegError as error:
            raise VideoError(f"decoding failed ({_reason(error)})") from error
        return None


def _open_container(path: Path) -> av.container.InputContainer:
    if not path.exists():
        raise VideoError("no such file")
    if path.is_dir():
        raise VideoError("is a directory, not a video file")
    if path.stat().st_size == 0:
        raise VideoError("empty file (0 bytes)")
    try:
        return av.open(str(path), mode="r")
    except av.error.FFmpegError as error:
        with path.open("rb") as handle:
            is_mp4 = handle.read(12)[4:8] == b"ftyp"
        what = "a truncated or corrupt MP4/MOV file" if is_mp4 else "not a readable video"
        raise VideoError(f"{what} ({_reason(error)})") from error


def _build_index(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> FrameIndex:
    """Demux (no decode) every packet of the stream to collect timestamps and keyframes."""
    pts: list[int] = []
    keyframes: list[int] = []
    end_pts = None
    packets = 0
    try:
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            packets += 1
            timestamp = packet.pts if packet.pts is not None else packet.dts
            if timestamp is None or packet.is_discard:
                continue
            pts.append(timestamp)
            if packet.is_keyframe:
                keyframes.append(timestamp)
            if packet.duration:
                end_pts = max(end_pts if end_pts is not None else timestamp, timestamp + packet.duration)
    except av.error.FFmpegError as error:
        raise VideoError(f"truncated or corrupt ({_reason(error)})") from error
    if stream.frames and packets < stream.frames:
        raise VideoError(f"truncated: {packets} of the {stream.frames} frames it declares are in the file")
    if not pts:
        raise VideoError("the video stream has no frames")
    pts.sort()
    keyframes.sort()
    if not keyframes or keyframes[0] > pts[0]:
        keyframes.insert(0, pts[0])  # decoding starts at the first packet whatever its flag says
    last = pts[-1]
    if end_pts is None or end_pts <= last:
        end_pts = last + _typical_frame_duration(pts, stream)
    container.seek(0)
    return FrameIndex(np.asarray(pts, dtype=np.int64), np.asarray(keyframes, dtype=np.int64), int(end_pts))


def _typical_frame_duration(pts: list[int], stream: av.video.stream.VideoStream) -> int:
    """Display time of the last frame when the container does not say: the median frame interval."""
    if len(pts) > 1:
        return max(1, int(np.median(np.diff(pts))))
    rate = stream.average_rate or stream.guessed_rate
    return max(1, round(1 / (rate * stream.time_base))) if rate else 1


def _to_rgb(frame: av.VideoFrame) -> np.ndarray:
    """RGB uint8, turned the way the display matrix says (phone videos)."""
    rgb = frame.to_ndarray(format="rgb24")
    quarter_turns = round(frame.rotation / 90) % 4  # counter-clockwise, as FFmpeg's display matrix angle
    return np.ascontiguousarray(np.rot90(rgb, quarter_turns)) if quarter_turns else rgb


def _reason(error: av.error.FFmpegError) -> str:
    return getattr(error, "strerror", None) or str(error)

