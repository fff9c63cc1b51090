"""A corpus of valid but unusual videos, made with the ``ffmpeg`` command line (Debian's), that every player
plays: late starts, negative timestamps, edit lists, many codecs, pixel formats, sizes, display matrices,
timestamp jumps, fragmented and cue-less files, several video streams, cover art.

Each :class:`Kind` is one file and what a reader must make of it: which video stream FFmpeg picks (the
reference decodes that one), whether it has audio, and, for the few files whose frames cannot be placed in
time, the line that refuses them. :class:`FfmpegFrames` is the reference: the command line's own decode. Files
are small (2 to 200 KiB) and made once per test session, in about 6 s.
"""
from __future__ import annotations

import bisect
import shutil
import struct
import subprocess
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from io_utils.video import Frame
from tests.clips import sequential_decode, set_mp4_rotation

SOURCE = "testsrc2=size=96x64:rate=25"  # asymmetric (text, colour bars, a moving square): orientation shows
TONE = "sine=frequency=440:sample_rate=16000"
X264 = ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"]  # with B-frames, as most H.264 is


@dataclass(frozen=True)
class Kind:
    """One file of the corpus.

    ``args``: the ffmpeg arguments between ``ffmpeg -y`` and the output name (``{dir}`` stands for the corpus
    folder, where earlier files can be read from); ``after``: a change made to the written file (a display
    matrix ffmpeg 5.1 cannot write); ``stream``: the index of the video stream FFmpeg picks (None: no video);
    ``video``/``audio``: whether the file has something to extract for a visual and an audio type.
    """

    name: str
    args: list[str]
    stream: int | None = 0
    audio: bool = False
    after: Callable[[Path], None] | None = None
    needs: tuple[str, ...] = field(default=())  # corpus files made first (read through {dir})
    # Whether Debian's ffmpeg (FFmpeg 5.1) turns the decoded picture into RGB as the tool's FFmpeg (PyAV's, 8.x)
    # does: the newer swscale converts interlaced 4:2:0 chroma field by field and rounds 12-bit input
    # differently. Where not, the pixels are checked against a plain sequential decode with the tool's FFmpeg.
    same_rgb_conversion: bool = True
    refused: str | None = None  # the one line a visual type gives where the file cannot be read exactly
    cover: bool = False  # it has a cover picture (an attached picture stream) besides the video

    @property
    def video(self) -> bool:
        return self.stream is not None


def _video(seconds: float = 2.0, source: str = SOURCE) -> list[str]:
    return ["-f", "lavfi", "-i", f"{source}:duration={seconds}"]


def _tone(seconds: float) -> list[str]:
    return ["-f", "lavfi", "-i", f"{TONE}:duration={seconds}"]


def _late_video(codec: list[str], audio_codec: str, keyframe_interval: int = 12) -> list[str]:
    """Audio from 0 s, video from 5.5 s."""
    return _tone(8) + _video() + ["-filter:v", "setpts=PTS+5.5/TB", *codec, "-g", str(keyframe_interval),
                                  "-c:a", audio_codec]


def _late_audio(codec: list[str], audio_codec: str) -> list[str]:
    """Video from 0 s, audio from 1.5 s."""
    return _video(3) + _tone(1) + ["-filter:a", "asetpts=PTS+1.5/TB", *codec, "-g", "12", "-c:a", audio_codec]


VP9 = ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "200k"]


def _display_matrix(matrix: tuple[int, int, int, int]) -> Callable[[Path], None]:
    """Write an MP4 track's display matrix (ffmpeg 5.1 writes none): ``(0, 1, -1, 0)`` is shown turned 90 degrees
    clockwise (a portrait phone video), ``(-1, 0, 0, 1)`` mirrored left to right."""
    return lambda path: set_mp4_rotation(path, matrix)


