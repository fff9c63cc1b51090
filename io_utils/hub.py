"""Files of Hugging Face hub repositories, where open_clip's and timm's publishers put their weights.

A file is looked up, in order, in ``--weights_dir`` (or ``VIDEO_FEATURES_WEIGHTS_DIR``) and in the user's hub
cache (``$HF_HUB_CACHE``, by default ``~/.cache/huggingface/hub``), both in the hub cache's own layout
(``models--ORG--NAME/snapshots/REVISION/FILE``, what ``huggingface-cli download`` writes), so a cache copied
from a machine with network works as it is. Only if both miss is it downloaded into the user's cache:
``huggingface_hub`` writes a ``.incomplete`` file and renames it when complete, so an interrupted download never
leaves a file that looks whole.
"""
from __future__ import annotations

import hashlib
import os
import re
import socket
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from io_utils.checkpoints import WEIGHTS_DIR_ENV, local_file
from io_utils.errors import UsageError
from io_utils.files import sha256_of


HUB = "https://huggingface.co"  # where the hub publishes repositories (what Weights entries of its files name)


def hub_cache() -> Path:
    from huggingface_hub.constants import HF_HUB_CACHE

    return Path(HF_HUB_CACHE)


def hub_file(repo_id: str, file_names: Sequence[str], weights_dir: str | os.PathLike | None, what: str,
             progress: bool = True) -> Path:
    """The first of ``file_names`` that ``repo_id`` has, found locally or downloaded (``what`` names the model
    in the message that ends an offline run)."""
    from huggingface_hub import hf_hub_download

    for name in file_names:
        found = _cached(repo_id, name, weights_dir)
        if found is not None:
            return found
    unreachable = hub_unreachable()
    errors = [unreachable] if unreachable else []
    for name in file_names if not unreachable else ():
        try:
            path = Path(hf_hub_download(repo_id, name, tqdm_class=None if progress else _Silent))
        except Exception as error:  # network, missing file, permissions: the next name, then one message
            errors.append(f"{name}: {type(error).__name__}")
            continue
        check_downloaded(path, f"{repo_id}/{name}")
        return path
    places = " or ".join(str(folder) for folder in _caches(weights_dir))
    raise UsageError(
        f"{what}: {' or '.join(file_names)} of {hub_url(repo_id)} is not in the Hugging Face cache "
        f"({places}) and could not be downloaded ({'; '.join(errors)}); on a machine with network run "
        f"`huggingface-cli download {repo_id} {file_names[0]}` and copy its cache folder "
        f"models--{repo_id.replace('/', '--')} into {hub_cache()} or into a folder given by --weights_dir, "
        f"or pass --checkpoint PATH")


@dataclass(frozen=True)
class HubFile:
    """A weights file that a library names in a hub repository (timm's ``pretrained_cfg``, open_clip's tags): the
    repository and the file names the library tries there, in order."""

    repo_id: str
    file_names: tuple[str, ...]


def located_weights(source: HubFile | None, checkpoint: str | None, weights_dir: str | os.PathLike | None, what: str,
                    progress: bool = True) -> Path | None:
    """``--checkpoint``, else the file of ``source`` found locally or downloaded; None where there is no hub
    source (a library that downloads from a URL of its own, into its own cache)."""
    if checkpoint:
        return local_file(checkpoint, "checkpoint")
    return hub_file(source.repo_id, source.file_names, weights_dir, what, progress) if source else None


def weights_address(source: HubFile | None, path: Path, checkpoint: str | None) -> str:
    """Where a weights file came from, for the manifest: the ``--checkpoint`` path, else its hub address."""
    return str(path) if checkpoint or source is None else hub_url(source.repo_id, path.name)


def hub_url(repo_id: str, file_name: str | None = None) -> str:
    """Where the hub publishes a repository (or one of its files): what a manifest records as its source."""
    from huggingface_hub import constants

    return f"{constants.ENDPOINT}/{repo_id}" + (f"/blob/main/{file_name}" if file_name else "")


