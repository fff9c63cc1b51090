"""Features written into shard files: ``--on_extraction save_parquet`` and ``save_webdataset``.

A run's videos are grouped into output shards (:func:`assign_output_shards`): with ``--shards`` input, output shard
*k* holds exactly input shard *k*'s videos, under its name; otherwise shards of ``--shard_size`` videos are formed in
list order. A worker writes a video's outputs as ``.npy`` files under ``<folder>/.pending/<shard>/`` (the per-video
files, claims and temporaries of :mod:`io_utils.claims`, unchanged); once every video of a shard has an outcome,
the main process writes the shard from them (:class:`ShardAssembly`), under a draft name inside the pending folder,
publishes it whole (a rename on a disk, one put in object storage) and removes the pending folder. So a shard is
complete or absent, a run killed mid-shard redoes only the videos of that shard that had not finished, and once a
shard is published nothing but it and the run's records (manifest, failures) remains.

- **Parquet** (``<shard>.parquet``): one row per video: ``key`` (see :func:`sample_key`), ``video`` (the name the
  manifest uses), ``source``, one column per output, and ``record`` (the manifest's record, as JSON). An output of
  one row per step (N, D) is a ``list<fixed_size_list<dtype, D>>``; a vector a ``list<dtype>``; a scalar (``fps``) a
  ``dtype`` value; anything of more dimensions is flattened into a ``list<dtype>`` beside a ``<output>_shape`` column.
- **WebDataset** (``<shard>.tar``): one sample per video: ``<key>.<output>.npy`` members (``np.save``'s format)
  and ``<key>.json`` (``video``, ``source`` and ``record``).

A video that fails is left out of its shard; its failure is recorded in the manifest with its shard
(``{"shard": ..., "failed": reason}``), and a re-run reports it again rather than extracting it.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from dataclasses import dataclass, replace
from pathlib import Path, PurePath
from typing import Any, BinaryIO, Callable, Iterable, Iterator

import numpy as np

from io_utils.claims import Claim, outputs_complete
from io_utils.errors import UsageError, VideoError
from io_utils.outputs import PENDING_FOLDER, SHARD_SUFFIXES, OutputLayout, read_saved
from io_utils.remote_outputs import RemoteClaim, RemoteFolder, relative_to
from io_utils.sources import ShardMember
from io_utils.video_list import VideoJob

DEFAULT_SHARD_SIZE = 1000
Opener = Callable[[str, str], BinaryIO]
ROWS_PER_GROUP = 256  # a Parquet row group closes after this many videos or ROW_GROUP_BYTES, whichever first
ROW_GROUP_BYTES = 64 << 20
_ASSEMBLY_CLAIM = "shard.lock"
_DRAFT_PREFIX = "draft-"


def sample_key(name: str) -> str:
    """A video's WebDataset key (and Parquet ``key``): its name with dots made underscores, since WebDataset reads
    a member name's first dot as the start of its extension."""
    return name.replace(".", "_")


def assign_output_shards(jobs: list[VideoJob], shard_size: int) -> list[VideoJob]:
    """``jobs`` with their output shard set (see the module's docstring). Keys must differ within a shard."""
    named = [replace(job, output_shard=_input_shard_name(job.path) if isinstance(job.path, ShardMember)
                     else f"{position // shard_size:06d}") for position, job in enumerate(jobs)]
    keys: dict[tuple[str, str], VideoJob] = {}
    for job in named:
        other = keys.setdefault((job.output_shard, sample_key(str(job.output_stem))), job)
        if other is not job:
            raise UsageError(f"{other.path} and {job.path} have the same key in output shard {job.output_shard} "
                             "once dots are made underscores (WebDataset reads a dot as the start of an extension)")
    return named


def _input_shard_name(member: ShardMember) -> str:
    name = PurePath(str(member.shard)).name
    return name[: -len(".tar")] if name.endswith(".tar") else name


@dataclass
class ShardVideo:
    """One video of a shard as it is written: its names, its source and manifest record, its arrays by key."""

    name: str
    source: str
    record: dict[str, Any] | None
    arrays: dict[str, np.ndarray]

    @property
    def key(self) -> str:
        return sample_key(self.name)


def write_shard(on_extraction: str, path: Path | BinaryIO, videos: Iterable[ShardVideo]) -> int:
    """Write ``videos`` into the shard file ``path`` (Parquet or WebDataset tar; a path or an open binary file);
    return how many were written."""
    if on_extraction == "save_parquet":
        return _write_parquet(path, videos)
    return _write_tar(path, videos)


