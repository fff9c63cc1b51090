"""Checkpoint files: finding them locally, downloading and verifying them, reading them as data, renaming their
keys, loading them strictly.

A published checkpoint (described by the model layer's ``Weights`` entries: here only its URL, file name and
SHA-256 matter, see :class:`PublishedFile`) is looked up, in order, under its official file name (the last part
of its URL) in ``--weights_dir`` (or the ``VIDEO_FEATURES_WEIGHTS_DIR`` environment variable), then in the torch
hub cache (``$TORCH_HOME/hub/checkpoints``, by default ``~/.cache/torch/hub/checkpoints``). Only if both miss is it
downloaded, into the cache, through a temporary file that is renamed into place after its SHA-256 matches.
"""
from __future__ import annotations

import hashlib
import os
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence, TypeVar

import numpy as np
import torch
from tqdm import tqdm

from io_utils.errors import UsageError
from io_utils.files import temporary_beside

T = TypeVar("T")
Renames = Sequence[tuple[str, str]]  # (regular expression, replacement), applied in order
WEIGHTS_DIR_ENV = "VIDEO_FEATURES_WEIGHTS_DIR"
_CHUNK = 1 << 20
# NumPy arrays and scalars, under NumPy 2's module names and NumPy 1's (files pickled before 2024 name
# ``numpy.core.multiarray``): data, never code.
_NUMPY_ARRAYS = [np._core.multiarray._reconstruct, np._core.multiarray.scalar, np.ndarray, np.dtype,
                 (np._core.multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
                 (np._core.multiarray.scalar, "numpy.core.multiarray.scalar"),
                 *(type(np.dtype(kind)) for kind in "f4 f8 i4 i8".split())]


class PublishedFile(Protocol):
    """What finding and downloading a checkpoint needs of its description: where it is published, and its
    SHA-256 (the full digest, or the first hex digits where the publisher gives only those, or None where none is
    published)."""

    url: str
    sha256: str | None

    @property
    def file_name(self) -> str: ...


def sha256_in_file_name(url: str) -> str:
    """The first hex digits of a file's SHA-256 that torch hub file names end in (``resnet18-f37072fd.pth``)."""
    found = re.search(r"-([0-9a-f]{8,})\.[a-z]+$", url)
    if found is None:
        raise ValueError(f"{url}: the file name does not end in -<SHA-256 prefix>.<extension>, as torch hub names do")
    return found.group(1)


def checkpoint_path(weights: PublishedFile, local: str | os.PathLike | None, option: str,
                    weights_dir: str | os.PathLike | None, progress: bool = True) -> Path:
    """The local file given by ``--<option>`` (used instead of the published one), else ``weights`` looked up
    locally or downloaded."""
    return local_file(local, option) if local else resolve_checkpoint(weights, weights_dir, progress)


def local_file(local: str | os.PathLike, option: str) -> Path:
    """The file ``--<option>`` gives instead of a published one, refused in one line if it is not there."""
    if not Path(local).is_file():
        raise UsageError(f"--{option} {local}: no such file")
    return Path(local)


def load_state_dict_strictly(module: torch.nn.Module, path: Path, what: str,
                             convert: Callable[[dict], dict] | None = None) -> None:
    """Load the weights at ``path`` into ``module`` with ``strict=True`` (after ``convert``, for checkpoints whose
    keys need renaming). Unreadable or mismatching files end in one line naming the file:
    ``<path>: not <what> (<reason>)``."""
    state_dict = read_state_dict(path, what)
    load_strictly(module, convert(state_dict) if convert else state_dict, path, what)


def read_state_dict(path: Path, what: str) -> dict[str, Any]:
    """The tensors of a weights file: safetensors, or a pickle read as data only (tensors and NumPy arrays, no
    code). An unreadable file ends in one line: ``<path>: not <what> (<reason>)``."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        with torch.serialization.safe_globals(_NUMPY_ARRAYS):  # arrays, no code: some publishers save NumPy's
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch and safetensors raise several unrelated types for unreadable files
        raise UsageError(f"{path}: not {what} ({_one_line(error)})") from error


def load_strictly(module: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], path: Path, what: str) -> None:
    """``module.load_state_dict(state_dict, strict=True)``: every tensor of the module is in the file and the
    file holds nothing else, or one line ``<path>: not <what> (<torch's report>)``: the one strict load of the
    tool, whatever the file's format."""
    try:
        module.load_state_dict(state_dict, strict=True)
    except Exception as error:  # torch raises RuntimeError for mismatches, others for odd values
        raise UsageError(f"{path}: not {what} ({_one_line(error)})") from error


def _one_line(error: Exception) -> str:
    """An exception as one line (torch's mismatch report spans lines), at most about a thousand characters."""
    return " ".join(f"{type(error).__name__}: {error}".split())[:1000]


def renamed_key(key: str, rules: Renames) -> str:
    """``key`` with each rule's pattern replaced in turn (``re.sub``): a publisher's name as the network's."""
    for pattern, replacement in rules:
        key = re.sub(pattern, replacement, key)
    return key


def renamed_keys(state_dict: Mapping[str, T], rules: Renames) -> dict[str, T]:
    """Every key of ``state_dict`` through :func:`renamed_key`: the one renaming of a checkpoint's keys."""
    return {renamed_key(key, rules): value for key, value in state_dict.items()}


def cache_dir() -> Path:
    """The torch hub checkpoint cache, which honours ``$TORCH_HOME`` and ``$XDG_CACHE_HOME``."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def resolve_checkpoint(checkpoint: PublishedFile, weights_dir: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """Return a local path to ``checkpoint``, downloading it into the cache if it is nowhere local (with a
    progress bar and the digest of a file whose publisher gives none unless ``progress`` is False)."""
    weights_dir = weights_dir or os.environ.get(WEIGHTS_DIR_ENV)
    folders = [Path(weights_dir)] if weights_dir else []
    folders.append(cache_dir())
    for folder in folders:
        candidate = folder / checkpoint.file_name
        if candidate.is_file():
            return candidate
    return download(checkpoint, cache_dir(), progress)


def download(checkpoint: PublishedFile, folder: Path, progress: bool = True) -> Path:
    """Download into ``folder`` atomically, checking the SHA-256 before the file gets its final name."""
    destination = folder / checkpoint.file_name
    partial = temporary_beside(destination, suffix=".part")
    try:
        with partial:
            digest = _copy_url(checkpoint.url, partial, progress)
        if checkpoint.sha256 is None:
            if progress:
                print(f"{checkpoint.file_name}: no published SHA-256; the downloaded file has {digest}", file=sys.stderr)
        elif not digest.startswith(checkpoint.sha256):
            raise UsageError(
                f"{checkpoint.file_name}: downloaded file has SHA-256 {digest}, expected {checkpoint.sha256}; "
                f"it was discarded, try again or download {checkpoint.url} yourself"
            )
        os.replace(partial.name, destination)
    except (urllib.error.URLError, OSError) as error:
        raise UsageError(_offline_message(checkpoint, error)) from error
    finally:
        Path(partial.name).unlink(missing_ok=True)
    return destination


def _copy_url(url: str, handle, progress: bool) -> str:
    sha256 = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=60) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1], leave=False,
                  disable=None if progress else True) as bar:
            while chunk := response.read(_CHUNK):
                handle.write(chunk)
                sha256.update(chunk)
                bar.update(len(chunk))
    return sha256.hexdigest()


def _offline_message(checkpoint: PublishedFile, error: Exception) -> str:
    reason = getattr(error, "reason", None) or error
    return (
        f"checkpoint {checkpoint.file_name} is not available locally and could not be downloaded from "
        f"{checkpoint.url} ({reason}); download it elsewhere and put it in {cache_dir()} "
        f"or in a folder given by --weights_dir (or ${WEIGHTS_DIR_ENV})"
    )
