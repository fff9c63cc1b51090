"""Finding pretrained checkpoints: a local folder, the torch hub cache, or a verified download.

Every published checkpoint is described once, by a :class:`Weights` entry (official URL, SHA-256, how to build
the network it fits, its preprocessing, metadata), the way torchvision's weight enums describe theirs. It is looked
up, in order, under its official file name (the last part of its URL) in ``--weights_dir`` (or the
``VIDEO_FEATURES_WEIGHTS_DIR`` environment variable), then in the torch hub cache
(``$TORCH_HOME/hub/checkpoints``, by default ``~/.cache/torch/hub/checkpoints``). Only if both miss is it
downloaded, into the cache, through a temporary file that is renamed into place after its SHA-256 matches.
"""
from __future__ import annotations

import hashlib
import os
import re
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from tqdm import tqdm

from io_utils.errors import UsageError
from io_utils.files import temporary_beside

WEIGHTS_DIR_ENV = "VIDEO_FEATURES_WEIGHTS_DIR"
_CHUNK = 1 << 20
# NumPy arrays and scalars, under NumPy 2's module names and NumPy 1's (files pickled before 2024 name
# ``numpy.core.multiarray``): data, never code.
_NUMPY_ARRAYS = [np._core.multiarray._reconstruct, np._core.multiarray.scalar, np.ndarray, np.dtype,
                 (np._core.multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
                 (np._core.multiarray.scalar, "numpy.core.multiarray.scalar"),
                 *(type(np.dtype(kind)) for kind in "f4 f8 i4 i8".split())]


@dataclass(frozen=True)
class Meta:
    """What a checkpoint's users need to know beyond its tensors.

    ``labels``: the head's class names (None: no head, or names never published). ``fps``, ``stack_size``,
    ``step_size``: the sampling it was trained with, the defaults of ``--extraction_fps`` (None: every frame),
    ``--stack_size`` and ``--step_size`` (None: the stack size). ``input_range`` and ``channel_order``: what the
    network is fed, for the README and for checking a port against its publisher.
    """

    embed_dim: int | None = None
    labels: Sequence[str] | None = None
    fps: float | None = None
    stack_size: int | None = None
    step_size: int | None = None
    min_stack_size: int = 1
    input_range: str = ""
    channel_order: str = "RGB"


@dataclass(frozen=True)
class Weights:
    """One published checkpoint: where it is, how to build the network it fits, how to feed that network.

    ``sha256`` is the full digest, or its first hex digits where the publisher only gives those (torch hub
    file names such as ``raft_large_C_T_SKHT_V2-ff5fadd5.pth``), or None where no digest is published; then
    the digest of the downloaded file is printed so that it can be checked by hand. ``build`` returns the
    network with random weights and module names equal to the checkpoint's keys (after ``convert``, for
    files whose keys need renaming), so the file loads with ``strict=True``; it also writes random
    checkpoints in the official format (:func:`save_random`). ``preprocessing`` turns one RGB frame into
    one network input.
    """

    name: str
    url: str
    sha256: str | None
    build: Callable[[], torch.nn.Module] = field(compare=False)
    preprocessing: Callable[..., Any] | None = field(default=None, compare=False)
    meta: Meta = field(default_factory=Meta, compare=False)
    save_random: Callable[[torch.nn.Module, Path], None] | None = field(default=None, compare=False)

    @property
    def file_name(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    def write_random(self, folder: Path, seed: int = 0) -> Path:
        """A checkpoint of random weights in the official format, under the official file name in ``folder``
        (where ``--weights_dir`` finds it): it goes through exactly the loading path of a downloaded one."""
        torch.manual_seed(seed)
        path = folder / self.file_name
        path.parent.mkdir(parents=True, exist_ok=True)
        network = self.build()
        if self.save_random is not None:
            self.save_random(network, path)
        else:
            torch.save(lively(network).state_dict(), path)
        return path


@torch.no_grad()
def lively(network: torch.nn.Module) -> torch.nn.Module:
    """Random weights whose activations neither vanish nor explode through a deep network, as trained ones do:
    He-normal convolutions and linear layers, batch norms with statistics of their own. For networks written
    here: PyTorch's layer defaults let a deep I3D's features shrink to 1e-6 (torchvision's models initialise
    themselves, see :func:`torchvision_weights`)."""
    for module in network.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.weight.copy_(1.0 + 0.1 * torch.randn_like(module.weight))
            module.bias.copy_(0.1 * torch.randn_like(module.bias))
            module.running_mean.copy_(0.1 * torch.randn_like(module.running_mean))
            module.running_var.copy_(1.0 + torch.rand_like(module.running_var))
        elif isinstance(module, (torch.nn.modules.conv._ConvNd, torch.nn.Linear)):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            if module.bias is not None:
                module.bias.copy_(0.05 * torch.randn_like(module.bias))
    return network


def choose_weights(table: Mapping[str, Weights], name: str | None, aliases: Mapping[str, str], what: str,
                   option: str = "weights") -> Weights:
    """The entry of ``table`` named ``name`` or by one of its ``aliases``; the first, the default, for None. An
    unknown name is refused with the choices, naming ``--<option>`` and ``what`` it is for."""
    if name is None:
        return next(iter(table.values()))
    entry = table.get(aliases.get(name, name))
    if entry is None:
        choices = ", ".join([*table, *(alias for alias, target in aliases.items() if target in table)])
        raise UsageError(f"--{option} {name}: not available for {what}; choose one of {choices}")
    return entry


def sha256_in_file_name(url: str) -> str:
    """The first hex digits of a file's SHA-256 that torch hub file names end in (``resnet18-f37072fd.pth``)."""
    found = re.search(r"-([0-9a-f]{8,})\.[a-z]+$", url)
    if found is None:
        raise ValueError(f"{url}: the file name does not end in -<SHA-256 prefix>.<extension>, as torch hub names do")
    return found.group(1)


def torchvision_weights(member: Any, build: Callable[[], torch.nn.Module], preprocessing: Callable | None = None,
                        name: str | None = None, **meta: Any) -> Weights:
    """A torchvision weight enum member as a :class:`Weights` entry named ``name`` (default: the member's name);
    its file name carries the SHA-256 prefix. Its random checkpoint keeps torchvision's own initialisation."""
    return Weights(name or member.name, member.url, sha256_in_file_name(member.url), build, preprocessing, Meta(**meta),
                   save_random=save_state_dict)


def save_state_dict(network: torch.nn.Module, path: Path) -> None:
    torch.save(network.state_dict(), path)


def checkpoint_path(weights: Weights, local: str | os.PathLike | None, option: str,
                    weights_dir: str | os.PathLike | None, progress: bool = True) -> Path:
    """The local file given by ``--<option>`` (used instead of the published one), else ``weights`` looked up
    locally or downloaded."""
    if local:
        if not Path(local).is_file():
            raise UsageError(f"--{option} {local}: no such file")
        return Path(local)
    return resolve_checkpoint(weights, weights_dir, progress)


def load_state_dict_strictly(module: torch.nn.Module, path: Path, what: str,
                             convert: Callable[[dict], dict] | None = None) -> None:
    """Load the state dict pickled at ``path`` into ``module`` with ``strict=True`` (after ``convert``, for
    checkpoints whose keys need renaming). Unreadable or mismatching files end in one line naming the file:
    ``<path>: not <what> (<reason>)``."""
    try:
        with torch.serialization.safe_globals(_NUMPY_ARRAYS):  # arrays, no code: some publishers save NumPy's
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
        module.load_state_dict(convert(state_dict) if convert else state_dict, strict=True)
    except Exception as error:  # torch raises several unrelated types for unreadable or mismatching files
        reason = " ".join(str(error).split())  # torch's mismatch report spans lines; the message is one
        raise UsageError(f"{path}: not {what} ({type(error).__name__}: {reason})") from error


def cache_dir() -> Path:
    """The torch hub checkpoint cache, which honours ``$TORCH_HOME`` and ``$XDG_CACHE_HOME``."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def resolve_checkpoint(checkpoint: Weights, weights_dir: str | os.PathLike | None = None, progress: bool = True) -> Path:
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


def download(checkpoint: Weights, folder: Path, progress: bool = True) -> Path:
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


def _offline_message(checkpoint: Weights, error: Exception) -> str:
    reason = getattr(error, "reason", None) or error
    return (
        f"checkpoint {checkpoint.file_name} is not available locally and could not be downloaded from "
        f"{checkpoint.url} ({reason}); download it elsewhere and put it in {cache_dir()} "
        f"or in a folder given by --weights_dir (or ${WEIGHTS_DIR_ENV})"
    )