def _followed_by(name: str) -> Callable[[Path], None]:
    """Append another corpus file's bytes, as ``cat a.ts b.ts`` joins two recordings (no remuxing, which would
    make the times continuous)."""
    def append(path: Path) -> None:
        with path.open("ab") as joined:
            joined.write((path.parent / name).read_bytes())
    return append


def _boxes(data: bytes, start: int, end: int) -> list[tuple[bytes, int, int]]:
    """The MP4 boxes between ``start`` and ``end``: (type, offset, size)."""
    found, position = [], start
    while position < end:
        size, kind = struct.unpack(">I4s", data[position : position + 8])
        found.append((kind, position, size))
        position += size
    return found


def _metadata_first(path: Path) -> None:
    """Move the movie's user data (where the mov muxer writes cover art) before its tracks, as some taggers
    write it: FFmpeg's demuxer then lists the cover as stream 0. Boxes in ``moov`` may come in any order, and the
    ``moov`` keeps its size, so the sample offsets stay valid."""
    data = path.read_bytes()
    (_, moov, size), = [box for box in _boxes(data, 0, len(data)) if box[0] == b"moov"]
    children = _boxes(data, moov + 8, moov + size)
    ordered = sorted(children, key=lambda box: {b"mvhd": 0, b"udta": 1}.get(box[0], 2))
    body = b"".join(data[offset : offset + length] for _, offset, length in ordered)
    path.write_bytes(data[: moov + 8] + body + data[moov + size :])


