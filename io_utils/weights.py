"""Finding pretrained checkpoints: a local folder, the torch hub cache, or a verified download.

Every checkpoint is described once, by a :class:`Checkpoint` (official URL, SHA-256, metadata). It is looked
up, in order, under its official file name (the last part of its URL) in ``--weights_dir`` (or the
``VIDEO_FEATURES_WEIGHTS_DIR`` environment variable), then in the torch hub cache
(``$TORCH_HOME/hub/checkpoints``, by default ``~/.cache/torch/hub/checkpoints``). Only if both miss is it
downloaded, into the cache, through a temporary file that is renamed into place after its SHA-256 matches.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm import tqdm

from io_utils.errors import UsageError
from io_utils.files import temporary_beside

WEIGHTS_DIR_ENV = "VIDEO_FEATURES_WEIGHTS_DIR"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Checkpoint:
    """One published checkpoint file.

    ``sha256`` is the full digest, or its first hex digits where the publisher only gives those (torch hub
    file names such as ``raft_large_C_T_SKHT_V2-ff5fadd5.pth``), or None where no digest is published; then
    the digest of the downloaded file is printed so that it can be checked by hand.
    """

    url: str
    sha256: str | None
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def file_name(self) -> str:
        return self.url.rsplit("/", 1)[-1]


def hub_checkpoint(url: str, meta: dict[str, Any] | None = None) -> Checkpoint:
    """A checkpoint published under a torch hub file name, which ends in the first hex digits of the file's
    SHA-256 (``resnet18-f37072fd.pth``)."""
    sha256_prefix = re.search(r"-([0-9a-f]{8,})\.pth$", url).group(1)
    return Checkpoint(url, sha256_prefix, meta or {})


def torchvision_checkpoint(weights: Any) -> Checkpoint:
    """A torchvision weight enum member as a :class:`Checkpoint`."""
    return hub_checkpoint(weights.url, {"enum": f"{type(weights).__name__}.{weights.name}", **weights.meta})


def checkpoint_path(checkpoint: Checkpoint, args: argparse.Namespace, option: str = "checkpoint") -> Path:
    """The local file given by ``--<option>`` (used instead of the published one), else ``checkpoint``
    looked up locally or downloaded."""
    local = getattr(args, option)
    if local:
        if not Path(local).is_file():
            raise UsageError(f"--{option} {local}: no such file")
        return Path(local)
    return resolve_checkpoint(checkpoint, args.weights_dir)


def load_state_dict_strictly(module: torch.nn.Module, path: Path, what: str,
                             convert: Callable[[dict], dict] | None = None) -> None:
    """Load the state dict pickled at ``path`` into ``module`` with ``strict=True`` (after ``convert``, for
    checkpoints whose keys need renaming). Unreadable or mismatching files end in one line naming the file:
    ``<path>: not <what> (<reason>)``."""
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
        module.load_state_dict(convert(state_dict) if convert else state_dict, strict=True)
    except Exception as error:  # torch raises several unrelated types for unreadable or mismatching files
        reason = " ".join(str(error).split())  # torch's mismatch report spans lines; the message is one
        raise UsageError(f"{path}: not {what} ({type(error).__name__}: {reason})") from error


def cache_dir() -> Path:
    """The torch hub checkpoint cache, which honours ``$TORCH_HOME`` and ``$XDG_CACHE_HOME``."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def resolve_checkpoint(checkpoint: Checkpoint, weights_dir: str | os.PathLike | None = None) -> Path:
    """Return a local path to ``checkpoint``, downloading it into the cache if it is nowhere local."""
    weights_dir = weights_dir or os.environ.get(WEIGHTS_DIR_ENV)
    folders = [Path(weights_dir)] if weights_dir else []
    folders.append(cache_dir())
    for folder in folders:
        candidate = folder / checkpoint.file_name
        if candidate.is_file():
            return candidate
    return download(checkpoint, cache_dir())


def download(checkpoint: Checkpoint, folder: Path) -> Path:
    """Download into ``folder`` atomically, checking the SHA-256 before the file gets its final name."""
    destination = folder / checkpoint.file_name
    partial = temporary_beside(destination, suffix=".part")
    try:
        with partial:
            digest = _copy_url(checkpoint.url, partial)
        if checkpoint.sha256 is None:
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


def _copy_url(url: str, handle) -> str:
    sha256 = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=60) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1], leave=False) as progress:
            while chunk := response.read(_CHUNK):
                handle.write(chunk)
                sha256.update(chunk)
                progress.update(len(chunk))
    return sha256.hexdigest()


def _offline_message(checkpoint: Checkpoint, error: Exception) -> str:
    reason = getattr(error, "reason", None) or error
    return (
        f"checkpoint {checkpoint.file_name} is not available locally and could not be downloaded from "
        f"{checkpoint.url} ({reason}); download it elsewhere and put it in {cache_dir()} "
        f"or in a folder given by --weights_dir (or ${WEIGHTS_DIR_ENV})"
    )
