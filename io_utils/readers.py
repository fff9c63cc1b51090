"""What the extraction engine needs of an input, whatever it is: a video file (``io_utils/video.py``), a folder of
frames (``io_utils/frames.py``) or the audio of a file (``io_utils/audio.py``).

Every input is a :class:`Reader`; the visual ones are :class:`FrameReader`s, which sample frames by presentation
time in the stream's own ticks. An extractor opens its reader once per video (``open_reader``) and reads it in
``model_inputs``; the engine asks every reader for the same few things (its duration for progress, its facts for
the manifest).
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Iterator, Protocol, Sequence, runtime_checkable

from io_utils.video import Frame


@runtime_checkable
class Reader(Protocol):
    """One input, opened; a context manager that closes it."""

    path: Path
    fps: float  # the video's average frame rate (0.0 where there is none)

    @property
    def duration_s(self) -> float | None:
        """How long the input lasts (None where nothing declares it)."""

    def facts(self) -> dict[str, object]:
        """What a manifest records of the input's streams."""

    def close(self) -> None: ...

    def __enter__(self) -> Reader: ...

    def __exit__(self, *exc_info) -> None: ...


@runtime_checkable
class FrameReader(Reader, Protocol):
    """Frames on a timeline of ``time_base`` ticks: the first frame is shown at ``start_pts``, the last ends at
    ``end_pts``; the frame taken for a target time is the one on screen then."""

    time_base: Fraction
    start_pts: int
    end_pts: int
    num_frames: int

    def pts_to_ms(self, pts: int) -> float:
        """A time in ticks as milliseconds after the first frame."""

    def read_at(self, targets: Sequence[int]) -> Iterator[Frame]:
        """The frame on screen at each target time (ticks, ascending)."""

    def read_all(self) -> Iterator[Frame]:
        """Every frame, in presentation order."""

    def frame_pts(self) -> list[int]:
        """The presentation time of every frame, ascending, without decoding."""

    def frame_times_ms(self, targets: Sequence[int] | None = None) -> list[float]:
        """Times (ms) of the frames :meth:`read_at` would give for ``targets`` (every frame for None), without
        decoding."""
