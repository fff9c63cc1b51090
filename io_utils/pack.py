"""One HDF5 file for a finished output folder (``python main.py pack FOLDER --to features.h5``), or one Parquet or
WebDataset shard (``--to features.parquet``, ``--to features.tar``): any output ``extractors.open_features`` reads
(a folder of ``.npy``, ``.pkl`` or shards, a shard, a packed file) converted into one file.

Layout: a group per video, named by its output path relative to the folder (``v_abc``, ``sub/clip``), holding
one dataset per output key (the features, ``timestamps_ms``, ``fps``) exactly as the ``.npy`` files hold them,
and the manifest's entry for that video as a JSON attribute ``manifest``; the file's root has the whole
manifest's run description as a JSON attribute ``manifest``. Packing reads one video at a time, writes into a
temporary file beside the destination and renames it into place at the end, so the destination is always
complete; packing again into an existing file copies it and adds the videos it does not hold yet.

Why packing rather than workers writing one HDF5 file while they extract: HDF5 has no safe concurrent writers,
and a crash in the middle of a write can leave the whole file unreadable, where the ``.npy`` path loses at most
the video in progress. Extract to ``.npy`` (crash-safe, resumable), then pack.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from io_utils.errors import UsageError
from io_utils.files import atomic_write, temporary_beside
from io_utils.outputs import SHARD_SUFFIXES
from io_utils.shards import ShardVideo, write_shard

PACKED_SUFFIXES = (".h5", ".hdf5")


def pack(features: Mapping[str, Mapping[str, np.ndarray]], manifest: Mapping[str, Any], destination: Path
         ) -> tuple[int, int]:
    """Pack ``features`` (video name -> arrays, read one video at a time: ``extractors.open_features``) into
    ``destination``, with ``manifest`` (the source folder's, ``{}`` if it has none): an HDF5 file (``.h5``,
    ``.hdf5``; one already there is extended), or one Parquet or WebDataset shard (``.parquet``, ``.tar``;
    ``io_utils.shards``). Returns (videos added, videos already there)."""
    destination = Path(destination)
    if destination.suffix not in (*PACKED_SUFFIXES, *SHARD_SUFFIXES.values()):
        raise UsageError(f"--to {destination}: give a file ending in "
                         f"{', '.join((*PACKED_SUFFIXES, *SHARD_SUFFIXES.values()))}")
    manifest = dict(manifest)
    records = manifest.pop("videos", {})
    if destination.suffix in SHARD_SUFFIXES.values():
        mode = next(mode for mode, suffix in SHARD_SUFFIXES.items() if suffix == destination.suffix)
        videos = (ShardVideo(name, records.get(name, {}).get("source", name), records.get(name), dict(arrays))
                  for name, arrays in features.items())
        added = [0]
        atomic_write(destination, lambda handle: added.__setitem__(0, write_shard(mode, handle, videos)))
        return added[0], 0
    return _pack_hdf5(features, manifest, records, destination)


def _pack_hdf5(features: Mapping[str, Mapping[str, np.ndarray]], manifest: Mapping[str, Any],
               records: Mapping[str, Any], destination: Path) -> tuple[int, int]:
    import h5py

    temporary = temporary_beside(destination, suffix=".h5.tmp")
    temporary.close()
    added = kept = 0
    try:
        if destination.exists():
            shutil.copyfile(destination, temporary.name)
        with h5py.File(temporary.name, "a" if destination.exists() else "w") as packed:
            packed.attrs["manifest"] = json.dumps(manifest)
            for name in features:
                if name in packed:
                    kept += 1
                    continue
                arrays = features[name]
                packed.attrs["keys"] = json.dumps(list(arrays))  # the order extract() returns them in
                group = packed.create_group(name)
                for key, value in arrays.items():
                    group.create_dataset(key, data=value)
                if name in records:
                    group.attrs["manifest"] = json.dumps(records[name])
                added += 1
        os.replace(temporary.name, destination)
    finally:
        Path(temporary.name).unlink(missing_ok=True)
    return added, kept


def packed_videos(path: str | os.PathLike) -> list[str]:
    """The videos a packed file holds (their group names)."""
    import h5py

    names: list[str] = []
    with h5py.File(path, "r") as packed:
        packed.visititems(lambda name, item: names.append(name) if isinstance(item, h5py.Group) and
                          any(isinstance(child, h5py.Dataset) for child in item.values()) else None)
    return sorted(names)


def read_packed(path: str | os.PathLike, video: str) -> dict[str, Any]:
    """One video's arrays from a packed file, as ``extract`` returns them, in the same order (plus ``manifest``, its
    record)."""
    import h5py

    with h5py.File(path, "r") as packed:
        group = packed[video]
        order = json.loads(packed.attrs.get("keys", "[]"))  # HDF5 lists datasets by name
        names = sorted(group, key=lambda key: order.index(key) if key in order else len(order))
        arrays: dict[str, Any] = {key: np.asarray(group[key][()]) for key in names}
        if "manifest" in group.attrs:
            arrays["manifest"] = json.loads(group.attrs["manifest"])
    return arrays
