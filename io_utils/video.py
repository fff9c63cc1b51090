"""Exact, cost-proportional frame reading with PyAV.

Which frame is on screen at time ``t`` is decided from presentation timestamps, exactly, while decoding as
little as possible:

- Before decoding, a :class:`StreamIndex` (``io_utils/stream_index.py``) gives the keyframe positions, the first frame's start, the last
  frame's end and the frame count. MP4/MOV/AVI carry an index that the demuxer reads on opening, so only the
  first packets and the last keyframe interval are demuxed; other files (MKV/WebM without full cues,
  fragmented MP4, MPEG-TS) get one demux pass over the packets, which reads but does not decode.
- To take the frame at ``t`` (``io_utils/forward_decoder.py``), the reader seeks to the keyframe before ``t``
  when that is ahead of where the decoder is (sparse targets), or keeps decoding forward (dense targets). It demuxes a few packets ahead of
  the decoder: packets come in decoding order, and a packet's pts is never below its dts, so once a demuxed
  dts passes ``t`` no later packet can be shown at or before ``t``. The frame on screen at ``t`` is then the
  known packet with the largest pts ``<= t``, and decoding stops as soon as that frame comes out. Where the
  index came from a pass over the packets it lists every frame's pts, and those answer instead (Matroska has no
  dts, and FFmpeg's guesses for its B-frames break the rule above).
- A seek is checked, never trusted: where the demuxer refuses it or lands past the keyframe, an earlier one is
  tried, then decoding forward from the start, for which the file is opened again (see ``io_utils/containers.py``'s :class:`MediaInput`).
- The video stream is the one players show (``io_utils/containers.py``'s :func:`chosen_stream`), never a cover picture, and frames are
  turned and mirrored as their display matrix says (:class:`Orientation`).

So the targets fall into keyframe intervals, and each interval is decoded from its keyframe up to its last
target, once: sparse sampling decodes only from each target's keyframe up to the target, dense sampling is one
sequential pass, and memory holds a few compressed packets and one decoded frame. When every interval's frames
fit in a decoder's buffer (``DECODED_BYTES_PER_DECODER``; subsampled reads such as ``uni_N`` or ``fix_1``), a
few intervals are decoded at once, each by its own demuxer and decoder (:class:`_ParallelIntervals`), and
their frames are yielded in order. The frames are the same: each interval is decoded as one decoder would.
"""
from __future__ import annotations

import os
import queue
import struct
import threading
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator, Sequence

import av
import numpy as np

from io_utils.containers import MediaInput, error_reason
from io_utils.errors import VideoError
from io_utils.forward_decoder import ForwardDecoder, on_screen
from io_utils.limits import InputLimits
from io_utils.sources import Source, as_source, byte_size, for_reading
from io_utils.stream_index import StreamIndex, index_by_demuxing, index_from_container


MAX_DECODERS = 4  # keyframe intervals one reader decodes at once
DECODED_BYTES_PER_DECODER = 128 << 20  # decoded frames one of them may hold ahead of the consumer
_REORDER_PROBE_FRAMES = 32  # frames decoded on opening an AVI with B-frames, to see whether their times go back


@dataclass(frozen=True)
class Frame:
    """One decoded frame, already rotated as it is meant to be displayed."""

    rgb: np.ndarray  # (H, W, 3) uint8
    pts: int
    time_ms: float


class VideoReader:
    """Reads the frames on screen at given times from one video file.

    Use as a context manager; ``read_at`` yields one :class:`Frame` per target, in target order.
    """

    def __init__(self, path: str | os.PathLike | Source, threads: bool = True, skip_unshown: bool = True,
                 decoders: int | None = None, index: StreamIndex | None = None, thread_count: int = 0,
                 limits: InputLimits | None = None):
        """``threads``: FFmpeg's frame and slice threads (``thread_count`` of them, 0: FFmpeg's choice), and
        keyframe intervals decoded at once (else one thread); ``skip_unshown``: let the decoder drop the
        non-reference frames between the frames taken (see ``ForwardDecoder``); ``decoders``: how many intervals
        at most are decoded at once (default: one per core, up to ``MAX_DECODERS``; 1 without ``threads``);
        ``index``: the file's :class:`StreamIndex` when it is already known (see :meth:`reopened`); ``limits``:
        the bounds on frame size, frame count and duration, checked before decoding (default: the defaults)."""
        self.path = for_reading(as_source(path))
        self._limits = limits or InputLimits()
        self._skip_unshown = skip_unshown
        self._decoders = (decoders or min(MAX_DECODERS, _usable_cores())) if threads else 1
        self._decoder: ForwardDecoder | None = None  # for read_interval, made on first use
        self._input = MediaInput(self.path)
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
            self.index = index or index_from_container(self._input, byte_size(self.path)) or \
                index_by_demuxing(self._input, self._limits)
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
        decoder = ForwardDecoder(self._input)
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
            self._decoder = ForwardDecoder(self._input, self._skip_unshown, self.index.shown)
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
        decoder = ForwardDecoder(self._input)
        while (frame := decoder.next_frame()) is not None:
            yield self._shown(frame)

    def _shown(self, frame: av.VideoFrame) -> Frame:
        """``frame`` as RGB, turned and mirrored as its display matrix says."""
        orientation = Orientation.of(frame)
        self.rotation, self.mirrored = orientation.rotation, orientation.mirrored
        return Frame(orientation.apply(frame.to_ndarray(format="rgb24")), int(frame.pts), self.pts_to_ms(frame.pts))


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


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


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


