"""Which frames to take from a video, defined on presentation time.

A sampling method turns a video's time span into target times; the frame taken for a target time ``t`` is
the frame on screen at ``t``: the last frame whose presentation timestamp is ``<= t``. All arithmetic is
exact (``Fraction``) and done in the stream's own time base, so a target that falls exactly on a frame's
timestamp always selects that frame, whatever the frame rate.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

ACCEPTED_FORMS = ("uni_N (N evenly spaced frames, N a positive integer), fix_F (F frames per second, F > 0) "
                  "or all (every frame)")
_METHOD_PATTERN = re.compile(r"^(uni|fix)_(.+)$")


@dataclass(frozen=True)
class SamplingMethod:
    """``uni_N``: N frames at the centres of N equal slices of the video; ``fix_F``: F frames per second;
    ``all``: every frame (no target times: the frames are read in one sequential pass)."""

    kind: Literal["uni", "fix", "all"]
    value: Fraction = Fraction(0)

    def __str__(self) -> str:
        if self.kind == "all":
            return "all"
        return f"{self.kind}_{self.value if self.value.denominator > 1 else int(self.value)}"

    def target_offsets(self, duration: Fraction) -> list[Fraction]:
        """Target times in seconds after the first frame, for a video lasting ``duration`` seconds.

        uni_N: ``(i + 1/2) * duration / N`` for i in 0..N-1 (centres, so no target sits past the end).
        fix_F: ``k / F`` for k = 0, 1, ... while the time is before ``duration``.
        """
        if self.kind == "uni":
            count = int(self.value)
            return [(i + Fraction(1, 2)) * duration / count for i in range(count)]
        count = max(1, math.ceil(duration * self.value))
        return [Fraction(k) / self.value for k in range(count)]

    def target_pts(self, start_pts: int, end_pts: int, time_base: Fraction) -> list[int]:
        """Target times in stream ticks (``floor`` of the exact time), sorted ascending."""
        duration = (end_pts - start_pts) * time_base
        return [start_pts + math.floor(offset / time_base) for offset in self.target_offsets(duration)]


def parse_extract_method(text: str | SamplingMethod) -> SamplingMethod:
    """``--extract_method``: ``uni_12``, ``fix_2``, ``fix_0.5``, ``all``; ValueError names the accepted forms."""
    if isinstance(text, SamplingMethod):
        return text
    if text.strip() == "all":
        return SamplingMethod("all")
    match = _METHOD_PATTERN.match(text.strip())
    if not match:
        raise ValueError(f"unknown extraction method {text!r}; accepted forms: {ACCEPTED_FORMS}")
    kind, number = match.groups()
    try:
        value = Fraction(number)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"{text!r}: {number!r} is not a number; accepted forms: {ACCEPTED_FORMS}") from None
    if value <= 0:
        raise ValueError(f"{text!r}: the number must be positive; accepted forms: {ACCEPTED_FORMS}")
    if kind == "uni" and value.denominator != 1:
        raise ValueError(f"{text!r}: uni_N takes a whole number of frames; accepted forms: {ACCEPTED_FORMS}")
    return SamplingMethod(kind, value)
