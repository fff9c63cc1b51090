"""Files that only get their final name once complete: temporary names beside the destination.

Temporaries are named ``.<final name>.<random><suffix>`` so that a killed writer's leftovers can be found and
removed later (``io_utils.claims.remove_leftover_temporaries``). They get the permissions a plain ``open``
would give: ``tempfile`` makes them private, which other users of a shared disk or cache could not read.
"""
from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def temporary_beside(path: Path, suffix: str = ".tmp") -> tempfile._TemporaryFileWrapper:
    """A new temporary file (open for writing, not deleted on close) in ``path``'s folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=suffix, delete=False)
    os.chmod(handle.name, 0o666 & ~_UMASK)
    return handle


def temporary_folder_beside(path: Path) -> Path:
    """A new empty temporary folder in ``path``'s folder, to be renamed to ``path`` once full."""
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    os.chmod(folder, 0o777 & ~_UMASK)
    return folder


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write through ``write(file_handle)`` into a temporary file, then rename it to ``path``."""
    handle = temporary_beside(path)
    try:
        with handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file, read in 1 MiB chunks (weights files are gigabytes)."""
    sha256 = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            sha256.update(chunk)
    return sha256.hexdigest()


# A folder that takes no more writes: full, over quota, mounted read-only, or not ours to write.
_UNWRITABLE = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES}


def unwritable_reason(error: BaseException, folder: Path) -> str | None:
    """The one line that stops a run whose output ``folder`` takes no more writes (``error``: what a write raised),
    naming the folder and its free space; None for any other error (which concerns one video)."""
    if not isinstance(error, OSError) or error.errno not in _UNWRITABLE:
        return None
    existing = next((p for p in (Path(folder), *Path(folder).parents) if p.exists()), Path("/"))
    free = f"{_in_units(shutil.disk_usage(existing).free)} free"
    return (f"{folder}: {os.strerror(error.errno)} ({free}); the run stops here. Make room (or make the folder "
            "writable) and run it again: the videos done are kept and the others are extracted")


def _in_units(size: float) -> str:
    for unit in ("bytes", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"
