"""Where a video's outputs go, and the sinks that receive them batch by batch.

A sink gets each batch's outputs as the model produces them (``add``), then ``close(fps)`` once the video
is done, or ``abort()`` if it failed. Sinks that write files never leave a partial output under its final
name: ``.npy`` files are streamed into a temporary file beside their destination and renamed when complete;
image folders are filled under a temporary name and renamed as a whole. The streaming sinks hold one batch at
a time, so a long video's dense outputs (optical flow) never sit in memory whole.
"""
from __future__ import annotations

import os
import pickle
import shutil
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path, PurePath
from typing import Callable, Iterator, Mapping, Protocol, Sequence

import numpy as np

from io_utils.errors import VideoError
from io_utils.files import atomic_write, temporary_beside, temporary_folder_beside
from io_utils.flow_images import DEFAULT_BOUND, write_flow_jpegs, write_flow_png
from io_utils.remote_outputs import join, staging_folder
from io_utils.sources import is_url
from io_utils.video_list import VideoJob

FLOW_IMAGE_MODES = ("save_flow_images", "save_flow_viz")
SHARD_SUFFIXES = {"save_parquet": ".parquet", "save_webdataset": ".tar"}  # io_utils.shards
ON_EXTRACTION_CHOICES = ("print", "save_numpy", "save_pickle", *SHARD_SUFFIXES, *FLOW_IMAGE_MODES)
PENDING_FOLDER = ".pending"  # a shard's videos until the shard is written: <folder>/.pending/<shard>/
_EXTENSIONS = {"save_numpy": ".npy", "save_pickle": ".pkl", **{mode: ".npy" for mode in SHARD_SUFFIXES}}
_NO_FRAMES = "no frames were sampled"


def output_folder(output_path: str | os.PathLike, feature_type: str, output_direct: bool) -> Path | str:
    """``OUT/<feature_type with / replaced by _>`` by default, or ``OUT`` itself with ``--output_direct``; a URL
    for an output path in object storage."""
    name = feature_type.replace("/", "_")
    if is_url(output_path):
        return str(output_path).rstrip("/") if output_direct else join(str(output_path), name)
    return Path(output_path) if output_direct else Path(output_path) / name


@dataclass(frozen=True)
class OutputLayout:
    """Where the outputs of a run go: its ``folder``, its output ``keys`` (the main features first, then the other
    outputs, ``fps`` and ``timestamps_ms``) and ``--on_extraction``.

    Built once per run and handed to everything that writes or reads outputs (the workers, the Ray actors, the
    claims, the manifest, ``pack``, ``--collect_pickle``, and :meth:`in_folder` for the outputs of an earlier
    run), so the naming is written here only:

    - ``folder/<output stem>_<key>.<ext>`` for every key;
    - a CSV list's ``feature_path`` receives the main key itself (relative paths are taken under ``folder``), the
      other keys go beside it as ``<feature stem>_<key>.<ext>``;
    - flow images go to one folder per video under the main key: ``folder/<output stem>/`` for the JPEG pairs,
      ``folder/<output stem>_viz/`` for the pictures (so that both can exist, each complete or absent);
    - the sharded modes (``io_utils.shards``) stage a video's ``.npy`` files in its shard's pending folder,
      ``folder/.pending/<shard>/<output stem>_<key>.npy``, until the shard ``folder/<shard>.parquet`` (or
      ``.tar``) is written from them.
    """

    folder: Path
    keys: tuple[str, ...]
    on_extraction: str
    remote: str | None = None  # the folder's URL when it is in object storage; ``folder`` then stages outputs

    def staged_here(self) -> OutputLayout:
        """The layout this process writes with: for an output folder in object storage, a private local staging
        folder of its own (``io_utils.remote_outputs``); the layout itself otherwise."""
        return replace(self, folder=staging_folder()) if self.remote else self

    @property
    def main_key(self) -> str:
        return self.keys[0]

    def paths(self, job: VideoJob) -> dict[str, Path]:
        """Where each output key of ``job`` goes (nothing for ``print``, which writes no file), the main key
        last: its presence means "complete"."""
        if self.on_extraction == "print":
            return {}
        if self.on_extraction in FLOW_IMAGE_MODES:
            stem = job.output_stem
            viz = self.on_extraction == "save_flow_viz"
            return {self.main_key: self.folder / (stem.with_name(f"{stem.name}_viz") if viz else stem)}
        return {key: self.path(job, key) for key in (*self.keys[1:], self.main_key)}

    def path(self, job: VideoJob, key: str) -> Path:
        """Where output ``key`` of ``job`` goes, for the modes that write one file per key."""
        extension = _EXTENSIONS[self.on_extraction]
        if self.on_extraction in SHARD_SUFFIXES:
            return self.folder / PENDING_FOLDER / job.output_shard / f"{job.output_stem}_{key}{extension}"
        if job.feature_path is None:
            return self.folder / f"{job.output_stem}_{key}{extension}"
        main = job.feature_path if job.feature_path.is_absolute() else self.folder / job.feature_path
        return main if key == self.main_key else main.with_name(f"{main.stem}_{key}{extension}")

    def claim(self, job: VideoJob) -> Path:
        """The lock file of a video: beside its main output."""
        main_output = self.paths(job)[self.main_key]
        return main_output.with_name(main_output.name + ".lock")

    @staticmethod
    def video_name(job: VideoJob) -> str:
        """A video's name in the manifest and in a packed file."""
        return str(job.output_stem)

    def in_folder(self, folder: str | os.PathLike, on_extraction: str = "save_numpy") -> OutputLayout:
        """The same naming under another run's output ``folder`` (``--timestamps_from``, ``--flow_dir``): where
        that run, given the same video list, wrote its outputs."""
        return replace(self, folder=Path(folder), on_extraction=on_extraction)

    def saved_videos(self) -> Iterator[tuple[str, dict[str, Path]]]:
        """(name, {key: path}) of every complete video in ``folder`` written without a CSV list's
        ``feature_path`` (its main file exists; every key's file must), in sorted order."""
        suffix = f"_{self.main_key}{_EXTENSIONS[self.on_extraction]}"
        for main in sorted(self.folder.rglob(f"*{suffix}")):
            job = VideoJob(main, PurePath(main.relative_to(self.folder).as_posix()[: -len(suffix)]))
            paths = self.paths(job)
            if all(path.is_file() for path in paths.values()):
                yield self.video_name(job), paths