KINDS: list[Kind] = [
    Kind("late_video_mkv.mkv", _late_video(X264, "libopus"), audio=True),
    Kind("late_video_one_keyframe.mkv", _late_video(X264, "libopus", keyframe_interval=1000), audio=True),
    Kind("late_video_webm.webm", _late_video(VP9, "libopus"), audio=True),
    Kind("late_video_mp4.mp4", _late_video(X264, "aac"), audio=True),
    Kind("late_audio_mkv.mkv", _late_audio(X264, "libopus"), audio=True),
    Kind("late_audio_webm.webm", _late_audio(VP9, "libopus"), audio=True),
    Kind("late_audio_mp4.mp4", _late_audio(X264, "aac"), audio=True),
    Kind("negative_start_webm.webm", ["-i", "{dir}/vp9.webm", "-c", "copy", "-output_ts_offset", "-1",
                                 "-avoid_negative_ts", "disabled"], needs=("vp9.webm",)),
    Kind("negative_start_mkv.mkv", ["-i", "{dir}/late_audio_webm.webm", "-c", "copy", "-output_ts_offset", "-1",
                                "-avoid_negative_ts", "disabled"], audio=True, needs=("late_audio_webm.webm",)),
    Kind("edit_list_trim.mp4", ["-ss", "0.52", "-i", "{dir}/bpyramid.mp4", "-c", "copy"], needs=("bpyramid.mp4",)),
    Kind("open_gop.mp4", _video(3) + [*X264, "-g", "12", "-bf", "3", "-x264-params", "open-gop=1:b-pyramid=normal",
                                      "-preset", "medium"]),
    Kind("bpyramid.mp4", _video(3) + [*X264, "-g", "25", "-bf", "3", "-x264-params", "b-pyramid=normal",
                                      "-preset", "medium"]),
    Kind("hevc.mp4", _video() + ["-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error:bframes=3",
                                 "-g", "12", "-tag:v", "hvc1"]),
    Kind("av1.mkv", _video() + ["-c:v", "libaom-av1", "-cpu-used", "8", "-g", "12", "-b:v", "100k"]),
    Kind("vp9.webm", _video() + [*VP9, "-g", "12"]),
    Kind("mpeg2.mpg", _video() + ["-c:v", "mpeg2video", "-g", "12", "-bf", "2", "-q:v", "4"]),
    Kind("mpeg4_bframes.avi", _video() + ["-c:v", "mpeg4", "-bf", "2", "-g", "12", "-q:v", "4"]),  # packed B-frames
    Kind("h264_bframes.avi", _video() + [*X264, "-g", "12"],
         refused="its timestamps are not presentation times: decoded frames go back from 0.160 s to 0.120 s (as "
                 "H.264 with B-frames in AVI does)"),
    Kind("mjpeg.avi", _video() + ["-c:v", "mjpeg", "-q:v", "4", "-pix_fmt", "yuvj420p"]),
    Kind("prores.mov", _video() + ["-c:v", "prores_ks", "-profile:v", "2"]),
    Kind("interlaced.ts", _video(source="testsrc2=size=96x64:rate=50") +
         ["-vf", "interlace", "-c:v", "mpeg2video", "-flags", "+ilme+ildct", "-top", "1", "-g", "12", "-q:v", "4"],
         same_rgb_conversion=False),
    Kind("yuv422.mp4", _video() + ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv422p", "-g", "12"]),
    Kind("yuv444.mkv", _video() + ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv444p", "-g", "12"]),
    Kind("hevc_12bit.mkv", _video() + ["-c:v", "libx265", "-preset", "ultrafast", "-pix_fmt", "yuv420p12le",
                                       "-x265-params", "log-level=error", "-g", "12"], same_rgb_conversion=False),
    Kind("full_range.mp4", _video() + ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuvj420p", "-g", "12"]),
    Kind("full_range_flag.webm", _video() + [*VP9, "-g", "12", "-color_range", "pc"]),  # yuv420p, range flagged
    Kind("tiny_2x2.mp4", _video(1, "testsrc2=size=2x2:rate=25") + X264),
    Kind("wide_4097x17.mkv", _video(1, "testsrc2=size=4097x17:rate=25") +
         ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv444p", "-g", "12"]),
    Kind("anamorphic.mp4", _video() + ["-vf", "setsar=4/3", *X264, "-g", "12"]),
    Kind("rotate_90.mp4", _video() + [*X264, "-g", "12"], after=_display_matrix((0, 1, -1, 0))),
    Kind("rotate_180.mp4", _video() + [*X264, "-g", "12"], after=_display_matrix((-1, 0, 0, -1))),
    Kind("rotate_270.mp4", _video() + [*X264, "-g", "12"], after=_display_matrix((0, -1, 1, 0))),
    Kind("mirrored.mp4", _video() + [*X264, "-g", "12"], after=_display_matrix((-1, 0, 0, 1))),
    Kind("vfr_dropped.mp4", _video(3) + ["-vf", r"select=not(between(n\,10\,24))*not(eq(mod(n\,7)\,3)),"
                                         r"setpts=PTS", "-vsync", "vfr", *X264, "-g", "12"]),
    Kind("ts_jump.ts", ["-i", "concat:{dir}/part_a.ts|{dir}/part_b.ts", "-c", "copy", "-f", "mpegts"],
         needs=("part_a.ts", "part_b.ts")),
    Kind("ts_jump_back.ts", ["-i", "{dir}/part_b.ts", "-c", "copy", "-f", "mpegts"], after=_followed_by("part_a.ts"),
         needs=("part_a.ts", "part_b.ts"),
         refused="its timestamps jump back from 3.440 s to 1.480 s (recordings joined with overlapping times?): "
                 "a time no longer names one frame"),
    Kind("fragmented.mp4", _video() + [*X264, "-g", "12", "-movflags", "frag_keyframe+empty_moov"]),
    Kind("no_cues.mkv", _video() + [*X264, "-g", "12", "-f", "matroska"]),  # written through a pipe: see make
    Kind("one_keyframe.mp4", _video(60, "testsrc2=size=64x48:rate=10") +
         [*X264, "-g", "100000", "-keyint_min", "100000", "-sc_threshold", "0", "-bf", "0"]),
    Kind("two_video_streams.mkv", _video(2, "testsrc2=size=128x96:rate=25") + _video(2, "testsrc=size=96x64:rate=25")
         + ["-map", "0", "-map", "1", *X264, "-g", "12", "-disposition:v:0", "0", "-disposition:v:1", "default"],
         stream=1),
    Kind("two_video_no_default.mkv", _video(2, "testsrc=size=64x48:rate=25") + _video(2) +
         ["-map", "0", "-map", "1", *X264, "-g", "12", "-disposition:v:0", "0", "-disposition:v:1", "0"], stream=1),
    Kind("cover_art_first.mp4", ["-i", "{dir}/cover.png"] + _video() +
         ["-map", "0", "-map", "1", "-c:v:0", "png", "-disposition:v:0", "attached_pic", "-c:v:1", "libx264",
          "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-g", "12"], stream=1, needs=("cover.png",),
         after=_metadata_first, cover=True),
    Kind("single_frame.mp4", _video(0.04) + X264),
    Kind("audio_only.m4a", _tone(3) + ["-c:a", "aac"], stream=None, audio=True),
    Kind("video_only.mp4", _video() + [*X264, "-g", "12"]),
]

# Inputs of other kinds, not in the corpus themselves.
_PARTS: list[Kind] = [
    Kind("part_a.ts", _video() + [*X264, "-g", "12", "-f", "mpegts"]),
    Kind("part_b.ts", _video(2, "testsrc=size=96x64:rate=25") + [*X264, "-g", "12", "-f", "mpegts",
                                                                     "-output_ts_offset", "12"]),
    Kind("cover.png", ["-f", "lavfi", "-i", "color=c=red:size=200x200", "-frames:v", "1", "-update", "1"]),
]
_BY_NAME = {kind.name: kind for kind in KINDS + _PARTS}


def ffmpeg() -> str:
    """The ffmpeg command line tool, which the corpus needs (not the tool itself, whose FFmpeg is PyAV's)."""
    found = shutil.which("ffmpeg")
    if found is None:
        raise RuntimeError("the conformance corpus is made with the ffmpeg command line: apt-get install ffmpeg")
    return found


def ffprobe() -> str:
    """Its companion, from the same package."""
    return str(Path(ffmpeg()).with_name("ffprobe"))


def make(kind: Kind, folder: Path) -> Path:
    """Write ``kind``'s file into ``folder`` (and the files it is made from), unless it is there already."""
    path = folder / kind.name
    if path.exists():
        return path
    for name in kind.needs:
        make(_BY_NAME[name], folder)
    args = [arg.replace("{dir}", str(folder)) for arg in kind.args]
    command = [ffmpeg(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args]
    partial = folder / f"partial.{kind.name}"
    if kind.name == "no_cues.mkv":  # a muxer that cannot seek back writes no cues
        with partial.open("wb") as output:
            subprocess.run([*command, "-"], check=True, stdout=output)
    else:
        subprocess.run([*command, str(partial)], check=True)
    if kind.after is not None:
        kind.after(partial)
    partial.rename(path)
    return path


def make_all(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return {kind.name: make(kind, folder) for kind in KINDS}


class FfmpegFrames:
    """The reference: every frame of a stream as the ``ffmpeg`` command line decodes it, one sequential pass with
    no seeking (its own demuxer and decoder, autorotation on, no frame dropped or repeated: ``-vsync
    passthrough``; the input's own timestamps: ``-copyts``, ``-enc_time_base -1``).

    It is a :class:`io_utils.readers.FrameReader`, so an extractor can run on it in place of its own reader: the
    features it gives are the reference features.
    """

    def __init__(self, path: Path, stream: int):
        self.path = path
        base = [ffmpeg(), "-nostdin", "-v", "error", "-copyts", "-i", str(path), "-map", f"0:{stream}",
                "-enc_time_base", "-1", "-vsync", "passthrough"]
        listing = subprocess.run([*base, "-f", "framemd5", "-"], check=True, capture_output=True, text=True).stdout
        rows = [[field.strip() for field in line.split(",")] for line in listing.splitlines() if not line.startswith("#")]
        self.time_base = Fraction(next(line.split(":")[1].strip() for line in listing.splitlines()
                                       if line.startswith("#tb")))
        pictures = subprocess.run([*base, "-pix_fmt", "rgb24", "-f", "image2pipe", "-c:v", "ppm", "-"], check=True,
                                  capture_output=True).stdout
        self.frames = list(_ppm_images(pictures))
        self.pts = [int(row[2]) for row in rows]
        assert len(self.frames) == len(self.pts) and self.pts == sorted(self.pts)
        self.start_pts, self.num_frames = self.pts[0], len(self.pts)
        self.end_pts = max(pts + int(row[3]) for pts, row in zip(self.pts, rows))
        self.fps = float(len(self.pts) / ((self.end_pts - self.start_pts) * self.time_base))  # not compared (see the test)

    @property
    def duration_s(self) -> float:
        return float((self.end_pts - self.start_pts) * self.time_base)

    @property
    def start_s(self) -> float:
        return float(self.start_pts * self.time_base)

    def facts(self) -> dict[str, object]:
        return {"fps": self.fps}

    def close(self) -> None:
        pass

    def __enter__(self) -> FfmpegFrames:
        return self

    def __exit__(self, *exc_info) -> None:
        pass

    def pts_to_ms(self, pts: int) -> float:
        return float((pts - self.start_pts) * self.time_base * 1000)

    def on_screen(self, target: int) -> int:
        """The index of the frame on screen at ``target``: the last shown at or before it."""
        return max(bisect.bisect_right(self.pts, target) - 1, 0)

    def read_at(self, targets: Sequence[int]) -> Iterator[Frame]:
        return (self._frame(self.on_screen(target)) for target in targets)

    def read_all(self) -> Iterator[Frame]:
        return (self._frame(index) for index in range(self.num_frames))

    def frame_pts(self) -> list[int]:
        return list(self.pts)

    def frame_times_ms(self, targets: Sequence[int] | None = None) -> list[float]:
        chosen = self.pts if targets is None else [self.pts[self.on_screen(target)] for target in targets]
        return [self.pts_to_ms(pts) for pts in chosen]

    def _frame(self, index: int) -> Frame:
        return Frame(self.frames[index], self.pts[index], self.pts_to_ms(self.pts[index]))


def _ppm_images(data: bytes) -> Iterator[np.ndarray]:
    """The RGB images of a stream of binary PPM (P6, 8-bit) files."""
    position = 0
    while position < len(data):
        fields, position = _ppm_header(data, position)
        width, height = fields
        size = width * height * 3
        yield np.frombuffer(data[position : position + size], np.uint8).reshape(height, width, 3).copy()
        position += size


def _ppm_header(data: bytes, position: int) -> tuple[tuple[int, int], int]:
    """(width, height) and where the pixels start: ``P6 W H 255`` and one white-space byte."""
    values = []
    while len(values) < 4:
        while data[position : position + 1].isspace():
            position += 1
        end = position
        while not data[end : end + 1].isspace():
            end += 1
        values.append(data[position:end])
        position = end
    assert values[0] == b"P6" and values[3] == b"255"
    return (int(values[1]), int(values[2])), position + 1


def reference_frames(kind: Kind, path: Path) -> FfmpegFrames:
    """The frames of ``kind``'s file as FFmpeg decodes them; where Debian's ffmpeg converts the pictures to RGB
    otherwise than the tool's FFmpeg (``same_rgb_conversion``), the pictures of a plain sequential decode with
    the tool's FFmpeg, at the same times."""
    reference = FfmpegFrames(path, kind.stream)
    if not kind.same_rgb_conversion:
        decoded_pts, reference.frames = sequential_decode(path)
        assert decoded_pts == reference.pts
    return reference
