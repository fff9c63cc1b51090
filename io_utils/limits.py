"""Bounds on what an input may declare, checked before anything is allocated for it.

A file's header says how large its frames are, how many there are, how long it lasts, at what rate and on how
many channels its audio is. A hostile or damaged header can say anything (65535x65535 frames, a billion of them,
a time base that makes 40 frames last 14 hours, audio at 1 MHz on 255 channels), and each of those numbers sizes
an allocation somewhere: a decoded frame, the index of the stream, the list of sampled times, the resampler's
buffers. So they are checked when the reader opens the input, and a file beyond a bound fails alone with the
number and the bound in words. The defaults sit far above any real video (8K UHD is 33 million pixels; a week of
video; 22.2 surround sound is 24 channels) and every bound can be raised: ``--input_limits frame_pixels=...``.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Iterable

from io_utils.errors import VideoError


@dataclass(frozen=True)
class InputLimits:
    frame_pixels: int = 8192 * 8192  # width x height of one frame
    frames: int = 10_000_000  # frames in the video stream (46 hours at 60 fps)
    duration_s: float = 7 * 24 * 3600.0  # from the first frame (or sample) to the end
    sample_rate: int = 768_000  # of the audio, in Hz
    channels: int = 64  # of the audio

    @classmethod
    def of(cls, pairs: Iterable[tuple[str, float]]) -> InputLimits:
        """The defaults with ``(name, value)`` pairs instead (as ``--input_limits`` gives them)."""
        return replace(cls(), **{name: type(getattr(cls(), name))(value) for name, value in pairs})

    def described(self) -> str:
        """``frame_pixels=67108864, frames=...``: the bounds, as ``--input_limits`` takes them."""
        return ", ".join(f"{field.name}={getattr(self, field.name):.0f}" for field in fields(self))

    def check_frames(self, width: int, height: int) -> None:
        """Before the first frame is decoded: its size, from the stream's header."""
        self._check("frame_pixels", width * height, f"pixels in frames of {width}x{height}")

    def check_frame_count(self, count: int) -> None:
        self._check("frames", count, "frames")

    def check_duration(self, duration_s: float) -> None:
        self._check("duration_s", duration_s, "seconds long")

    def check_audio(self, sample_rate: int, channels: int) -> None:
        """Before the audio is decoded or resampled: its rate and channels, from the stream's header."""
        self._check("sample_rate", sample_rate, "Hz audio")
        self._check("channels", channels, "audio channels")

    def _check(self, name: str, value: float, what: str) -> None:
        bound = getattr(self, name)
        if value > bound:
            raise VideoError(f"{_number(value)} {what}, beyond the limit of {_number(bound)} (a damaged or hostile "
                             f"header; if it is real, raise it with --input_limits {name}=...)")


def parse_limit(text: Any) -> tuple[str, float]:
    """One ``NAME=VALUE`` of ``--input_limits`` (or a pair); ValueError names the bounds there are."""
    name, _, value = text.partition("=") if isinstance(text, str) else (text[0], "=", text[1])
    names = [field.name for field in fields(InputLimits)]
    if name not in names:
        raise ValueError(f"{text!r}: the limits are {', '.join(names)} (NAME=VALUE)")
    number = float(value)
    if not number > 0:
        raise ValueError(f"{text!r}: a limit must be positive")
    return name, number


def _number(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 or float(value).is_integer() else f"{value:,.2f}"