def hub_unreachable() -> str | None:
    """Why the hub cannot be reached at all, said at once: huggingface_hub would retry each request for about
    20 s with a warning per try before giving up. None when it may be reachable (a proxy resolves names itself)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    host = urllib.parse.urlparse(constants.ENDPOINT).hostname or constants.ENDPOINT
    try:
        socket.getaddrinfo(host, 443)
    except OSError as error:
        return f"{host} does not resolve: {error.strerror or error}"
    return None


def check_downloaded(path: Path, what: str) -> None:
    """Compare a downloaded large file with the SHA-256 the hub published for it: its large-file id, which names
    its blob in the cache. A mismatch (a corrupt disk, a proxy that rewrote it) deletes the blob."""
    blob = path.resolve()
    if not re.fullmatch(r"[0-9a-f]{64}", blob.name):  # a small file, named by its git hash: nothing published
        return
    digest = sha256_of(blob)
    if digest != blob.name:
        blob.unlink()
        raise UsageError(f"{what}: the downloaded file has SHA-256 {digest}, the hub published {blob.name}; it "
                         f"was deleted, run again to download it again")


def local_snapshot(repo_id: str, file_name: str, weights_dir: str | os.PathLike | None) -> Path | None:
    """The local snapshot folder of ``repo_id`` that holds ``file_name`` (None: no local copy has it)."""
    found = _cached(repo_id, file_name, weights_dir)
    return found.parent if found is not None else None


def _caches(weights_dir: str | os.PathLike | None) -> list[Path]:
    folders = [Path(folder) for folder in (weights_dir or os.environ.get(WEIGHTS_DIR_ENV),) if folder]
    return [*folders, hub_cache()]


def _cached(repo_id: str, file_name: str, weights_dir: str | os.PathLike | None) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    for folder in _caches(weights_dir):
        found = try_to_load_from_cache(repo_id, file_name, cache_dir=str(folder))
        if isinstance(found, str):
            return Path(found)
    return None


class _Silent(tqdm):
    """A progress bar that never shows (the Python API prints nothing of its own)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **{**kwargs, "disable": True})


def snapshot_folder(cache: Path, repo_id: str) -> Path:
    """A snapshot folder of ``repo_id`` in the hub cache layout under ``cache``, which ``refs/main`` points at
    (for writing a repository's files where the hub cache lookups find them)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    revision = hashlib.sha1(repo_id.encode()).hexdigest()
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    folder = repo / "snapshots" / revision
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def record_absent(snapshot: Path, file_name: str) -> None:
    """Record in the hub cache that the repository of ``snapshot`` has no ``file_name``, as huggingface_hub does
    when the hub answers that a file does not exist (offline, transformers then knows not to look for it)."""
    marker = snapshot.parent.parent / ".no_exist" / snapshot.name / file_name
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()


# The files of a transformers repository that feature extraction reads: the configuration, the weights (one
# file or shards with their index) and the processor configurations; nothing of a tokenizer or of remote code.
REPOSITORY_FILES = ("config.json", "*.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                    "pytorch_model.bin.index.json", "preprocessor_config.json", "video_preprocessor_config.json",
                    "processor_config.json")


class RepositoryUnavailable(UsageError):
    """A repository that is neither local nor downloadable now."""


def hub_repository(name: str, weights_dir: str | os.PathLike | None, what: str, progress: bool = True,
                   needs: Sequence[str] = ()) -> Path:
    """The folder of a transformers repository: ``name`` itself where it is a local folder; for a hub id
    (``ORG/NAME``), its snapshot in ``--weights_dir`` or the hub cache when that holds ``config.json``, weights
    and the files of ``needs``, else downloaded (only :data:`REPOSITORY_FILES` and ``needs``) into the user's
    cache."""
    if Path(name).is_dir():
        return Path(name)
    if name.count("/") != 1:
        raise UsageError(f"{what}: {name} is neither a local folder nor a hub repository (ORG/NAME)")
    for folder in _caches(weights_dir):
        snapshot = _local_snapshot(name, folder)
        if snapshot is not None and all((snapshot / file).is_file() for file in needs):
            return snapshot
    unreachable = hub_unreachable()
    if not unreachable:
        from huggingface_hub import snapshot_download

        try:
            return Path(snapshot_download(name, allow_patterns=[*REPOSITORY_FILES, *needs],
                                          tqdm_class=None if progress else _Silent))
        except Exception as error:  # network, missing repository, permissions: one message below
            unreachable = f"{type(error).__name__}: {' '.join(str(error).split())[:200]}"
    places = " or ".join(str(folder) for folder in _caches(weights_dir))
    raise RepositoryUnavailable(
        f"{what}: {hub_url(name)} is not in the Hugging Face cache ({places}) and could not be downloaded "
        f"({unreachable}); on a machine with network run `huggingface-cli download {name}` and copy its cache "
        f"folder models--{name.replace('/', '--')} into {hub_cache()} or into a folder given by --weights_dir, "
        f"or give a local folder in the hub's format with --checkpoint FOLDER")


def _local_snapshot(repo_id: str, cache: Path) -> Path | None:
    """The snapshot of ``repo_id`` under ``cache`` that ``refs/main`` names, if it holds a configuration and
    weights."""
    refs = cache / f"models--{repo_id.replace('/', '--')}" / "refs" / "main"
    if not refs.is_file():
        return None
    snapshot = refs.parent.parent / "snapshots" / refs.read_text().strip()
    has_weights = any(snapshot.glob("*.safetensors")) or (snapshot / "pytorch_model.bin").is_file()
    return snapshot if (snapshot / "config.json").is_file() and has_weights else None
