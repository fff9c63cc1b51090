"""Building the list of videos to process, and where each one's outputs go.

Outputs are named after the video's stem. With ``--video_dir`` the folders below the input directory are
mirrored under the output directory, so ``a/clip.mp4`` and ``b/clip.mp4`` never collide. In every other
mode, two inputs that would write the same output are refused up front with the full list of collisions.
"""
from __future__ import annotations

import csv
import hashlib
import io
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Iterable

from io_utils.errors import UsageError
from io_utils.frames import frame_folders

VIDEO_EXTENSIONS = frozenset(
    ".mp4 .m4v .mov .mkv .webm .avi .mpg .mpeg .ts .mts .m2ts .wmv .flv .3gp .ogv .vob .mxf".split()
)
CSV_HEADER = ("video_path", "feature_path")


@dataclass(frozen=True)
class VideoJob:
    """One video to process: where it is and where its outputs go."""

    path: Path
    output_stem: PurePath  # relative; outputs are ``<output_stem>_<key>.<ext>``
    feature_path: Path | None = None  # set by a CSV list: the file of the main feature


def list_jobs(
    video_paths: Iterable[str] | None = None,
    video_dir: str | None = None,
    file_with_video_paths: str | None = None,
    recursive: bool = False,
    extensions: frozenset[str] = VIDEO_EXTENSIONS,
    frames_dir: str | None = None,
) -> list[VideoJob]:
    """Every video named, in the order given, repeats and missing files included (exactly one mode is given);
    ``--video_dir`` takes the files with one of ``extensions``; ``--frames_dir`` every folder of images."""
    if frames_dir is not None:
        root = Path(frames_dir)
        return [VideoJob(folder, PurePath(folder.relative_to(root).as_posix() if folder != root else root.name))
                for folder in frame_folders(root)]
    if video_dir is not None:
        return _jobs_from_dir(Path(video_dir), recursive, extensions)
    if file_with_video_paths is not None:
        return _jobs_from_list_file(Path(file_with_video_paths))
    return [VideoJob(Path(p), PurePath(Path(p).stem)) for p in video_paths or []]


def split_jobs(listed: list[VideoJob]) -> tuple[list[VideoJob], list[Path]]:
    """The jobs for existing videos, each once (the same video named twice is done once), and the paths that do
    not exist; output names that collide are refused."""
    jobs = list(dict.fromkeys(listed))
    _refuse_collisions(jobs)
    missing = [job.path for job in jobs if not job.path.exists()]
    return [job for job in jobs if job.path.exists()], missing


def in_shard(path: Path, shard: tuple[int, int] | None) -> bool:
    """Whether ``path`` belongs to shard INDEX of COUNT: by a hash of the path as given, so that adding videos to a
    list moves no video from one shard to another."""
    if shard is None:
        return True
    index, count = shard
    return int.from_bytes(hashlib.sha256(str(path).encode()).digest()[:8], "big") % count == index


def _jobs_from_dir(video_dir: Path, recursive: bool, extensions: frozenset[str]) -> list[VideoJob]:
    if not video_dir.is_dir():
        raise UsageError(f"--video_dir {video_dir}: not a directory")
    candidates = video_dir.rglob("*") if recursive else video_dir.iterdir()
    paths = sorted(p for p in candidates if p.is_file() and p.suffix.lower() in extensions)
    if not paths:
        where = "or below it " if recursive else ""
        raise UsageError(f"--video_dir {video_dir}: no video files in it {where}(extensions: {' '.join(sorted(extensions))})")
    return [VideoJob(p, output_stem(p, video_dir)) for p in paths]


def output_stem(path: Path, video_dir: str | os.PathLike | None) -> PurePath:
    """What a video's outputs are named after: its stem, under its sub-folder of ``--video_dir`` if it has one."""
    if video_dir is not None and Path(path).is_relative_to(video_dir):
        return Path(path).relative_to(video_dir).with_suffix("")
    return PurePath(Path(path).stem)


def _jobs_from_list_file(list_file: Path) -> list[VideoJob]:
    """One path per line (blank lines, CRLF and trailing spaces tolerated), or a HowTo100M-style CSV."""
    if not list_file.is_file():
        raise UsageError(f"--file_with_video_paths {list_file}: no such file")
    text = list_file.read_text(encoding="utf-8-sig")
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    if lines and tuple(field.strip() for field in lines[0].split(",")) == CSV_HEADER:
        return _jobs_from_csv("\n".join(lines), list_file)
    return [VideoJob(Path(line), PurePath(Path(line).stem)) for line in lines]


def _jobs_from_csv(text: str, list_file: Path) -> list[VideoJob]:
    jobs = []
    for row_number, row in enumerate(csv.DictReader(io.StringIO(text)), start=2):
        video, feature = (row.get(key) or "" for key in CSV_HEADER)
        if not video.strip() or not feature.strip():
            raise UsageError(f"{list_file}, line {row_number}: both video_path and feature_path are required")
        feature_path = Path(feature.strip())
        jobs.append(VideoJob(Path(video.strip()), PurePath(feature_path.stem), feature_path))
    return jobs


def _refuse_collisions(jobs: list[VideoJob]) -> None:
    """Refuse outputs that would overwrite each other (compared case-insensitively, for shared disks)."""
    by_output: dict[str, list[Path]] = defaultdict(list)
    for job in jobs:
        key = str(job.feature_path.with_suffix("") if job.feature_path else job.output_stem)
        by_output[key.casefold()].append(job.path)
    collisions = {key: paths for key, paths in by_output.items() if len(paths) > 1}
    if collisions:
        listing = "; ".join(f"{' and '.join(map(str, paths))} -> {key}" for key, paths in collisions.items())
        raise UsageError(
            f"{len(collisions)} output name(s) would be written by more than one video: {listing}. "
            "Rename the videos, use --video_dir (which mirrors sub-folders), or give a CSV list with feature_path."
        )
