"""What a video stream holds before anything is decoded (:class:`StreamIndex`): its keyframes, its first frame's
start, its last frame's end and its frame count. MP4/MOV/AVI carry an index that the demuxer reads on opening
(:func:`index_from_container`: only the first packets and the last keyframe interval are demuxed); other files get
one pass over the packets, which reads but does not decode (:func:`index_by_demuxing`, which keeps every frame's
pts)."""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from io_utils.containers import MediaInput
from io_utils.errors import VideoError
from io_utils.limits import InputLimits


@dataclass(frozen=True)
class StreamIndex:
    """What is known before decoding, in stream ticks."""

    keyframes: np.ndarray  # presentation times of the keyframes (where the decoder can start)
    start_pts: int  # presentation time of the first frame
    end_pts: int  # presentation time of the last frame plus its duration
    num_frames: int
    # Every frame's presentation time, ascending, where the index comes from a pass over the packets. Which frame
    # is on screen at a time is then known without trusting decoding timestamps, which Matroska does not store
    # (FFmpeg's guesses for B-frames are not monotonic).
    shown: np.ndarray | None = None

    def keyframe_before(self, target: int) -> int:
        return int(self.keyframes[max(int(np.searchsorted(self.keyframes, target, side="right")) - 1, 0)])

    def seek_points(self, target: int, fallbacks: int = 2) -> list[int]:
        """Where to seek for ``target``: the target itself (demuxers land on the keyframe shown at or before
        it), then earlier keyframes, for demuxers that land past the wanted one."""
        position = int(np.searchsorted(self.keyframes, target, side="right")) - 1
        return [target] + [int(p) for p in self.keyframes[max(position - fallbacks, 0) : max(position, 0)][::-1]]


def index_from_container(source: MediaInput, file_size: int) -> StreamIndex | None:
    """Use the index the demuxer read on opening, if it lists every frame (MP4/MOV/AVI); else None (also when
    the demuxer cannot seek to the last keyframe: the pass over the packets then finds the end)."""
    stream = source.stream
    entries = stream.index_entries
    if not stream.frames or entries is None or len(entries) < stream.frames:
        return None
    keyframe_dts, frames, present = [], 0, 0
    for entry in entries:
        if entry.is_discard:
            continue
        frames += 1
        present += entry.pos + entry.size <= file_size
        if entry.is_keyframe:
            keyframe_dts.append(entry.timestamp)
    if present < frames:
        raise VideoError(f"truncated: {present} of the {frames} frames it declares are in the file")
    if not keyframe_dts:
        return None
    start, composition_offset = _first_pts(source)
    keyframes = np.asarray(sorted(keyframe_dts), dtype=np.int64) + composition_offset
    end = _end_of_last_frame(source, int(keyframes[-1]))
    return None if end is None else StreamIndex(keyframes, start, end, frames)


def _first_pts(source: MediaInput) -> tuple[int, int]:
    """The first frame's pts, and pts - dts of the first packet (the index lists keyframes by dts).

    Demuxes from the start until no later packet can be shown earlier (its dts passes the smallest pts).
    """
    source.rewind()
    first = offset = None
    for packet, shown_at in source.packets():
        if shown_at is None:
            continue
        if offset is None:
            offset = shown_at - packet.dts if packet.dts is not None else 0
        first = shown_at if first is None else min(first, shown_at)
        if packet.dts is not None and packet.dts >= first:
            break
    if first is None:
        raise VideoError("the video stream has no frames")
    return first, offset


def _end_of_last_frame(source: MediaInput, last_keyframe: int) -> int | None:
    """Demux the last keyframe interval only: the end is the largest pts + duration found there (None if the
    demuxer cannot seek there, or lands past it)."""
    if not source.seek(last_keyframe):
        return None
    shown = [(shown_at, packet.duration) for packet, shown_at in source.packets() if shown_at is not None]
    if not shown or min(pts for pts, _ in shown) > last_keyframe:
        return None
    return _end_of(shown, source.stream)


def index_by_demuxing(source: MediaInput, limits: InputLimits) -> StreamIndex:
    """One pass over the packets (no decoding) for files whose container does not index every frame; it stops
    past the frame count ``limits`` allow (the index of an endless stream would not fit in memory)."""
    stream = source.stream
    shown: list[tuple[int, int]] = []
    keyframes: list[int] = []
    packets = 0
    source.rewind()
    for packet, shown_at in source.packets():
        packets += 1
        limits.check_frame_count(packets)
        if shown_at is None:
            continue
        shown.append((shown_at, packet.duration))
        if packet.is_keyframe:
            _check_keyframe_order(keyframes[-1] if keyframes else None, shown_at, stream.time_base)
            keyframes.append(shown_at)
    if stream.frames and packets < stream.frames:
        raise VideoError(f"truncated: {packets} of the {stream.frames} frames it declares are in the file")
    if not shown:
        raise VideoError("the video stream has no frames")
    every = np.sort(np.fromiter((pts for pts, _ in shown), dtype=np.int64, count=len(shown)))
    first = int(every[0])
    keyframes = sorted(keyframes)
    if not keyframes or keyframes[0] > first:
        keyframes.insert(0, first)  # decoding starts at the first packet whatever its flag says
    return StreamIndex(np.asarray(keyframes, dtype=np.int64), first, _end_of(shown, stream), len(shown), every)


def _check_keyframe_order(previous: int | None, keyframe: int, time_base: Fraction) -> None:
    """Keyframes come in presentation order (nothing before one refers to what follows it), so a keyframe shown
    before the one before it is a jump back in time: two recordings joined (``cat a.ts b.ts``) whose times
    overlap, where a time no longer names one frame."""
    if previous is not None and keyframe < previous:
        raise VideoError(f"its timestamps jump back from {float(previous * time_base):.3f} s to "
                         f"{float(keyframe * time_base):.3f} s (recordings joined with overlapping times?): a time "
                         "no longer names one frame")


def _end_of(shown: list[tuple[int, int]], stream) -> int:
    """The end of the last frame from (pts, duration) pairs; without durations, the median frame interval."""
    pts = [timestamp for timestamp, _ in shown]
    last = max(pts)
    end = max((timestamp + duration for timestamp, duration in shown if duration), default=None)
    if end is not None and end > last:
        return end
    if len(pts) > 1:
        return last + max(1, int(np.median(np.diff(sorted(pts)))))
    rate = stream.average_rate or stream.guessed_rate
    return last + (max(1, round(1 / (rate * stream.time_base))) if rate else 1)