def _write_tar(path: Path | BinaryIO, videos: Iterable[ShardVideo]) -> int:
    count = 0
    target = {"name": path} if isinstance(path, Path) else {"fileobj": path}
    with tarfile.open(mode="w", format=tarfile.PAX_FORMAT, **target) as tar:
        for video in videos:
            members = {f"{video.key}.{key}.npy": _npy_bytes(array) for key, array in video.arrays.items()}
            members[f"{video.key}.json"] = json.dumps(
                {"video": video.name, "source": video.source, "record": video.record}).encode()
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
            count += 1
    return count


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _write_parquet(path: Path | BinaryIO, videos: Iterable[ShardVideo]) -> int:
    import pyarrow.parquet as pq

    writer, group, size, count = None, [], 0, 0
    try:
        for video in videos:
            group.append(video)
            size += sum(array.nbytes for array in video.arrays.values())
            if len(group) >= ROWS_PER_GROUP or size >= ROW_GROUP_BYTES:
                writer = _write_row_group(pq, path, writer, group)
                count, group, size = count + len(group), [], 0
        if group or writer is None:
            writer = _write_row_group(pq, path, writer, group)
            count += len(group)
    finally:
        if writer is not None:
            writer.close()
    return count


def _write_row_group(pq, path: Path | BinaryIO, writer, group: list[ShardVideo]):
    """Write ``group`` as one row group (opening the writer with the first group's schema)."""
    table = _table(group)
    if writer is None:
        writer = pq.ParquetWriter(path, table.schema)
    elif not table.schema.equals(writer.schema):
        raise ValueError(f"{getattr(path, 'name', path)}: a video's outputs differ in kind from the shard's first ({table.schema})")
    writer.write_table(table)
    return writer


def _table(group: list[ShardVideo]):
    import pyarrow as pa

    columns: dict[str, Any] = {"key": pa.array([video.key for video in group], pa.string()),
                               "video": pa.array([video.name for video in group], pa.string()),
                               "source": pa.array([video.source for video in group], pa.string())}
    keys = list(group[0].arrays) if group else []
    for key in keys:
        arrays = [video.arrays[key] for video in group]
        if any(array.ndim != arrays[0].ndim for array in arrays):
            raise ValueError(f"output {key}: arrays of several ranks in one shard")
        columns[key] = _column(pa, arrays)
        if arrays[0].ndim > 2:
            columns[f"{key}_shape"] = pa.array([list(array.shape) for array in arrays], pa.list_(pa.int64()))
    columns["record"] = pa.array([json.dumps(video.record) for video in group], pa.string())
    return pa.table(columns)


def _column(pa, arrays: list[np.ndarray]):
    """One output of a row group as an Arrow column (the layouts of the module's docstring)."""
    if arrays[0].ndim == 0:
        return pa.array(np.stack(arrays))
    flat = pa.array(np.concatenate([array.reshape(-1) for array in arrays]))
    if arrays[0].ndim == 2:
        width = arrays[0].shape[1]
        if any(array.shape[1] != width for array in arrays):
            raise ValueError("rows of several widths in one shard")
        flat = pa.FixedSizeListArray.from_arrays(flat, width)
        lengths = [len(array) for array in arrays]
    else:
        lengths = [array.size for array in arrays]
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
    return pa.ListArray.from_arrays(offsets, flat)


def shard_index(path: str | Path, opener: Opener = open) -> dict[str, Any]:
    """Where each video of a shard file is, by name, in order, from the file's index alone (Parquet: its row group
    and row; tar: its members' offsets and sizes, from their headers), for :func:`read_from_shard`. ``opener``
    opens the file for reading (an object in a store: fsspec's ``open``, which reads ranges)."""
    with opener(str(path), "rb") as handle:
        if PurePath(str(path)).suffix == ".parquet":
            import pyarrow.parquet as pq

            shard = pq.ParquetFile(handle)
            return {name: (group, row) for group in range(shard.num_row_groups) for row, name in
                    enumerate(shard.read_row_group(group, columns=["video"]).column("video").to_pylist())}
        by_key: dict[str, dict[str, tuple[int, int]]] = {}
        with tarfile.open(fileobj=handle) as tar:
            for member in tar:
                if member.isfile() and "." in member.name:
                    key, extension = member.name.split(".", 1)
                    by_key.setdefault(key, {})[extension] = (member.offset_data, member.size)
        index: dict[str, Any] = {}
        for key, members in by_key.items():
            name = json.loads(_read_at(handle, *members["json"]))["video"] if "json" in members else key
            index[name] = {extension[: -len(".npy")]: place for extension, place in members.items()
                           if extension.endswith(".npy")}
        return index


def read_from_shard(path: str | Path, place: Any, opener: Opener = open) -> dict[str, np.ndarray]:
    """One video's arrays from a shard file, at ``place`` (from :func:`shard_index`)."""
    with opener(str(path), "rb") as handle:
        if PurePath(str(path)).suffix == ".parquet":
            import pyarrow.parquet as pq

            group, row = place
            batch = pq.ParquetFile(handle).read_row_group(group).slice(row, 1).to_batches()[0]
            outputs = [name for name in batch.schema.names
                       if name not in ("key", "video", "source", "record") and not name.endswith("_shape")]
            return {name: _cell(batch, name, 0) for name in outputs}
        return {key: np.load(io.BytesIO(_read_at(handle, *member)), allow_pickle=False)
                for key, member in place.items()}