class Sink(Protocol):
    """Receives a video's outputs batch by batch."""

    def add(self, outputs: Mapping[str, np.ndarray], timestamps_ms: list[float]) -> None: ...
    def close(self, fps: float) -> dict[str, np.ndarray]: ...
    def abort(self) -> None: ...


class FinishingSink:
    """``--pool mean``, ``--l2_normalize`` and ``--dtype`` in front of another sink.

    Without pooling, each batch is normalised and cast as it passes. With pooling, batches are summed (in
    float64) and one row goes on at the end: the mean over every row (and crop), timed at the mean of their
    times. Normalising comes after pooling, so every saved vector has unit norm. With ``crops`` > 1, outputs
    are (rows, crops, ...) and each crop counts as a row of the mean.
    """

    def __init__(self, inner: Sink, pool: str | None, l2_normalize: bool, dtype: str, crops: int = 1):
        self._inner, self._l2_normalize, self._dtype = inner, l2_normalize, np.dtype(dtype)
        self._pool = pool if pool == "mean" else None  # "none" and None: one row per input
        self._crops = crops
        self._sums: dict[str, np.ndarray] = {}
        self._counts: dict[str, int] = {}
        self._timestamps: list[float] = []

    @classmethod
    def wrapper(cls, pool: str | None, l2_normalize: bool, dtype: str, crops: int = 1) -> Callable[[Sink], Sink]:
        """What to wrap each video's sink in: nothing, if no option asks for it."""
        if pool != "mean" and not l2_normalize and np.dtype(dtype) == np.float32:
            return lambda sink: sink
        return lambda sink: cls(sink, pool, l2_normalize, dtype, crops)

    def add(self, outputs: Mapping[str, np.ndarray], timestamps_ms: list[float]) -> None:
        if self._pool is None:
            self._inner.add({key: self._finish(value) for key, value in outputs.items()}, timestamps_ms)
            return
        for key, value in outputs.items():
            rows = value.reshape(-1, *value.shape[2:]) if self._crops > 1 else value  # crops count as rows
            self._sums[key] = self._sums.get(key, 0) + rows.sum(axis=0, dtype=np.float64)
            self._counts[key] = self._counts.get(key, 0) + len(rows)
        self._timestamps.extend(timestamps_ms)

    def close(self, fps: float) -> dict[str, np.ndarray]:
        if self._pool is not None and self._timestamps:
            means = {key: (total / self._counts[key])[None].astype(np.float32) for key, total in self._sums.items()}
            self._inner.add({key: self._finish(value) for key, value in means.items()},
                            [float(np.mean(self._timestamps))])
        return self._inner.close(fps)

    def abort(self) -> None:
        self._inner.abort()

    def _finish(self, value: np.ndarray) -> np.ndarray:
        if self._l2_normalize:
            value = value / np.maximum(np.linalg.norm(value, axis=-1, keepdims=True), 1e-12)
        return value.astype(self._dtype)


