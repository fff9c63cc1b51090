"""Decoding forward to the frames asked for (:class:`ForwardDecoder`), dropping the frames no other frame refers to
where the codec can (:data:`SKIPPABLE_CODECS`; an H.264 stream's disposable slices are recognised from its NAL
units), and which frame is on screen at a time (:func:`on_screen`)."""
from __future__ import annotations

import bisect
from collections import deque
from typing import Iterator, Sequence

import av
import numpy as np

from io_utils.activity import ACTIVITY, READER
from io_utils.containers import MediaInput, error_reason
from io_utils.errors import VideoError


# Decoders that drop exactly the frames no other frame refers to (skip_frame NONREF): H.264 and HEVC by the NAL
# units' reference flags, MPEG-1/2/4 part 2 their B-frames. VP9, AV1 and the rest decode every frame.
SKIPPABLE_CODECS = frozenset({"h264", "hevc", "mpeg4", "mpeg2video", "mpeg1video"})


def on_screen(shown: list[int], targets: Sequence[int] | None) -> list[int]:
    """Of frames shown at ``shown`` (ascending), the one on screen at each target (every frame for None)."""
    if targets is None:
        return shown
    return [shown[max(bisect.bisect_right(shown, target) - 1, 0)] for target in targets]


class ForwardDecoder:
    """Decodes forward from a keyframe, demuxing just far enough ahead to know which frame is on screen.

    With ``skip_unshown``, on codecs whose decoder can drop non-reference frames (``SKIPPABLE_CODECS``), every
    packet shown before the frame wanted next, other than that frame, is sent with ``skip_frame = NONREF``: if no
    other frame refers to it (a disposable B-frame), it is not decoded, and nothing else changes. H.264 packets
    in MP4/MKV form that are disposable are not even sent (``_disposable_h264``). The frames wanted are decoded
    as usual, so no target's frame is ever skipped. The setting is read per packet,
    also with frame threading (FFmpeg copies it to the decoding thread as each packet is submitted).
    """

    def __init__(self, source: MediaInput, skip_unshown: bool = False, shown: np.ndarray | None = None):
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
