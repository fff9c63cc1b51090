"""One HDF5 file for a finished output folder (``python main.py pack FOLDER --to features.h5``).

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
from typing import Any

import numpy as np

from io_utils.files import temporary_beside
from io_utils.manifest import MANIFEST_FILE, read_manifest
from io_utils.outputs import OutputLayout


def pack(layout: OutputLayout, destination: Path) -> tuple[int, int]:
    """Pack the videos of a finished output folder (``layout``: its folder, output keys and naming) into
    ``destination``; returns (videos added, videos already there)."""
    import h5py

    folder, destination = layout.folder, Path(destination)
    manifest = read_manifest(folder / MANIFEST_FILE) if (folder / MANIFEST_FILE).exists() else {}
    records = manifest.pop("videos", {})
    temporary = temporary_beside(destination, suffix=".h5.tmp")
    temporary.close()
    added = kept = 0
    try:
        if destination.exists():
            shutil.copyfile(destination, temporary.name)
        with h5py.File(temporary.name, "a" if destination.exists() else "w") as packed:
            packed.attrs["manifest"] = json.dumps(manifest)
            packed.attrs["keys"] = json.dumps(list(layout.keys))  # the order extract() returns them in
            for name, paths in layout.saved_videos():
                if name in packed:
                    kept += 1
                    continue
                group = packed.create_group(name)
                for key in layout.keys:
                    group.create_dataset(key, data=np.load(paths[key], allow_pickle=False))
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
