"""Folders of frames as videos (``--frames_dir``): each folder of images is one video, its images in natural sort
order (``img_2.jpg`` before ``img_10.jpg``), image ``k`` on screen from ``k / fps`` s to ``(k + 1) / fps`` s.

:class:`FrameFolderReader` answers the :class:`~io_utils.video.VideoReader` calls the extractors make, on a time
base of one tick per frame, so sampling is by time as for a video file; an image is read only when it is taken.
"""
from __future__ import annotations

import os
import re
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np

from io_utils.activity import ACTIVITY, READER
from io_utils.errors import VideoError
from io_utils.video import Frame

IMAGE_EXTENSIONS = frozenset(".jpg .jpeg .png .bmp .webp .tif .tiff".split())


def natural_key(name: str) -> list:
    """``frame10`` after ``frame9``: runs of digits compare as numbers."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def frame_files(folder: Path) -> list[Path]:
    """The images directly in ``folder``, in natural sort order."""
    return sorted((path for path in folder.iterdir() if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()),
                  key=lambda path: natural_key(path.name))


def frame_folders(root: Path) -> list[Path]:
    """Every folder under ``root`` (itself included) that holds images directly, in natural sort order."""
    if not root.is_dir():
        return []
    found = [Path(folder) for folder, _, files in os.walk(root)
             if any(Path(name).suffix.lower() in IMAGE_EXTENSIONS for name in files)]
    return sorted(found, key=lambda folder: natural_key(folder.relative_to(root).as_posix()))


class FrameFolderReader:
    """A folder of images read as a video of ``fps`` frames per second (use as a context manager)."""

    def __init__(self, path: str | os.PathLike, fps: float):
        self.path = Path(path)
        if not self.path.is_dir():
            raise VideoError("no such frame folder")
        self._files = frame_files(self.path)
        if not self._files:
            raise VideoError(f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) in the frame folder")
        self.fps = float(fps)
        self.time_base = 1 / Fraction(fps).limit_denominator(1_000_000)
        self.start_pts, self.end_pts = 0, len(self._files)
        self.num_frames = len(self._files)
        self.rotation = 0

    def __enter__(self) -> FrameFolderReader:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        pass

    @property
    def duration_s(self) -> float:
        return float(self.num_frames * self.time_base)

    def pts_to_ms(self, pts: int) -> float:
        return float(pts * self.time_base * 1000)

    def facts(self) -> dict[str, object]:
        first = self._files[0]
        return {"codec": f"images ({first.suffix.lower().lstrip('.')})", "fps": self.fps, "frames": self.num_frames,
                "duration_s": self.duration_s, "first": first.name, "last": self._files[-1].name}

    def read_at(self, targets: Sequence[int]) -> Iterator[Frame]:
        """The image on screen at each target (ticks of one frame)."""
        for target in targets:
            yield self._frame(self._on_screen(target))

    def read_all(self) -> Iterator[Frame]:
        for index in range(self.num_frames):
            yield self._frame(index)

    def frame_pts(self) -> list[int]:
        return list(range(self.num_frames))

    def frame_times_ms(self, targets: Sequence[int] | None = None) -> list[float]:
        shown = range(self.num_frames) if targets is None else [self._on_screen(target) for target in targets]
        return [self.pts_to_ms(index) for index in shown]

    def _on_screen(self, target: int) -> int:
        """The image shown at ``target`` (ticks of one frame): before the first, the first; past the last, the last."""
        return min(max(int(target), 0), self.num_frames - 1)

    def _frame(self, index: int) -> Frame:
        path = self._files[index]
        ACTIVITY.note(READER, f"reading the image {path.name}")
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise VideoError(f"{path.name}: not a readable image")
        return Frame(np.ascontiguousarray(image[:, :, ::-1]), index, self.pts_to_ms(index))