class MemorySink:
    """Keeps every batch; ``close`` returns ``{key: concatenated array, ..., "fps", "timestamps_ms"}``."""

    def __init__(self):
        self._chunks: dict[str, list[np.ndarray]] = {}
        self._timestamps: list[float] = []

    def add(self, outputs: Mapping[str, np.ndarray], timestamps_ms: list[float]) -> None:
        for key, value in outputs.items():
            self._chunks.setdefault(key, []).append(value)
        self._timestamps.extend(timestamps_ms)

    def close(self, fps: float) -> dict[str, np.ndarray]:
        if not self._timestamps:
            raise VideoError(_NO_FRAMES)
        arrays = {key: np.concatenate(chunks) for key, chunks in self._chunks.items()}
        return {**arrays, "fps": np.asarray(fps, dtype=np.float64),
                "timestamps_ms": np.asarray(self._timestamps, dtype=np.float64)}

    def abort(self) -> None:
        self._chunks.clear()


class PickleSink(MemorySink):
    """One ``.pkl`` per key, written when the video is done (pickle needs the whole array)."""

    def __init__(self, paths: Mapping[str, Path]):
        super().__init__()
        self._paths = paths

    def close(self, fps: float) -> dict[str, np.ndarray]:
        arrays = super().close(fps)
        for key, path in self._paths.items():
            atomic_write(path, lambda handle, value=arrays[key]: pickle.dump(value, handle, protocol=pickle.HIGHEST_PROTOCOL))
        return arrays


class NpyStreamSink:
    """One ``.npy`` per key; batch outputs are appended to temporary files as they come.

    The ``.npy`` header is written first with a placeholder row count and rewritten at the end; NumPy pads
    the header so that the first dimension can grow without changing its length.
    """

    def __init__(self, paths: Mapping[str, Path]):
        self._paths = paths
        self._streams: dict[str, _NpyStream] = {}
        self._timestamps: list[float] = []

    def add(self, outputs: Mapping[str, np.ndarray], timestamps_ms: list[float]) -> None:
        for key, value in outputs.items():
            if key not in self._streams:
                self._streams[key] = _NpyStream(self._paths[key], value.dtype, value.shape[1:])
            self._streams[key].append(value)
        self._timestamps.extend(timestamps_ms)

    def close(self, fps: float) -> dict[str, np.ndarray]:
        if not self._timestamps:
            raise VideoError(_NO_FRAMES)
        small = {"fps": np.asarray(fps, dtype=np.float64), "timestamps_ms": np.asarray(self._timestamps, dtype=np.float64)}
        for key, path in self._paths.items():  # in order: the main output last
            if key in small:
                atomic_write(path, lambda handle, value=small[key]: np.save(handle, value, allow_pickle=False))
            else:
                self._streams.pop(key).finish()
        return small

    def abort(self) -> None:
        for stream in self._streams.values():
            stream.discard()
        self._streams.clear()


class _NpyStream:
    def __init__(self, path: Path, dtype: np.dtype, row_shape: tuple[int, ...]):
        self._path, self._dtype, self._row_shape, self._rows = path, np.dtype(dtype), tuple(row_shape), 0
        self._file = temporary_beside(path)
        try:
            self._header_length = self._write_header()
        except BaseException:  # no sink knows of this stream yet: it removes its own file
            self.discard()
            raise

    def append(self, rows: np.ndarray) -> None:
        if rows.shape[1:] != self._row_shape or rows.dtype != self._dtype:
            raise ValueError(f"{self._path.name}: rows of shape {rows.shape[1:]} {rows.dtype}, expected {self._row_shape} {self._dtype}")
        self._file.write(np.ascontiguousarray(rows).tobytes())
        self._rows += len(rows)

    def finish(self) -> None:
        try:
            self._file.seek(0)
            if self._write_header() != self._header_length:
                raise RuntimeError(f"{self._path.name}: the .npy header changed length")
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.replace(self._file.name, self._path)
        except BaseException:
            self.discard()
            raise

    def discard(self) -> None:
        """Remove the temporary file, whatever state its writing is in (closing flushes, which fails on a full
        disk: the file goes all the same)."""
        try:
            self._file.close()
        except OSError:
            pass
        finally:
            Path(self._file.name).unlink(missing_ok=True)

    def _write_header(self) -> int:
        header = {"descr": np.lib.format.dtype_to_descr(self._dtype), "fortran_order": False,
                  "shape": (self._rows, *self._row_shape)}
        np.lib.format.write_array_header_1_0(self._file, header)
        return self._file.tell()


