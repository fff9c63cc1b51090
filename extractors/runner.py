"""A whole run: the video list, the executor, a progress bar, the summary and the failures file.

Expected problems with one video (missing, corrupt, too short...) are reported as one line and the other
videos go on. The exit status is 1 if any video failed, 0 otherwise.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from extractors.cli import complete_args
from extractors.pool import Executor, LocalPoolExecutor
from extractors.registry import extractor_class
from io_utils.files import atomic_write
from io_utils.outputs import output_folder
from io_utils.video_list import build_video_list

FAILURES_FILE = "failures.tsv"


@dataclass
class Summary:
    done: int = 0
    skipped: int = 0
    failures: dict[Path, str] = field(default_factory=dict)

    def line(self) -> str:
        return f"done: {self.done}, skipped: {self.skipped}, failed: {len(self.failures)}"


def run(args: argparse.Namespace, executor: Executor | None = None) -> int:
    """Extract every video of the list; return the exit status."""
    args = complete_args(args)
    extractor = extractor_class(args.feature_type)
    extractor.validate_args(args)
    jobs, missing = build_video_list(args.video_paths, args.video_dir, args.file_with_video_paths, args.recursive)
    summary = Summary(failures={path: "no such file" for path in missing})
    if missing:
        print(f"{len(missing)} input path(s) do not exist: {', '.join(map(str, missing))}", file=sys.stderr)
    if jobs:
        extractor.prepare(args)  # e.g. download weights once, before the workers start
        progress = tqdm(total=len(jobs), unit="video", disable=None, dynamic_ncols=True)

        def on_result(index: int, status: str, reason: str) -> None:
            path = jobs[index].path
            if status == "failed":
                summary.failures[path] = reason
                tqdm.write(f"FAILED {path}: {reason}", file=sys.stderr)
            elif status == "skipped":
                summary.skipped += 1
                if args.verbose:
                    tqdm.write(f"skipped {path}: {reason}", file=sys.stderr)
            else:
                summary.done += 1
            progress.set_postfix(failed=len(summary.failures), refresh=False)
            progress.update()

        try:
            (executor or LocalPoolExecutor(args)).run(jobs, on_result)
        finally:
            progress.close()
            if args.on_extraction != "print":
                _write_failures(args, summary)
    print(summary.line())
    return 1 if summary.failures else 0


def _write_failures(args: argparse.Namespace, summary: Summary) -> None:
    """``<output folder>/failures.tsv`` lists path and reason; it is removed when a run has no failures."""
    path = output_folder(args.output_path, args.feature_type, args.output_direct) / FAILURES_FILE
    if not summary.failures:
        path.unlink(missing_ok=True)
        return
    lines = "".join(f"{video}\t{reason}\n" for video, reason in summary.failures.items())
    atomic_write(path, lambda handle: handle.write(("path\treason\n" + lines).encode()))
