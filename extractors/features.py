"""Reading features back: ``extractors.open_features(path)``, one reader for the outputs of a run.

It takes an output folder of one feature type (``.npy`` or ``.pkl`` files beside their ``manifest.json``, or the
Parquet or WebDataset shards of ``save_parquet`` and ``save_webdataset``), one shard file, or an HDF5 file that
``main.py pack`` wrote (an output folder of ``.npy`` files or shards, or a shard, may be in object storage:
``s3://bucket/features/CLIP-ViT-B_32``), and gives a mapping from each video's name (its output path without the
output's suffix, relative to the folder: ``v_abc``, ``sub/clip``; the name the manifest and a packed file use)
to its arrays, ``{main key: (N, ...), ..., "fps": (), "timestamps_ms": (N,)}``, exactly as ``extract`` returns
them. A video's files are read when it is asked for, so iterating over a large output holds one video at a time.
A video may also be asked for by the path of its video file (``videos/v_abc.mp4``): its name is then its stem.

A ``.pkl`` output is read with ``pickle``, which runs what a pickle holds: open only outputs you trust (``.npy``
and HDF5 outputs are read without running anything).
"""
from __future__ import annotations

import io
import os
import pickle
import tempfile
from pathlib import Path, PurePath
from typing import Callable, Iterator, Mapping

import numpy as np

from extractors.config import finished_layout
from io_utils.errors import UsageError, VideoError
from io_utils.manifest import MANIFEST_FILE
from io_utils.outputs import SHARD_SUFFIXES
from io_utils.pack import PACKED_SUFFIXES, packed_videos, read_packed
from io_utils.remote_outputs import RemoteFolder
from io_utils.shards import Opener, read_from_shard, shard_index
from io_utils.sources import is_url
from io_utils.video_list import VideoJob

class Features(Mapping[str, dict[str, np.ndarray]]):
    """The videos of an output by name, each read when it is asked for."""

    def __init__(self, where: str, names: list[str], read: Callable[[str], dict[str, np.ndarray]]):
        self._where, self._names, self._read = where, names, read
        self._known = set(names)

    def __getitem__(self, video: str | os.PathLike) -> dict[str, np.ndarray]:
        return self._read(self._name(video))

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, video: object) -> bool:
        try:
            self._name(video)  # type: ignore[arg-type]
        except KeyError:
            return False
        return True

    def _name(self, video: str | os.PathLike) -> str:
        """A video's name: itself, or the stem of a video file's path."""
        name = PurePath(video).as_posix()
        if name in self._known:
            return name
        if PurePath(name).stem in self._known:
            return PurePath(name).stem
        raise KeyError(f"{video}: not among the {len(self)} videos of {self._where}")


def open_features(path: str | os.PathLike, feature_type: str | None = None) -> Features:
    """The features of an output folder or a packed HDF5 file (see the module's docstring). ``feature_type``
    names the type that made a folder without ``manifest.json`` (run with its default options)."""
    if is_url(str(path)):
        return _in_store(str(path).rstrip("/"), feature_type)
    path = Path(path)
    if path.suffix in PACKED_SUFFIXES and path.is_file():
        return Features(str(path), packed_videos(path), lambda name: _packed_arrays(path, name))
    if path.suffix in SHARD_SUFFIXES.values() and path.is_file():
        return _sharded(str(path), [path])
    if not path.is_dir():
        raise UsageError(f"{path}: neither an output folder nor a packed file ({' or '.join(PACKED_SUFFIXES)}) "
                         f"nor a shard ({' or '.join(SHARD_SUFFIXES.values())})")
    shards = sorted(shard for suffix in SHARD_SUFFIXES.values() for shard in path.glob(f"*{suffix}"))
    if shards:
        return _sharded(str(path), shards)
    layout = finished_layout(path, feature_type)
    saved = dict(layout.saved_videos())
    load = np.load if layout.on_extraction == "save_numpy" else _unpickled
    return Features(str(path), list(saved), lambda name: {key: load(saved[name][key]) for key in layout.keys})


def _sharded(where: str, shards: list[Path] | list[str], opener: Opener = open) -> Features:
    """The videos of Parquet or WebDataset shard files, found from each shard's index (its videos are read when
    asked for)."""
    places = {name: (shard, place) for shard in shards for name, place in shard_index(shard, opener).items()}
    return Features(where, list(places), lambda name: read_from_shard(*places[name], opener))


def _in_store(url: str, feature_type: str | None) -> Features:
    """A shard, or an output folder of shards or ``.npy`` files, in object storage: the folder is listed once, and
    each video read (in ranges, for a shard) when it is asked for."""
    import fsspec

    try:
        store, root = fsspec.core.url_to_fs(url)
        if PurePath(root).suffix in SHARD_SUFFIXES.values():
            return _sharded(url, [root], store.open)
        folder = RemoteFolder(url)
        listed = folder.list()
        shards = [f"{root}/{name}" for name in listed if "/" not in name and PurePath(name).suffix in SHARD_SUFFIXES.values()]
        if shards:
            return _sharded(url, shards, store.open)
        with tempfile.TemporaryDirectory(prefix="video_features-manifest-") as scratch:
            if not folder.download(MANIFEST_FILE, Path(scratch) / MANIFEST_FILE) and not feature_type:
                raise UsageError(f"{url}: no {MANIFEST_FILE}; give the feature type that made it")
            layout = finished_layout(Path(scratch), feature_type, "save_numpy")
    except (OSError, VideoError) as error:
        raise UsageError(f"{url}: {error}") from error
    objects = {name: {key: path.relative_to(layout.folder).as_posix() for key, path in layout.paths(job).items()}
               for name, job in _named_jobs(listed, layout.main_key)}
    saved = [name for name, keys in objects.items() if set(keys.values()) <= set(listed)]
    return Features(url, saved, lambda name: {key: np.load(io.BytesIO(store.cat_file(f"{root}/{objects[name][key]}")),
                                                           allow_pickle=False) for key in layout.keys})


def _named_jobs(listed: list[str], main_key: str) -> Iterator[tuple[str, VideoJob]]:
    """(name, job) of every ``<name>_<main key>.npy`` object of a listing."""
    suffix = f"_{main_key}.npy"
    for relative in listed:
        if relative.endswith(suffix) and not relative.startswith("."):
            name = relative[: -len(suffix)]
            yield name, VideoJob(PurePath(name), PurePath(name))


def _packed_arrays(path: Path, name: str) -> dict[str, np.ndarray]:
    arrays = read_packed(path, name)
    arrays.pop("manifest", None)
    return arrays


def _unpickled(path: Path) -> np.ndarray:
    with open(path, "rb") as handle:
        return pickle.load(handle)
