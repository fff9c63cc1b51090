"""Building the list of videos to process, and where each one's outputs go.

Outputs are named after the video's stem. With ``--video_dir`` (a folder, or a prefix of objects) the folders
below it are mirrored under the output directory, so ``a/clip.mp4`` and ``b/clip.mp4`` never collide; a member
of a WebDataset shard is named by its sample's key. In every other mode, two inputs that would write the same
output are refused up front with the full list of collisions. Any path may be a URL (``io_utils.sources``).
"""
from __future__ import annotations

import csv
import hashlib
import io
import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Iterable

from braceexpand import braceexpand

from io_utils.errors import UsageError, VideoError
from io_utils.frames import frame_folders
from io_utils.sources import RemoteFile, Source, as_source, is_url, list_remote, list_shard, relative_stem, sample_key

VIDEO_EXTENSIONS = frozenset(
    ".mp4 .m4v .mov .mkv .webm .avi .mpg .mpeg .ts .mts .m2ts .wmv .flv .3gp .ogv .vob .mxf".split()
)
CSV_HEADER = ("video_path", "feature_path")
SHARD_LISTING_THREADS = 16


@dataclass(frozen=True)
class VideoJob:
    """One video to process: where it is and where its outputs go."""

    path: Source  # a local file, an object or URL, or a member of a tar shard
    output_stem: PurePath  # relative; outputs are ``<output_stem>_<key>.<ext>``
    feature_path: Path | None = None  # set by a CSV list: the file of the main feature
    output_shard: str | None = None  # with sharded outputs, the shard it is written into (io_utils.shards)


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
        if is_url(video_dir):
            return _jobs_from_prefix(video_dir, recursive, extensions)
        return _jobs_from_dir(Path(video_dir), recursive, extensions)
    if file_with_video_paths is not None:
        return _jobs_from_list_file(Path(file_with_video_paths))
    return [_job_of_path(p) for p in video_paths or []]


def list_shard_jobs(pattern: str, extensions: frozenset[str] = VIDEO_EXTENSIONS,
                    threads: int = SHARD_LISTING_THREADS) -> tuple[list[VideoJob], dict[str, str]]:
    """The video members of the WebDataset shards ``pattern`` names (brace expansion as WebDataset writes it:
    ``data/{00000..00099}.tar``), each named by its sample's key, in shard order; and the shards that could not
    be read to the end, with the reason (their members before the damage are listed)."""
    shards = [as_source(name) for name in braceexpand(pattern)]
    with ThreadPoolExecutor(max_workers=threads) as pool:  # a remote shard's listing is a request per member
        listings = list(pool.map(lambda shard: list_shard(shard, extensions), shards))
    jobs, problems = [], {}
    for shard, listing in zip(shards, listings):
        jobs += [VideoJob(member, PurePath(sample_key(member.member)[0])) for member in listing.members]
        if listing.problem:
            problems[str(shard)] = listing.problem
    return jobs, problems


def _job_of_path(text: str) -> VideoJob:
    source = as_source(text)
    return VideoJob(source, PurePath(source.stem))


def split_jobs(listed: list[VideoJob]) -> tuple[list[VideoJob], list[Path]]:
    """The jobs, each once (the same video named twice is done once), less the local paths that do not exist,
    and those paths; output names that collide are refused. Remote objects are not looked up here (a million
    requests before the first video): a missing one fails in its worker, with the reason."""
    jobs = list(dict.fromkeys(listed))
    _refuse_collisions(jobs)
    missing = {job.path for job in jobs if isinstance(job.path, Path) and not job.path.exists()}
    return [job for job in jobs if job.path not in missing], [job.path for job in jobs if job.path in missing]


def in_shard(path: Source, shard: tuple[int, int] | None) -> bool:
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


def output_stem(path: Source, video_dir: str | os.PathLike | None) -> PurePath:
    """What a video's outputs are named after: its stem, under its sub-folder of ``--video_dir`` if it has one."""
    if isinstance(path, RemoteFile):
        if isinstance(video_dir, str) and path.url.startswith(video_dir.rstrip("/") + "/"):
            return PurePath(relative_stem(path, video_dir).as_posix())
        return PurePath(path.stem)
    if video_dir is not None and not is_url(video_dir) and Path(path).is_relative_to(video_dir):
        return Path(path).relative_to(video_dir).with_suffix("")
    return PurePath(Path(path).stem)


def _jobs_from_prefix(prefix: str, recursive: bool, extensions: frozenset[str]) -> list[VideoJob]:
    try:
        objects = list_remote(prefix, recursive, extensions)
    except VideoError as error:
        raise UsageError(f"--video_dir {prefix}: {error}") from error
    if not objects:
        listed = " ".join(sorted(extensions))
        raise UsageError(f"--video_dir {prefix}: no video objects under it (extensions: {listed})")
    return [VideoJob(source, output_stem(source, prefix)) for source in objects]


def _jobs_from_list_file(list_file: Path) -> list[VideoJob]:
    """One path per line (blank lines, CRLF and trailing spaces tolerated), or a HowTo100M-style CSV."""
    if not list_file.is_file():
        raise UsageError(f"--file_with_video_paths {list_file}: no such file")
    text = list_file.read_text(encoding="utf-8-sig")
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    if lines and tuple(field.strip() for field in lines[0].split(",")) == CSV_HEADER:
        return _jobs_from_csv("\n".join(lines), list_file)
    return [_job_of_path(line) for line in lines]


def _jobs_from_csv(text: str, list_file: Path) -> list[VideoJob]:
    jobs = []
    for row_number, row in enumerate(csv.DictReader(io.StringIO(text)), start=2):
        video, feature = (row.get(key) or "" for key in CSV_HEADER)
        if not video.strip() or not feature.strip():
            raise UsageError(f"{list_file}, line {row_number}: both video_path and feature_path are required")
        feature_path = Path(feature.strip())
        jobs.append(VideoJob(as_source(video.strip()), PurePath(feature_path.stem), feature_path))
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
