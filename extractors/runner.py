"""A whole run: the video list, the executor, a progress bar, the summary and the failures file.

Expected problems with one video (missing, corrupt, too short...) are reported as one line and the other
videos go on. The exit status is 1 if any video failed, 0 otherwise.
"""
from __future__ import annotations

import shutil
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, Mapping

from tqdm import tqdm

from extractors.config import RunConfig, joint_configs, resolve_config
from extractors.devices import worker_devices
from extractors.engine_options import DTYPE, POOL
from extractors.pool import LocalPoolExecutor
from extractors.scheduling import Executor, Progress, Result
from extractors.worker import OUTPUTS_EXIST, Extraction
from io_utils.errors import UsageError, VideoError
from io_utils.files import atomic_write, unwritable_reason
from io_utils.manifest import (JOURNAL_FILE, MANIFEST_FILE, Manifest, existing_manifest, file_sha256,
                               refuse_another_configuration)
from io_utils.output_stores import Listing, finished_by_listing
from io_utils.outputs import SHARD_SUFFIXES, OutputLayout, collect_pickle, stored_shapes
from io_utils.remote_outputs import ManifestMirror, RemoteFolder
from io_utils.shards import DEFAULT_SHARD_SIZE, ShardAssembly, assign_output_shards
from io_utils.sources import source_facts
from io_utils.video_list import VideoJob, in_shard, list_jobs, list_shard_jobs, split_jobs

FAILURES_FILE = "failures.tsv"


@dataclass
class Summary:
    done: int = 0
    skipped: int = 0
    failures: dict[str, str] = field(default_factory=dict)  # input (path, URL, shard member) -> reason

    def line(self) -> str:
        return f"done: {self.done}, skipped: {self.skipped}, failed: {len(self.failures)}"


def run(options: RunConfig | Mapping[str, Any], executor: Executor | None = None) -> int:
    """Extract every video of the list (``feature_type``: one type, or a list of several taken from one decode of
    each video); return the exit status."""
    extraction = Extraction.of(run_configs(options))  # the output layouts, built once for the whole run
    config, parts = extraction.config, extraction.every
    if executor is None and config.backend == "local":
        worker_devices(config)  # a wrong device list stops here, before any checkpoint or worker
    extensions = frozenset.intersection(*(part.extractor.input_extensions for part in parts))
    listed, damaged_shards = _listed_jobs(config, extensions)
    if config.on_extraction in SHARD_SUFFIXES:  # before missing files are set aside: a shard's videos stay its own
        listed = assign_output_shards(_without_feature_paths(list(dict.fromkeys(listed))),
                                      config.shard_size or DEFAULT_SHARD_SIZE)
    jobs, missing = split_jobs(listed)  # output names must not collide across shards either
    node = {job.path: in_shard(job.output_shard or job.path, config.shard) for job in listed}
    listed = [job for job in listed if node[job.path]]
    jobs = [job for job in jobs if node[job.path]]
    missing = [path for path in missing if node[path]]
    summaries = {part.config.feature_type: Summary(failures={**{str(path): "no such file" for path in missing},
                                                             **damaged_shards})
                 for part in parts}
    if missing:
        print(f"{len(missing)} input path(s) do not exist: {', '.join(map(str, missing))}", file=sys.stderr)
    for shard, problem in damaged_shards.items():
        print(f"FAILED {shard}: {problem}", file=sys.stderr)
    if jobs:
        _extract(extraction, jobs, summaries, executor)
    if config.collect_pickle:
        _collect(config, extraction.layout, listed)
    for name, summary in summaries.items():
        print(f"{name}: {summary.line()}" if len(parts) > 1 else summary.line())
    return 1 if any(summary.failures for summary in summaries.values()) else 0


def run_configs(options: RunConfig | Mapping[str, Any]) -> list[RunConfig]:
    """The configuration of each feature type of a run (one, unless ``feature_type`` lists several)."""
    kinds = None if isinstance(options, RunConfig) else options.get("feature_type")
    if isinstance(kinds, (list, tuple)) and len(kinds) > 1:
        return joint_configs(options)
    if isinstance(kinds, (list, tuple)):
        options = {**options, "feature_type": kinds[0]}
    return [resolve_config(options)]


