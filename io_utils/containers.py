"""Opening media with PyAV: the container (from a path, a URL or a stream of bytes), the stream players pick
(:func:`chosen_stream`: decodable, default, largest, never a cover picture), and :class:`MediaInput`, one opened
file with its chosen stream that can go back to its start by opening the file again, instead of trusting a seek
to 0. FFmpeg's errors are said in words (:func:`error_reason`)."""
from __future__ import annotations

from pathlib import Path
from typing import BinaryIO, Iterator

import av

from io_utils.activity import ACTIVITY, READER
from io_utils.errors import VideoError
from io_utils.sources import Source, byte_size, open_binary


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


class MediaInput:
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


def error_reason(error: av.error.FFmpegError) -> str:
    return getattr(error, "strerror", None) or str(error)
