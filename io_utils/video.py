"""Exact, cost-proportional frame reading with PyAV.

Which frame is on screen at time ``t`` is decided from presentation timestamps, exactly, while decoding as
little as possible:

- Before decoding, a :class:`StreamIndex` gives the keyframe positions, the first frame's start, the last
  frame's end and the frame count. MP4/MOV/AVI carry an index that the demuxer reads on opening, so only the
  first packets and the last keyframe interval are demuxed; other files (MKV/WebM without full cues,
  fragmented MP4, MPEG-TS) get one demux pass over the packets, which reads but does not decode.
- To take the frame at ``t``, the reader seeks to the keyframe before ``t`` when that is ahead of where the
  decoder is (sparse targets), or keeps decoding forward (dense targets). It demuxes a few packets ahead of
  the decoder: packets come in decoding order, and a packet's pts is never below its dts, so once a demuxed
  dts passes ``t`` no later packet can be shown at or before ``t``. The frame on screen at ``t`` is then the
  known packet with the largest pts ``<= t``, and decoding stops as soon as that frame comes out. Where the
  index came from a pass over the packets it lists every frame's pts, and those answer instead (Matroska has no
  dts, and FFmpeg's guesses for its B-frames break the rule above).
- A seek is checked, never trusted: where the demuxer refuses it or lands past the keyframe, an earlier one is
  tried, then decoding forward from the start, for which the file is opened again (see :class:`_Input`).
- The video stream is the one players show (:func:`chosen_stream`), never a cover picture, and frames are
  turned and mirrored as their display matrix says (:class:`Orientation`).

So the targets fall into keyframe intervals, and each interval is decoded from its keyframe up to its last
target, once: sparse sampling decodes only from each target's keyframe up to the target, dense sampling is one
sequential pass, and memory holds a few compressed packets and one decoded frame. When every interval's frames
fit in a decoder's buffer (``DECODED_BYTES_PER_DECODER``; subsampled reads such as ``uni_N`` or ``fix_1``), a
few intervals are decoded at once, each by its own demuxer and decoder (:class:`_ParallelIntervals`), and
their frames are yielded in order. The frames are the same: each interval is decoded as one decoder would.
"""
from __future__ import annotations

import bisect
import os
import queue
import struct
import threading
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, Iterator, Sequence

import av
import numpy as np

from io_utils.activity import ACTIVITY, READER
from io_utils.errors import VideoError
from io_utils.limits import InputLimits
from io_utils.sources import Source, as_source, byte_size, for_reading, open_binary

# Decoders that drop exactly the frames no other frame refers to (skip_frame NONREF): H.264 and HEVC by the NAL
# units' reference flags, MPEG-1/2/4 part 2 their B-frames. VP9, AV1 and the rest decode every frame.
SKIPPABLE_CODECS = frozenset({"h264", "hevc", "mpeg4", "mpeg2video", "mpeg1video"})

MAX_DECODERS = 4  # keyframe intervals one reader decodes at once
DECODED_BYTES_PER_DECODER = 128 << 20  # decoded frames one of them may hold ahead of the consumer
_REORDER_PROBE_FRAMES = 32  # frames decoded on opening an AVI with B-frames, to see whether their times go back


@dataclass(frozen=True)
class Frame:
    """One decoded frame, already rotated as it is meant to be displayed."""

    rgb: np.ndarray  # (H, W, 3) uint8
    pts: int
    time_ms: float


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