def _without_feature_paths(jobs: list[VideoJob]) -> list[VideoJob]:
    """A CSV list's ``feature_path`` names a file per video, which sharded outputs do not write: refused."""
    named = next((job for job in jobs if job.feature_path is not None), None)
    if named is not None:
        raise UsageError(f"{named.path}: the list gives a feature_path, but save_parquet and save_webdataset write "
                         "shards; give a list of video paths only, or --on_extraction save_numpy")
    return jobs


def _extract(extraction: Extraction, jobs: list[VideoJob], summaries: dict[str, Summary],
             executor: Executor | None) -> None:
    """Run the executor on ``jobs``, with each feature type's manifest and failures file kept up to date. The
    videos an output listing shows finished are reported without a worker; with sharded outputs, each shard is
    written once its last video has an outcome."""
    config = extraction.config
    saving = config.on_extraction != "print"
    books: list[_TypeBook] = []
    found: list[Mapping[str, Any] | None] = []  # each type's manifest as read from its folder
    try:
        for part in extraction.every:
            layout = part.layout.staged_here()  # in object storage: this process's staging folder for the manifest
            books.append(_TypeBook(part.config.feature_type, layout, summaries[part.config.feature_type]))
            books[-1].mirror = _manifest_mirror(layout) if saving else None  # its staging folder goes if this fails
            found.append(existing_manifest(layout.folder) if saving else None)
            if saving:  # refused before any checkpoint is downloaded
                refuse_another_configuration(layout.remote or layout.folder, found[-1], part.config.recorded(),
                                             config.overwrite)
        for part in extraction.every:
            part.extractor.prepare(part.config)  # e.g. download weights once, before the workers start
        for part, book, existing in zip(extraction.every, books, found):
            book.manifest = _open_manifest(part, book.layout, existing, book.mirror) if saving else None
        listings = [finished_by_listing(book.layout, jobs) if saving and not config.overwrite else Listing()
                    for book in books]
        for book, listing in zip(books, listings):
            if config.on_extraction in SHARD_SUFFIXES:
                book.assembly = ShardAssembly(book.layout, jobs, book.manifest.record, listing.published,
                                              listing.pending)
        progress = _Progress(jobs, books, config.verbose)
        try:
            finished = _finished(jobs, books, listings)
            for result in finished.values():
                progress.on_result(result)
            remaining = [index for index in range(len(jobs)) if index not in finished]
            if remaining:
                (executor or _executor(config)).run(extraction, [jobs[index] for index in remaining],
                                                    lambda result: progress.on_result(_renumbered(result, remaining)),
                                                    lambda update: progress.on_progress(_renumbered(update, remaining)))
        finally:
            progress.close()
            for book in books:
                with _stopping_when_unwritable(book.layout):
                    if book.manifest is not None:
                        book.manifest.save()
                    if saving:
                        _write_failures(book.layout.folder, book.summary, book.mirror)
    finally:
        for book in books:
            if book.layout.remote:
                shutil.rmtree(book.layout.folder, ignore_errors=True)


def _finished(jobs: list[VideoJob], books: list[_TypeBook], listings: list[Listing]) -> dict[int, Result]:
    """The results of the videos finished for every feature type, as one listing of each type's output folder
    shows them (``listings``: :func:`finished_by_listing`'s), by position in ``jobs``: skipped, or, in a published
    shard, failed again if the manifest says it failed."""
    results = {}
    for index, job in enumerate(jobs):
        if not all(job in listing.finished for listing in listings):
            continue
        parts = {book.name: _finished_result(index, job, book, job.output_shard in listing.published)
                 for book, listing in zip(books, listings)}
        results[index] = next(iter(parts.values())) if len(parts) == 1 else Result.of_parts(index, parts)
    return results


def _finished_result(index: int, job: VideoJob, book: _TypeBook, in_published_shard: bool) -> Result:
    record = book.manifest.record(book.layout.video_name(job)) if in_published_shard else None
    if record is not None and "failed" in record:
        return Result(index, "failed", record["failed"])
    return Result(index, "skipped", OUTPUTS_EXIST)


def _renumbered(message: Any, positions: list[int]) -> Any:
    """A message of the executor about ``jobs[positions[i]]`` (it numbers the jobs it was given), numbered as in
    the run's list."""
    return replace(message, job_id=positions[message.job_id])