class FlowImageSink:
    """``save_flow_images`` (JPEG pairs) or ``save_flow_viz`` (colour PNGs) into one folder per video."""

    def __init__(self, folder: Path, on_extraction: str, bound: float = DEFAULT_BOUND, key: str = "flow"):
        self._folder, self._key = folder, key
        self._write = partial(write_flow_jpegs, bound=bound) if on_extraction == "save_flow_images" else write_flow_png
        self._temporary = temporary_folder_beside(folder)
        self._count = 0

    def add(self, outputs: Mapping[str, np.ndarray], timestamps_ms: list[float]) -> None:
        for flow in outputs[self._key]:
            self._count += 1
            self._write(self._temporary, self._count, flow)

    def close(self, fps: float) -> dict[str, np.ndarray]:
        if not self._count:
            self.abort()
            raise VideoError(_NO_FRAMES)
        try:
            if self._folder.exists():  # --overwrite
                shutil.rmtree(self._folder)
            os.replace(self._temporary, self._folder)
        except BaseException:
            self.abort()
            raise
        return {"fps": np.asarray(fps, dtype=np.float64)}

    def abort(self) -> None:
        shutil.rmtree(self._temporary, ignore_errors=True)


def open_sink(on_extraction: str, paths: Mapping[str, Path], flow_bound: float = DEFAULT_BOUND):
    """The sink for ``--on_extraction``; ``paths`` from :meth:`OutputLayout.paths` (unused for ``print``)."""
    if on_extraction == "print":
        return MemorySink()
    if on_extraction == "save_pickle":
        return PickleSink(paths)
    if on_extraction == "save_numpy" or on_extraction in SHARD_SUFFIXES:
        return NpyStreamSink(paths)
    (key, folder), = paths.items()
    return FlowImageSink(folder, on_extraction, flow_bound, key)


def print_features(video: Path, features: Mapping[str, np.ndarray]) -> None:
    print(f"{video}:")
    for key, value in features.items():
        value = np.asarray(value)
        if value.ndim == 0:
            print(f"  {key}: {value.item():.6g}")
        else:
            print(f"  {key}: shape {value.shape}, dtype {value.dtype}, mean {value.mean():.5g}, std {value.std():.5g}")


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles NumPy arrays and nothing else: an output folder's ``.pkl`` files are read without running code."""

    _ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
                ("numpy.core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not part of a NumPy array")
        return super().find_class(module, name)


def read_saved(path: Path) -> np.ndarray:
    """One key's array as a save mode wrote it (``.npy`` or ``.pkl``)."""
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False)
    with open(path, "rb") as handle:
        return np.asarray(_ArrayUnpickler(handle).load())


def stored_shapes(paths: Mapping[str, Path]) -> dict[str, list[int]]:
    """The shape of each ``.npy`` output, from its header alone (the array is not read)."""
    return {key: list(np.load(path, mmap_mode="r").shape) for key, path in paths.items() if path.suffix == ".npy"}


def collect_pickle(paths: Sequence[Path], destination: Path, squeeze_single_row: bool) -> list[Path]:
    """Write one pickle at ``destination``: a list with, for each of ``paths`` in order, its array (None where it
    is missing), the layout of MMAction2's clip feature extraction; ``squeeze_single_row`` saves a pooled
    (1, D) video as (D,), as MMAction2 does. The file appears complete or not at all. Returns the missing paths.

    The list is pickled whole, so it is held in memory: 8 KiB per video for pooled 2048-d features."""
    arrays: list[np.ndarray | None] = []
    missing = []
    for path in paths:
        if not path.is_file():
            missing.append(path)
            arrays.append(None)
            continue
        array = read_saved(path)
        arrays.append(array[0] if squeeze_single_row and array.shape[:1] == (1,) else array)
    destination.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(destination, lambda handle: pickle.dump(arrays, handle, protocol=pickle.HIGHEST_PROTOCOL))
    return missing
