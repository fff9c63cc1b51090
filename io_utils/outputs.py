"""Writing a video's outputs: print, .npy or .pkl, each file written atomically.

Every file is written to a temporary name in its destination folder and renamed into place, so a run that is
interrupted (Ctrl-C, power loss, a killed worker) never leaves a truncated output behind.
"""
from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from io_utils.video_list import VideoJob

ON_EXTRACTION_CHOICES = ("print", "save_numpy", "save_pickle")
_EXTENSIONS = {"save_numpy": ".npy", "save_pickle": ".pkl"}


def output_folder(output_path: str | os.PathLike, feature_type: str, output_direct: bool) -> Path:
    """``OUT/<feature_type with / replaced by _>`` by default, or ``OUT`` itself with ``--output_direct``."""
    return Path(output_path) if output_direct else Path(output_path) / feature_type.replace("/", "_")


def output_files(job: VideoJob, keys: list[str], main_key: str, folder: Path, on_extraction: str) -> dict[str, Path]:
    """Where each output key of ``job`` goes.

    The default is ``folder/<output_stem>_<key>.<ext>``. A CSV list's ``feature_path`` receives the main key
    itself (relative paths are taken under ``folder``), the other keys go beside it as ``<stem>_<key>.<ext>``.
    """
    extension = _EXTENSIONS[on_extraction]
    keys = [key for key in keys if key != main_key] + [main_key]  # main last: its presence means "complete"
    if job.feature_path is None:
        return {key: folder / f"{job.output_stem}_{key}{extension}" for key in keys}
    main = job.feature_path if job.feature_path.is_absolute() else folder / job.feature_path
    return {key: main if key == main_key else main.with_name(f"{main.stem}_{key}{extension}") for key in keys}


def write_outputs(features: Mapping[str, np.ndarray], paths: Mapping[str, Path], on_extraction: str) -> None:
    """Save every key of ``features`` to its path, in the order of ``paths``."""
    save = _save_numpy if on_extraction == "save_numpy" else _save_pickle
    for key, path in paths.items():
        atomic_write(path, lambda handle, value=features[key]: save(handle, value))


def print_features(video: Path, features: Mapping[str, np.ndarray]) -> None:
    print(f"{video}:")
    for key, value in features.items():
        value = np.asarray(value)
        if value.ndim == 0:
            print(f"  {key}: {value.item():.6g}")
        else:
            print(f"  {key}: shape {value.shape}, dtype {value.dtype}, mean {value.mean():.5g}, std {value.std():.5g}")


def atomic_write(path: Path, write: Callable[[object], None]) -> None:
    """Write through ``write(file_handle)`` into a temporary file, then rename it to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False)
    try:
        with handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


def _save_numpy(handle, value) -> None:
    np.save(handle, np.asarray(value), allow_pickle=False)


def _save_pickle(handle, value) -> None:
    pickle.dump(np.asarray(value), handle, protocol=pickle.HIGHEST_PROTOCOL)