class VideoReader:
    """Reads the frames on screen at given times from one video file.

    Use as a context manager; ``read_at`` yields one :class:`Frame` per target, in target order.
    """

    def __init__(self, path: str | os.PathLike | Source, threads: bool = True, skip_unshown: bool = True,
                 decoders: int | None = None, index: StreamIndex | None = None, thread_count: int = 0,
                 limits: InputLimits | None = None):
        """``threads``: FFmpeg's frame and slice threads (``thread_count`` of them, 0: FFmpeg's choice), and
        keyframe intervals decoded at once (else one thread); ``skip_unshown``: let the decoder drop the
        non-reference frames between the frames taken (see ``_ForwardDecoder``); ``decoders``: how many intervals
        at most are decoded at once (default: one per core, up to ``MAX_DECODERS``; 1 without ``threads``);
        ``index``: the file's :class:`StreamIndex` when it is already known (see :meth:`reopened`); ``limits``:
        the bounds on frame size, frame count and duration, checked before decoding (default: the defaults)."""
        self.path = for_reading(as_source(path))
        self._limits = limits or InputLimits()
        self._skip_unshown = skip_unshown
        self._decoders = (decoders or min(MAX_DECODERS, _usable_cores())) if threads else 1
        self._decoder: _ForwardDecoder | None = None  # for read_interval, made on first use
        self._input = _Input(self.path)
        try:
            self._stream = self._input.stream
            self._limits.check_frames(self._stream.codec_context.width, self._stream.codec_context.height)
            if threads:
                self._stream.thread_type = "AUTO"
                if thread_count:
                    self._stream.codec_context.thread_count = thread_count
            else:
                self._stream.codec_context.thread_count = 1
            self.time_base: Fraction = self._stream.time_base
            self.index = index or _index_from_container(self._input, byte_size(self.path)) or \
                _index_by_demuxing(self._input, self._limits)
            self._limits.check_frame_count(self.index.num_frames)
            self._limits.check_duration(float((self.index.end_pts - self.index.start_pts) * self.time_base))
            if index is None:
                self._check_presentation_times()
        except av.error.FFmpegError as error:
            self.close()
            raise VideoError(f"truncated or corrupt ({error_reason(error)})") from error
        except BaseException:
            self.close()
            raise
        self.fps = float(self._stream.average_rate or self._stream.guessed_rate or 0.0)
        self.start_pts = self.index.start_pts
        self.end_pts = self.index.end_pts
        self.num_frames = self.index.num_frames
        self.rotation: int | None = None  # the display matrix's angle, known once a frame is decoded
        self.mirrored: bool | None = None  # whether the display matrix also mirrors the frame, likewise

    def _check_presentation_times(self) -> None:
        """AVI stores no timestamps: FFmpeg numbers its packets in decoding order, which are presentation times
        only where frames are not reordered. With B-frames (H.264 in AVI) the decoded frames' times then go back;
        the first ones decoded show it, so such a file fails here, in words, instead of giving wrong frames (the
        decoder checks every frame it gives too)."""
        if self._input.format_name != "avi" or not self._stream.codec_context.has_b_frames:
            return
        decoder = _ForwardDecoder(self._input)
        for _ in range(_REORDER_PROBE_FRAMES):
            if decoder.next_frame() is None:
                break

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        self._input.close()

    def facts(self) -> dict[str, object]:
        """What a manifest records of the stream (nothing here needs decoding but the orientation): which stream
        of the file was read, and its pixel aspect ratio (features see the coded frame, see ``docs``)."""
        context = self._stream.codec_context
        aspect = self._stream.sample_aspect_ratio or context.sample_aspect_ratio
        return {"stream": self._stream.index, "codec": context.name, "width": context.width,
                "height": context.height, "pixel_aspect": str(aspect) if aspect else "1", "fps": self.fps,
                "frames": self.num_frames, "duration_s": self.duration_s, "rotation": self.rotation,
                "mirrored": self.mirrored}

    @property
    def duration_s(self) -> float:
        """From the first frame's start to the last frame's end."""
        return float((self.end_pts - self.start_pts) * self.time_base)

    def pts_to_ms(self, pts: int) -> float:
        return float((pts - self.start_pts) * self.time_base * 1000)

    def read_at(self, targets: Sequence[int]) -> Iterator[Frame]:
        """Yield the frame on screen at each target time (stream ticks, ascending)."""
        intervals = self._keyframe_intervals(targets)
        buffer_frames = self._frames_per_buffer()
        if self._decoders > 1 and len(intervals) > 1 and max(map(len, intervals)) <= buffer_frames:
            yield from _ParallelIntervals(self, intervals, self._decoders, buffer_frames).frames()
            return
        for interval in intervals:
            yield from self.read_interval(interval)

    def _keyframe_intervals(self, targets: Sequence[int]) -> list[list[int]]:
        """``targets`` cut where a keyframe lies between two of them: each part is decoded from its keyframe
        (what lies between the parts is not decoded at all)."""
        intervals: list[list[int]] = []
        previous_keyframe = None
        for target in targets:
            keyframe = self.index.keyframe_before(target)
            if keyframe != previous_keyframe:
                intervals.append([])
                previous_keyframe = keyframe
            intervals[-1].append(target)
        return intervals

    def read_interval(self, targets: Sequence[int]) -> Iterator[Frame]:
        """The frame on screen at each target (ascending, all within one keyframe interval), decoded from the
        keyframe before the first: what :meth:`read_at` does for each interval it cuts its targets into."""
        if self._decoder is None:
            self._decoder = _ForwardDecoder(self._input, self._skip_unshown, self.index.shown)
        decoder = self._decoder
        decoder.seek(self.index.seek_points(targets[0]), targets[0])
        last: Frame | None = None
        for index, target in enumerate(targets):
            if last is not None and decoder.on_screen(target) == last.pts:
                yield last  # several targets within one frame's display time
                continue
            found = decoder.frame_at(target, targets[index + 1] if index + 1 < len(targets) else None)
            if found is None:
                raise VideoError(f"no decodable frame at {float((target - self.start_pts) * self.time_base):.3f} s "
                                 "(truncated or corrupt)")
            last = self._shown(found)
            yield last

    def _frames_per_buffer(self) -> int:
        """How many decoded frames fit in one decoder's share of memory."""
        context = self._stream.codec_context
        return max(1, DECODED_BYTES_PER_DECODER // max(1, 3 * context.width * context.height))

    def reopened(self, thread_count: int) -> VideoReader:
        """Another reader of this file, with its own demuxer and a decoder of ``thread_count`` frame threads, and
        this reader's index (nothing is indexed again): for decoding another keyframe interval at the same time."""
        return VideoReader(self.path, skip_unshown=self._skip_unshown, decoders=1, index=self.index,
                           thread_count=thread_count, limits=self._limits)

    def frame_pts(self) -> list[int]:
        """The presentation time of every frame, ascending, from one pass over the packets: nothing is decoded.
        Frame ``k`` of a sequential decode is the frame that ``read_at([frame_pts()[k]])`` gives."""
        if self.index.shown is not None:
            return self.index.shown.tolist()
        self._input.rewind()
        return sorted(pts for _, pts in self._input.packets() if pts is not None)

    def frame_times_ms(self, targets: Sequence[int] | None = None) -> list[float]:
        """Times (ms) of the frames that :meth:`read_at` would give for ``targets`` (every frame for None), from
        one pass over the packets: nothing is decoded."""
        return [self.pts_to_ms(pts) for pts in on_screen(self.frame_pts(), targets)]

    def read_all(self) -> Iterator[Frame]:
        """Every frame, in presentation order: one sequential pass from the start."""
        decoder = _ForwardDecoder(self._input)
        while (frame := decoder.next_frame()) is not None:
            yield self._shown(frame)

    def _shown(self, frame: av.VideoFrame) -> Frame:
        """``frame`` as RGB, turned and mirrored as its display matrix says."""
        orientation = Orientation.of(frame)
        self.rotation, self.mirrored = orientation.rotation, orientation.mirrored
        return Frame(orientation.apply(frame.to_ndarray(format="rgb24")), int(frame.pts), self.pts_to_ms(frame.pts))


def on_screen(shown: list[int], targets: Sequence[int] | None) -> list[int]:
    """Of frames shown at ``shown`` (ascending), the one on screen at each target (every frame for None)."""
    if targets is None:
        return shown
    return [shown[max(bisect.bisect_right(shown, target) - 1, 0)] for target in targets]


class _ParallelIntervals:
    """Decodes keyframe intervals on ``decoders`` threads, each with its own demuxer and decoder, and yields their
    frames in order.

    Decoder ``k`` takes intervals ``k``, ``k + decoders``, ... in turn and puts their frames into its own queue
    of ``buffer_frames``, which holds at least one whole interval: so while the consumer takes the frames of one
    interval, the other decoders finish theirs instead of waiting. Why: FFmpeg's frame threads wait on each
    other (a frame decodes only as far as the rows it refers to are done, and with the non-reference frames
    skipped each frame refers to the one before), and their pipeline drains at every seek; intervals share
    nothing. Each decoder still gets a few frame threads, so that one long interval does not leave the other
    cores idle. Memory: ``decoders`` buffers of at most ``DECODED_BYTES_PER_DECODER``.
    """

    _INTERVAL_END = object()

    def __init__(self, reader: VideoReader, intervals: list[list[int]], decoders: int, buffer_frames: int):
        self._reader, self._intervals = reader, intervals
        self._decoders = min(decoders, len(intervals))
        self._frame_threads = max(2, _usable_cores() // self._decoders)
        self._queues = [queue.Queue(maxsize=buffer_frames) for _ in range(self._decoders)]
        self._stop = threading.Event()

    def frames(self) -> Iterator[Frame]:
        threads = [threading.Thread(target=self._decode, args=(first,), name=f"interval-decoder-{first}", daemon=True)
                   for first in range(self._decoders)]
        for thread in threads:
            thread.start()
        try:
            for index in range(len(self._intervals)):
                source = self._queues[index % self._decoders]
                while (item := source.get()) is not self._INTERVAL_END:
                    if isinstance(item, BaseException):
                        raise item
                    yield item
        finally:
            self._stop.set()  # also when the consumer stops early: each thread ends at its next frame taken
            for thread in threads:
                thread.join()

    def _decode(self, first: int) -> None:
        output = self._queues[first]
        try:
            with self._reader.reopened(self._frame_threads) as reader:
                for index in range(first, len(self._intervals), self._decoders):
                    for frame in reader.read_interval(self._intervals[index]):
                        if not self._put(output, frame):
                            return
                    self._reader.rotation, self._reader.mirrored = reader.rotation, reader.mirrored
                    if not self._put(output, self._INTERVAL_END):
                        return
        except BaseException as error:  # the consumer raises it when it reaches this interval
            self._put(output, error)

    def _put(self, output: queue.Queue, item: object) -> bool:
        """Wait for room in ``output``; False once the consumer has stopped."""
        while not self._stop.is_set():
            try:
                output.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False


class _ForwardDecoder:
    """Decodes forward from a keyframe, demuxing just far enough ahead to know which frame is on screen.

    With ``skip_unshown``, on codecs whose decoder can drop non-reference frames (``SKIPPABLE_CODECS``), every
    packet shown before the frame wanted next, other than that frame, is sent with ``skip_frame = NONREF``: if no
    other frame refers to it (a disposable B-frame), it is not decoded, and nothing else changes. H.264 packets
    in MP4/MKV form that are disposable are not even sent (``_disposable_h264``). The frames wanted are decoded
    as usual, so no target's frame is ever skipped. The setting is read per packet,
    also with frame threading (FFmpeg copies it to the decoding thread as each packet is submitted).
    """

    def __init__(self, source: _Input, skip_unshown: bool = False, shown: np.ndarray | None = None):
        """``shown``: every frame's presentation time, ascending, where the index knows them
        (:attr:`StreamIndex.shown`)."""
        self._input = source
        self._shown = shown
        self._stream = stream = source.stream
        self._time_base = stream.time_base
        self._skips = skip_unshown and stream.codec_context.name in SKIPPABLE_CODECS
        self._skip_mode = stream.codec_context.skip_frame
        self._nal_length = _avcc_nal_length(stream) if self._skips else None
        self._restart(None)

    def seek(self, seek_points: list[int], target: int) -> None:
        """Seek to the first of ``seek_points`` whose first packet is a keyframe shown at or before ``target``,
        else go back to the start and decode forward. Some demuxers land past the keyframe they were asked for
        (MPEG-TS, whose seek searches timestamps): decoding from a packet that refers to frames before it gives
        no frame at all. Others refuse a seek outright (Matroska before its first cue, an MP4 whose first
        stream is a cover picture)."""
        for seek_pts in seek_points:
            if not self._restart(seek_pts):
                continue
            self._demux_one()
            if self._pending and self._pending[0].is_keyframe and self._known_pts and self._known_pts[0] <= target:
                return
        self._restart(None)

    def on_screen(self, target: int) -> int | None:
        """The pts of the frame shown at ``target``: from the index where it lists every frame, else among the
        packets from the last seek on, demuxed until their decoding timestamps pass ``target`` (exact)."""
        if self._shown is not None:
            position = int(np.searchsorted(self._shown, target, side="right"))
            return int(self._shown[position - 1]) if position else None
        while not self._eof and (self._dts_bound is None or self._dts_bound <= target):
            self._demux_one()
        position = bisect.bisect_right(self._known_pts, target)
        return self._known_pts[position - 1] if position else None

    def frame_at(self, target: int, following: int | None = None) -> av.VideoFrame | None:
        """Decode up to the frame on screen at ``target`` (falls back to "last frame with pts <= target").

        ``following``: the next target, reached by decoding on from here. The packets shown between the two
        frames wanted are not wanted either: the decoder may drop those that nothing refers to while it is
        still catching up to the first one (its reordering delay and frame threads make it take packets ahead).
        """
        wanted = self.on_screen(target)
        self._wanted = wanted
        self._needed_from = wanted if following is None else max(wanted, self.on_screen(following))
        best = None
        while (frame := self.next_frame()) is not None:
            if frame.pts > target:
                self._frames.appendleft(frame)  # it may be the answer for the next target
                break
            best = frame
            if frame.pts == wanted:
                break
        return best

    def _restart(self, seek_pts: int | None) -> bool:
        """Go to the keyframe at or before ``seek_pts`` (None: the start of the file); False if the demuxer
        refuses the seek (nothing is read then until the next restart)."""
        if seek_pts is None:
            self._input.rewind()
        elif not self._input.seek(seek_pts):
            return False
        self._stream.codec_context.flush_buffers()  # also leaves the draining state after a flush at the end
        self._packets: Iterator[tuple[av.Packet, int | None]] | None = None  # read from here on first need
        self._pending: deque[av.Packet] = deque()  # demuxed, not yet sent to the decoder
        self._frames: deque[av.VideoFrame] = deque()  # decoded, not yet taken
        self._known_pts: list[int] = []  # sorted pts of every packet demuxed since the seek
        self._needed_from: int | None = None  # packets shown before this may be dropped, if nothing refers to them
        self._wanted: int | None = None  # ... except the frame wanted now
        self._dts_bound: int | None = None  # no packet still to come has pts below this
        self._eof = self._flushed = False
        self._last_decoded: int | None = None  # the time of the last frame out of the decoder
        return True

    def _demux_one(self) -> None:
        if self._packets is None:
            self._packets = self._input.packets()
        try:
            packet, shown_at = next(self._packets)
        except StopIteration:
            self._eof = True
            return
        except av.error.FFmpegError as error:
            raise VideoError(f"truncated or corrupt ({error_reason(error)})") from error
        if shown_at is not None:  # discarded packets are decoded all the same, never shown
            bisect.insort(self._known_pts, shown_at)
        if packet.dts is not None:
            self._dts_bound = packet.dts
        self._pending.append(packet)

    def next_frame(self) -> av.VideoFrame | None:
        try:
            while not self._frames:
                if self._pending:
                    packet = self._pending.popleft()
                    unshown = self._unshown(packet)
                    if unshown and self._nal_length and _disposable_h264(memoryview(packet), self._nal_length):
                        continue  # nothing refers to it and it is not wanted: the decoder need not see it
                    self._set_skip(unshown)
                    ACTIVITY.note(READER, "decoding", packet.pts, self._time_base)
                    decoded = self._stream.codec_context.decode(packet)
                elif not self._eof:
                    self._demux_one()
                    continue
                elif not self._flushed:
                    self._flushed = True
                    decoded = self._stream.codec_context.decode(None)
                else:
                    return None
                self._frames.extend(self._in_order(decoded))
        except av.error.FFmpegError as error:
            raise VideoError(f"decoding failed ({error_reason(error)})") from error
        return self._frames.popleft()

    def _in_order(self, decoded: list[av.VideoFrame]) -> Iterator[av.VideoFrame]:
        """The frames that carry a time. A decoder gives frames in presentation order, so a time that goes back
        means the container's timestamps are not presentation times (AVI, which stores none, with H.264
        B-frames): which frame is on screen when cannot be known, and guessing would give wrong frames."""
        for frame in decoded:
            if frame.pts is None:
                continue
            if self._last_decoded is not None and frame.pts < self._last_decoded:
                back_s, to_s = (float(pts * self._time_base) for pts in (self._last_decoded, frame.pts))
                raise VideoError(f"its timestamps are not presentation times: decoded frames go back from "
                                 f"{back_s:.3f} s to {to_s:.3f} s (as H.264 with B-frames in AVI does)")
            self._last_decoded = frame.pts
            yield frame

    def _unshown(self, packet: av.Packet) -> bool:
        """Whether ``packet`` is shown before the frame wanted next (when skipping is on)."""
        if not self._skips or self._needed_from is None:
            return False
        shown = packet.pts if packet.pts is not None else packet.dts
        return shown is not None and shown < self._needed_from and shown != self._wanted

    def _set_skip(self, unshown: bool) -> None:
        if not self._skips:
            return
        mode = "NONREF" if unshown else "DEFAULT"
        if mode != self._skip_mode:
            self._stream.codec_context.skip_frame = self._skip_mode = mode


def _avcc_nal_length(stream: av.video.stream.VideoStream) -> int | None:
    """The NAL length field size of H.264 in MP4/MKV form (avcC extradata); None for other codecs and for
    Annex B streams (start codes, as in MPEG-TS)."""
    extradata = stream.codec_context.extradata
    if stream.codec_context.name != "h264" or not extradata or len(extradata) < 7 or extradata[0] != 1:
        return None
    return (extradata[4] & 3) + 1


_H264_SLICES = frozenset({1, 2, 3, 4})  # coded slices (and data partitions) of non-IDR pictures
_H264_HARMLESS = frozenset({6, 9, 12})  # SEI, access unit delimiter, filler: about this picture only


def _disposable_h264(data: memoryview, nal_length: int) -> bool:
    """Whether an H.264 packet (length-prefixed NAL units) is a picture that no other picture refers to: each slice
    has ``nal_ref_idc`` 0, and it carries nothing else the decoder keeps (no parameter set, no IDR). Sending it
    to a decoder set to skip non-reference frames changes nothing; not sending it saves the decoder's per-packet
    work (and a frame thread's turn)."""
    position, end, slices = 0, len(data), 0
    while position < end:
        if position + nal_length > end:
            return False
        size = int.from_bytes(data[position : position + nal_length], "big")
        position += nal_length
        if size == 0 or position + size > end:
            return False
        header = data[position]
        kind = header & 0x1F
        if kind in _H264_SLICES:
            if header & 0x60:  # nal_ref_idc: some picture refers to this one
                return False
            slices += 1
        elif kind not in _H264_HARMLESS:
            return False
        position += size
    return slices > 0


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def open_container(source: Source, what: str = "video") -> tuple[av.container.InputContainer, BinaryIO | None]:
    """The source opened for reading, and the file object PyAV reads it through (None for a local file, which
    FFmpeg opens itself); a missing, empty or unreadable one is a :class:`VideoError` saying so."""
    if isinstance(source, Path):
        if not source.exists():
            raise VideoError("no such file")
        if source.is_dir():
            raise VideoError(f"is a directory, not a {what} file")
    if byte_size(source) == 0:
        raise VideoError("empty file (0 bytes)")
    ACTIVITY.note(READER, "opening the input")
    handle = None if isinstance(source, Path) else open_binary(source)
    try:
        # Tags (title, encoder...) are not ours to judge: a GBK or Shift-JIS title must not make a good video
        # unreadable, so bytes that are not UTF-8 are replaced (U+FFFD) instead of failing the open.
        container = av.open(str(source) if handle is None else handle, mode="r", metadata_errors="replace")
    except BaseException as error:
        if handle is not None:
            handle.close()
        if not isinstance(error, av.error.FFmpegError):
            raise
        with open_binary(source) as start:
            is_mp4 = start.read(12)[4:8] == b"ftyp"
        problem = "a truncated or corrupt MP4/MOV file" if is_mp4 else f"not a readable {what}"
        raise VideoError(f"{problem} ({error_reason(error)})") from error
    return container, handle


def chosen_stream(container: av.container.InputContainer, kind: str) -> av.stream.Stream:
    """The stream of ``kind`` ("video" or "audio") that FFmpeg's players show: a cover picture (an attached
    picture, often stream 0 of a tagged MP4) is never a video; of the rest, one FFmpeg can decode, the one marked
    default, else the largest picture (the most channels), else the first. A file without one is a
    :class:`VideoError` that says what the file has instead."""
    candidates = [stream for stream in container.streams if stream.type == kind and not is_cover(stream)]
    if not candidates:
        what = sorted({"a cover picture" if is_cover(stream) else stream.type for stream in container.streams})
        raise VideoError(f"no {kind} stream (only {' and '.join(what)})" if what else
                         "no streams (truncated or not a video)")
    return decodable(min(candidates, key=lambda stream: (stream.codec_context is None,
                                                         not stream.disposition & av.stream.Disposition.default,
                                                         -_stream_size(stream), stream.index)))


def is_cover(stream: av.stream.Stream) -> bool:
    """Whether ``stream`` is a cover picture (an attached picture: album art, a thumbnail), not a video."""
    return stream.type == "video" and bool(stream.disposition & av.stream.Disposition.attached_pic)


def _stream_size(stream: av.stream.Stream) -> int:
    context = stream.codec_context
    if context is None:
        return 0
    return context.width * context.height if stream.type == "video" else context.channels


class _Input:
    """An opened file and its chosen video stream, able to go back to the file's start.

    A seek to the start is not the start: Matroska refuses a seek before its first cue (a video that starts
    after its audio), and a file whose first timestamps are negative lands past them. So going back opens the
    file again (about a millisecond; the index and the decoder are kept) unless nothing has been read yet.
    Packets of the new opening are decoded by the first opening's decoder: ``stream`` stays the same object, so
    the first opening stays open, and the one before the new one is closed (two at most).
    """

    def __init__(self, source: Source):
        self._source = source
        self._openings: list[tuple[av.container.InputContainer, BinaryIO | None]] = []
        self._open()
        try:
            self.stream: av.video.stream.VideoStream = chosen_stream(self._container, "video")
        except BaseException:
            self.close()
            raise
        self._demuxed_stream = self.stream

    def _open(self) -> None:
        if len(self._openings) > 1:
            close_container(*self._openings.pop())
        self._container, handle = open_container(self._source)
        self._openings.append((self._container, handle))
        self._fresh, self._rewound = True, False

    def rewind(self) -> None:
        """Be at the first packet of the file: the file is opened again when packets are next read, unless a
        seek comes first (as it does before decoding from a keyframe) or nothing has been read yet."""
        self._rewound = True

    def seek(self, pts: int) -> bool:
        """Go to the keyframe at or before ``pts`` (what the demuxer finds: check where it landed); False if the
        demuxer refuses."""
        self._fresh = self._rewound = False
        try:
            self._container.seek(pts, stream=self._demuxed_stream, backward=True, any_frame=False)
        except av.error.FFmpegError:
            return False
        return True

    @property
    def format_name(self) -> str:
        return self._container.format.name

    def packets(self) -> Iterator[tuple[av.Packet, int | None]]:
        """The stream's packets from where the input is (see :func:`_demux`)."""
        if self._rewound and not self._fresh:
            self._open()
            self._demuxed_stream = self._container.streams[self.stream.index]
        self._fresh = self._rewound = False
        return _demux(self._container, self._demuxed_stream)

    def close(self) -> None:
        for container, handle in self._openings:
            close_container(container, handle)
        self._openings.clear()


def decodable(stream: av.stream.Stream) -> av.stream.Stream:
    """``stream``, if FFmpeg has a decoder for it: a damaged header can leave a stream whose codec is unknown."""
    if stream.codec_context is None:
        raise VideoError(f"the {stream.type} stream's codec is unknown (a damaged header, or a codec FFmpeg does "
                         "not decode)")
    return stream


def close_container(container: av.container.InputContainer, handle: BinaryIO | None) -> None:
    container.close()
    if handle is not None:
        handle.close()


def _index_from_container(source: _Input, file_size: int) -> StreamIndex | None:
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


def _first_pts(source: _Input) -> tuple[int, int]:
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


def _end_of_last_frame(source: _Input, last_keyframe: int) -> int | None:
    """Demux the last keyframe interval only: the end is the largest pts + duration found there (None if the
    demuxer cannot seek there, or lands past it)."""
    if not source.seek(last_keyframe):
        return None
    shown = [(shown_at, packet.duration) for packet, shown_at in source.packets() if shown_at is not None]
    if not shown or min(pts for pts, _ in shown) > last_keyframe:
        return None
    return _end_of(shown, source.stream)


def _index_by_demuxing(source: _Input, limits: InputLimits) -> StreamIndex:
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


def _demux(container, stream) -> Iterator[tuple[av.Packet, int | None]]:
    """The stream's non-empty packets, each with the time it is shown: its pts, else its dts; None for a
    packet that is decoded but never shown (discarded) or that carries no timestamp."""
    packets, time_base = container.demux(stream), stream.time_base
    shown_at = None
    while True:
        ACTIVITY.note(READER, "reading the input", shown_at, time_base)  # the read may block
        packet = next(packets, None)
        if packet is None:
            return
        if packet.size == 0:
            continue  # the flush packet at the end
        shown_at = packet.pts if packet.pts is not None else packet.dts
        yield packet, None if packet.is_discard else shown_at


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


@dataclass(frozen=True)
class Orientation:
    """How a frame is meant to be shown, from its display matrix (phones store the camera's pixels and this
    matrix instead of turning them): ``quarter_turns`` counter-clockwise after an optional left-right mirror.
    Players (and FFmpeg's autorotate) show a frame so; PyAV's ``frame.rotation`` alone would turn a mirrored
    frame upside down instead."""

    quarter_turns: int = 0
    mirrored: bool = False

    @property
    def rotation(self) -> int:
        """Degrees counter-clockwise, as FFmpeg states a display matrix's angle (-90: turned clockwise)."""
        return (self.quarter_turns * 90 + 180) % 360 - 180

    @classmethod
    def of(cls, frame: av.VideoFrame) -> Orientation:
        matrix = frame.side_data.get(av.sidedata.sidedata.Type.DISPLAYMATRIX)
        if matrix is None:
            return cls()
        a, b, _, c, d, *_ = struct.unpack("<9i", bytes(matrix))
        # A pixel at (x, y) is shown at (a x + c y, b x + d y) (y downwards): the matrix's 2x2 part.
        mirrored = a * d - b * c < 0
        if mirrored:  # mirror first, so that what is left is a rotation: (a, b) -> (-a, -b)
            a, b = -a, -b
        return cls(round(np.degrees(np.arctan2(-b, a)) / 90) % 4, mirrored)

    def apply(self, rgb: np.ndarray) -> np.ndarray:
        if self.mirrored:
            rgb = rgb[:, ::-1]
        if self.quarter_turns:
            rgb = np.rot90(rgb, self.quarter_turns)
        return np.ascontiguousarray(rgb) if self.mirrored or self.quarter_turns else rgb


def error_reason(error: av.error.FFmpegError) -> str:
    return getattr(error, "strerror", None) or str(error)