def _read_at(handle, offset: int, size: int) -> bytes:
    handle.seek(offset)
    return handle.read(size)


def _cell(batch, name: str, row: int) -> np.ndarray:
    """One video's array of output ``name`` from an Arrow batch (the inverse of :func:`_column`)."""
    import pyarrow as pa

    value = batch.column(name)[row]
    if not isinstance(value, pa.ListScalar):
        return np.asarray(value.as_py(), dtype=value.type.to_pandas_dtype())
    values = value.values
    if isinstance(values.type, pa.FixedSizeListType):
        return values.flatten().to_numpy(zero_copy_only=False, writable=True).reshape(-1, values.type.list_size)
    flat = values.to_numpy(zero_copy_only=False, writable=True)
    if f"{name}_shape" in batch.schema.names:
        return flat.reshape(batch.column(f"{name}_shape")[row].as_py())
    return flat


class ShardAssembly:
    """The main process's side of sharded outputs: which videos of each shard still wait for an outcome, and the
    shard written and published once none does (see the module's docstring). ``record_of`` gives a video's
    manifest record; the shards in ``published`` are not written again, and what a run stopped right after
    publishing one left in its pending folder (``leftovers``) is removed now."""

    def __init__(self, layout: OutputLayout, jobs: list[VideoJob], record_of: Callable[[str], dict | None],
                 published: set[str], leftovers: set[str]):
        self.layout, self._record_of = layout, record_of
        self._members: dict[str, list[VideoJob]] = {}
        for job in jobs:
            self._members.setdefault(job.output_shard, []).append(job)
        self._waiting = {shard: set(members) for shard, members in self._members.items() if shard not in published}
        self._blocked: set[str] = set()  # a video of the shard is another run's: that run writes the shard
        self._remote = RemoteFolder(layout.remote) if layout.remote else None
        for shard in sorted(leftovers & published):
            self._remove_pending(self.layout.folder / PENDING_FOLDER / shard)

    def resolved(self, job: VideoJob, held_elsewhere: bool) -> None:
        """Note that ``job`` has an outcome; when it was its shard's last, write and publish the shard."""
        waiting = self._waiting.get(job.output_shard)
        if waiting is None or job not in waiting:
            return
        waiting.discard(job)
        if held_elsewhere:
            self._blocked.add(job.output_shard)
        if not waiting and job.output_shard not in self._blocked:
            self._assemble(job.output_shard)

    def _assemble(self, shard: str) -> None:
        """Write the shard as a draft in its pending folder (synced to the disk), publish it, remove the folder."""
        pending = self.layout.folder / PENDING_FOLDER / shard
        claim = self._claim(shard, pending)
        if claim is None:
            return  # another run is writing it
        try:
            destination = self.layout.folder / f"{shard}{SHARD_SUFFIXES[self.layout.on_extraction]}"
            draft = pending / f"{_DRAFT_PREFIX}{destination.name}"
            draft.parent.mkdir(parents=True, exist_ok=True)
            with open(draft, "wb") as handle:
                write_shard(self.layout.on_extraction, handle, self._videos(shard))
                handle.flush()
                os.fsync(handle.fileno())
            self._publish(draft, destination)
        finally:
            claim.release()
        self._remove_pending(pending)

    def _claim(self, shard: str, pending: Path) -> Claim | RemoteClaim | None:
        if self._remote is None:
            pending.mkdir(parents=True, exist_ok=True)
            return Claim.acquire(pending / _ASSEMBLY_CLAIM)
        return RemoteClaim.acquire(self._remote, f"{PENDING_FOLDER}/{shard}/{_ASSEMBLY_CLAIM}")

    def _videos(self, shard: str) -> Iterator[ShardVideo]:
        """The shard's videos whose outputs were written, in list order, each read when it is written."""
        for job in self._members[shard]:
            paths = self.layout.paths(job)
            if self._remote is not None and not all(self._remote.download(relative_to(self.layout.folder, path), path)
                                                    for path in paths.values()):
                continue
            if not outputs_complete(paths.values()):
                continue  # failed: the manifest says why
            name = self.layout.video_name(job)
            arrays = {key: read_saved(paths[key]) for key in self.layout.keys}
            yield ShardVideo(name, str(job.path), self._record_of(name), arrays)
            if self._remote is not None:
                for path in paths.values():
                    path.unlink(missing_ok=True)

    def _publish(self, draft: Path, destination: Path) -> None:
        if self._remote is None:
            os.replace(draft, destination)
            return
        try:
            self._remote.upload(draft, destination.name)  # one put: the object appears whole
        finally:
            draft.unlink(missing_ok=True)

    def _remove_pending(self, pending: Path) -> None:
        shutil.rmtree(pending, ignore_errors=True)
        if self._remote is None:
            try:
                pending.parent.rmdir()  # the last shard's: the folder goes too
            except OSError:
                pass
            return
        try:
            self._remote.delete_below(relative_to(self.layout.folder, pending))
        except VideoError:
            pass  # removed by the next run (its listing shows it)