@dataclass
class _TypeBook:
    """What the main process keeps of one feature type of a run: where its outputs go (``layout``: staged here),
    its summary, its manifest (with, in object storage, its mirror) and, with sharded outputs, its shards."""

    name: str
    layout: OutputLayout
    summary: Summary
    mirror: ManifestMirror | None = None
    manifest: Manifest | None = None
    assembly: ShardAssembly | None = None


@contextmanager
def _stopping_when_unwritable(layout: OutputLayout) -> Iterator[None]:
    """A write into the output folder that fails because it takes no more (full, read-only) stops the run with one
    line naming the folder and its free space, as a worker's does."""
    try:
        yield
    except OSError as error:
        reason = unwritable_reason(error, layout.folder)
        if reason is None:
            raise
        raise UsageError(reason) from error


def _manifest_mirror(layout: OutputLayout) -> ManifestMirror | None:
    """For an output folder in object storage: its manifest and journal pulled into staging (the run stops here,
    in one line, if the store cannot be reached or written)."""
    if not layout.remote:
        return None
    folder = RemoteFolder(layout.remote)
    folder.check_writable()
    mirror = ManifestMirror(folder, layout.folder)
    mirror.pull(MANIFEST_FILE, layout.folder / JOURNAL_FILE)
    return mirror


def _listed_jobs(config: RunConfig, extensions: frozenset[str]) -> tuple[list[VideoJob], dict[str, str]]:
    """The videos of the run's inputs, and the shards whose listing stopped at damage (with the reason)."""
    if config.shards:
        return list_shard_jobs(config.shards, extensions)
    return list_jobs(config.video_paths, config.video_dir, config.file_with_video_paths, config.recursive,
                     extensions, config.frames_dir), {}


def _open_manifest(extraction: Extraction, layout: OutputLayout, existing: Mapping[str, Any] | None,
                   mirror: ManifestMirror | None) -> Manifest:
    """The output folder's manifest (``existing``: as read from the folder), refusing a folder of features made
    with another configuration."""
    config = extraction.config
    checkpoints = {file.path.name: {"sha256": file_sha256(file.path), "url": file.source,
                                    "preprocessing": file.preprocessing}
                   for file in extraction.extractor.weights_files(config)}
    configuration = {**config.recorded(), "checkpoint_sha256": {name: entry["sha256"] for name, entry in checkpoints.items()}}
    recipe = {"checkpoints": checkpoints, "sampling": extraction.extractor.sampling_rule(config),
              "device": _device(config)}
    return Manifest.open(layout.folder, existing, configuration, recipe, config.overwrite, mirror)


def _device(config: RunConfig) -> dict[str, Any]:
    if config.cpu:
        return {"type": "cpu", "saved_dtype": config[DTYPE]}
    import torch

    names = [torch.cuda.get_device_name(index) for index in config.device_ids] if torch.cuda.is_available() else []
    return {"type": "cuda", "names": names, "saved_dtype": config[DTYPE]}


def _executor(config: RunConfig) -> Executor:
    if config.backend == "ray":
        from extractors.ray_backend import RayExecutor  # Ray is imported only by the runs that use it

        return RayExecutor()
    return LocalPoolExecutor()


