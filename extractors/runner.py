"""A whole run: the video list, one extractor, every video's outputs, and a summary.

Expected problems with one video (missing, corrupt, too short...) are reported as one line and the other
videos go on; the exit status is 1 if any video failed.
"""
from __future__ import annotations

import argparse
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from extractors.base import BaseExtractor
from extractors.registry import extractor_class
from io_utils.errors import VideoError
from io_utils.outputs import output_files, output_folder, print_features, write_outputs
from io_utils.video_list import VideoJob, build_video_list


@dataclass
class Summary:
    done: int = 0
    skipped: int = 0
    failures: list[tuple[Path, str]] = field(default_factory=list)

    def fail(self, path: Path, reason: str) -> None:
        self.failures.append((path, reason))
        print(f"FAILED {path}: {reason}", file=sys.stderr, flush=True)

    def line(self) -> str:
        return f"done: {self.done}, skipped: {self.skipped}, failed: {len(self.failures)}"


def run(args: argparse.Namespace) -> int:
    """Extract every video of the list; return the exit status."""
    jobs, missing = build_video_list(args.video_paths, args.video_dir, args.file_with_video_paths, args.recursive)
    summary = Summary()
    if missing:
        print(f"{len(missing)} input path(s) do not exist: {', '.join(map(str, missing))}", file=sys.stderr)
        summary.failures.extend((path, "no such file") for path in missing)
    if jobs:
        extractor = extractor_class(args.feature_type)(args)
        for job in jobs:
            process(extractor, job, summary)
    print(summary.line())
    return 1 if summary.failures else 0


def process(extractor: BaseExtractor, job: VideoJob, summary: Summary) -> None:
    args = extractor.args
    try:
        features = extractor.extract(job.path)
        if args.on_extraction == "print":
            print_features(job.path, features)
        else:
            folder = output_folder(args.output_path, extractor.feature_type, args.output_direct)
            paths = output_files(job, list(features), extractor.main_key, folder, args.on_extraction)
            write_outputs(features, paths, args.on_extraction)
    except VideoError as error:
        summary.fail(job.path, str(error))
    except Exception as error:  # an unexpected failure on one video must not end a night-long run
        if args.verbose:
            traceback.print_exc()
        summary.fail(job.path, f"{type(error).__name__}: {error}")
    else:
        summary.done += 1