class _Progress:
    """One bar counting videos (in a terminal), its postfix showing how far each video in work has got; each
    feature type's manifest records and summary as results come."""

    def __init__(self, jobs: list[VideoJob], books: list[_TypeBook], verbose: bool):
        self._jobs, self._books, self._verbose = jobs, books, verbose
        self._bar = tqdm(total=len(jobs), unit="video", disable=None, dynamic_ncols=True)
        self._in_work: dict[int, str] = {}

    def on_result(self, result: Result) -> None:
        job = self._jobs[result.job_id]
        for book in self._books:
            self._record(job, book, result.of_type(book.name))
        self._in_work.pop(result.job_id, None)
        self._show(refresh=False)
        self._bar.update()

    def _record(self, job: VideoJob, book: _TypeBook, result: Result) -> None:
        """One feature type's result of a video, into its manifest and summary."""
        named = f" ({book.name})" if len(self._books) > 1 else ""
        if book.manifest is not None:
            name, record = book.layout.video_name(job), result.record
            if (record is None and result.reason == OUTPUTS_EXIST and job.output_shard is None
                    and not book.manifest.has_video(name)):  # (a shard's videos are recorded before it is written)
                record = self._found_record(job, book.layout)
            if job.output_shard is not None and result.status == "failed":
                record = {"shard": job.output_shard, "failed": result.reason}
            elif job.output_shard is not None and record is not None:
                record = {**record, "shard": job.output_shard}
            if record is not None and record != book.manifest.record(name):
                with _stopping_when_unwritable(book.layout):
                    book.manifest.add_video(name, record)
        if book.assembly is not None:
            self._write_shard(job, book, held_elsewhere=result.status == "skipped" and result.reason != OUTPUTS_EXIST)
        if result.status == "failed":
            book.summary.failures[str(job.path)] = result.reason
            tqdm.write(f"FAILED {job.path}{named}: {result.reason}", file=sys.stderr)
        elif result.status == "skipped":
            book.summary.skipped += 1
            if self._verbose:
                tqdm.write(f"skipped {job.path}{named}: {result.reason}", file=sys.stderr)
        else:
            book.summary.done += 1

    @staticmethod
    def _write_shard(job: VideoJob, book: _TypeBook, held_elsewhere: bool) -> None:
        """Write ``job``'s shard if it was the last of it to have an outcome (a disk that is full stops the run;
        another problem fails the shard, whose videos stay pending for the next run)."""
        try:
            with _stopping_when_unwritable(book.layout):
                book.assembly.resolved(job, held_elsewhere)
        except (OSError, ValueError, VideoError) as error:
            shard = f"{book.layout.remote or book.layout.folder}/{job.output_shard}"
            book.summary.failures[shard] = f"the shard could not be written: {error}"
            tqdm.write(f"FAILED {shard}: the shard could not be written: {error}", file=sys.stderr)

    @staticmethod
    def _found_record(job: VideoJob, layout: OutputLayout) -> dict | None:
        """What can be recorded of a video whose outputs a run finds complete, for a manifest that has no record
        of it (a worker stopped after writing them but before reporting, or they predate manifests): its source
        and output shapes, and that nothing else is known. None if the files went away meanwhile."""
        try:
            outputs = {} if layout.remote else {"outputs": stored_shapes(layout.paths(job))}
            return {**source_facts(job.path), **outputs, "found_complete": True}
        except (OSError, ValueError, VideoError):
            return None

    def on_progress(self, progress: Progress) -> None:
        self._in_work[progress.job_id] = (f"{self._jobs[progress.job_id].path.name} "
                                          f"{progress.done_s:.0f}/{progress.total_s:.0f}s")
        self._show(refresh=True)

    def _show(self, refresh: bool) -> None:
        failed = f"failed={max(len(book.summary.failures) for book in self._books)}"
        self._bar.set_postfix_str(", ".join([failed, *self._in_work.values()]), refresh=refresh)

    def close(self) -> None:
        self._bar.close()


def _collect(config: RunConfig, layout: OutputLayout, jobs: list[VideoJob]) -> None:
    """``--collect_pickle``: the main features of every video of the list, in its order (repeats repeated), in one
    pickle."""
    paths = [layout.paths(job)[layout.main_key] for job in jobs]
    missing = collect_pickle(paths, Path(config.collect_pickle), squeeze_single_row=config[POOL] == "mean")
    note = f", {len(missing)} without features (None in their place)" if missing else ""
    print(f"collected {len(paths) - len(missing)} videos into {config.collect_pickle}{note}", file=sys.stderr)


def _write_failures(folder: Path, summary: Summary, mirror: ManifestMirror | None = None) -> None:
    """``<output folder>/failures.tsv`` lists path and reason; it is removed when a run has no failures (``mirror``:
    the same in the store)."""
    path = folder / FAILURES_FILE
    if not summary.failures:
        path.unlink(missing_ok=True)
        if mirror is not None:
            mirror.delete(FAILURES_FILE)
        return
    lines = "".join(f"{_one_field(video)}\t{_one_field(reason)}\n" for video, reason in summary.failures.items())
    atomic_write(path, lambda handle: handle.write(("path\treason\n" + lines).encode()))
    if mirror is not None:
        mirror.upload(path)


def _one_field(text: str) -> str:
    """``text`` as one TSV field: tabs and line breaks (in a file name, in a library's message) escaped."""
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
