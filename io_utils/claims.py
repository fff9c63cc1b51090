"""Resume and mutual exclusion between runs that share an output folder.

A video is done when all its output files exist and load. A run that is about to extract a video first
claims it with a lock file beside its main output, created whole or not at all (written aside, then
hard-linked into place, which fails if the lock exists, on NFS too), so two runs on the same inputs (two
terminals, or two machines on a shared disk) do not extract the same video. A claim is stale, and may be taken
over, when its process is gone (same host) or when it has not been refreshed for ``STALE_AFTER_S`` seconds;
holders refresh their claims far more often than that. (In object storage the same rules apply to lock objects:
``io_utils.remote_outputs.RemoteClaim``; ``io_utils.output_stores`` picks one or the other.)
"""
from __future__ import annotations

import json
import os
import pickletools
import shutil
import socket
import time
import uuid
from pathlib import Path
from typing import Iterable

import numpy as np

STALE_AFTER_S = 600.0
HEARTBEAT_S = 30.0
_HOST = socket.gethostname()


def outputs_complete(paths: Iterable[Path]) -> bool:
    """True if every file exists and is whole (a truncated or corrupt file means "extract again").

    Nothing in the files is executed: an output folder may be shared, and unpickling runs whatever a pickle
    holds. A ``.npy`` file's header must match its size; a pickle's opcodes are read, not run, and must end
    in its STOP opcode at the end of the file. A folder (flow images) is complete if it exists: it only gets
    its name once it is full.
    """
    try:
        for path in paths:
            if path.is_dir():
                continue
            if path.suffix == ".npy":
                np.load(path, mmap_mode="r", allow_pickle=False)  # checks the header and the file size
            elif not _pickle_is_whole(path):
                return False
    except Exception:
        return False
    return True


def _pickle_is_whole(path: Path) -> bool:
    with path.open("rb") as handle:
        last = None
        for opcode, _, _ in pickletools.genops(handle):  # stops after STOP; raises on a truncated stream
            last = opcode.name
        return last == "STOP" and handle.read(1) == b""


def remove_leftover_temporaries(paths: Iterable[Path]) -> None:
    """Delete temporary files (or image folders) of a writer that was killed; call only while holding the
    video's claim."""
    for path in paths:
        for leftover in path.parent.glob(f".{path.name}.*.tmp"):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)


class Claim:
    """A lock file owned by this process; ``acquire`` returns None if another live run holds it."""

    def __init__(self, path: Path, token: str, took_over: bool = False):
        self.path = path
        self._token = token
        self.took_over = took_over  # from a holder that died: what it left may be there

    @classmethod
    def acquire(cls, path: Path) -> Claim | None:
        """The claim, or None. What dead claimers left is looked for sparingly, since a search lists the whole
        folder (a scan per video would make a large run quadratic): their drafts once per ``HEARTBEAT_S`` per
        folder, a dead holder's temporaries only by the claim that takes its lock over
        (``io_utils.output_stores.LocalOutputs.prepare``)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        token = new_token()
        took_over = False
        for _ in range(2):
            try:
                _create_whole(path, token)
            except FileExistsError:
                if not _take_over_if_stale(path):
                    return None
                took_over = True
                continue
            _remove_stale_drafts(path.parent)
            return cls(path, token, took_over)
        return None

    @staticmethod
    def held_by(path: Path, pid: int, host: str = _HOST) -> bool:
        """Whether process ``pid`` of ``host`` (by default this one) holds the lock file at ``path``."""
        try:
            return owned_by(path.read_text(), pid, host)
        except FileNotFoundError:
            return False

    def refresh(self) -> None:
        try:
            os.utime(self.path)
        except FileNotFoundError:
            pass

    def release(self) -> None:
        """Remove the lock file if it is still ours (a stale take-over may have replaced it)."""
        try:
            if self.path.read_text() == self._token:
                self.path.unlink()
        except FileNotFoundError:
            pass


def _create_whole(path: Path, content: str) -> None:
    """Create ``path`` holding ``content``, or raise FileExistsError: the file is written under a name of its own
    and hard-linked into place, so a process that dies midway never leaves an empty lock (which would look
    held for ``HEARTBEAT_S``), at worst an unused ``.new`` file."""
    draft = path.with_name(f"{path.name}.{uuid.uuid4().hex}.new")
    try:
        draft.write_text(content)  # no space left for the token: no claim, and no lock file either
        os.link(draft, path)
    finally:
        draft.unlink(missing_ok=True)


_DRAFTS_CHECKED: dict[Path, float] = {}  # folder -> when this process last removed its stale drafts


def _remove_stale_drafts(folder: Path) -> None:
    """Remove the lock drafts that claimers killed midway left in ``folder`` (a live claimer's lasts microseconds:
    one older than ``HEARTBEAT_S`` is nobody's), at most once per ``HEARTBEAT_S``."""
    now = time.monotonic()
    if now - _DRAFTS_CHECKED.get(folder, -HEARTBEAT_S) < HEARTBEAT_S:
        return
    _DRAFTS_CHECKED[folder] = now
    for draft in folder.glob("*.lock.*.new"):
        try:
            if time.time() - draft.stat().st_mtime > HEARTBEAT_S:
                draft.unlink()
        except FileNotFoundError:
            pass


def _take_over_if_stale(path: Path) -> bool:
    """Move a stale lock aside atomically (only one contender succeeds); True if the lock is gone."""
    try:
        content = path.read_text()
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return True
    if not is_stale(content, age):
        return False
    aside = path.with_name(f"{path.name}.stale-{uuid.uuid4().hex}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return True
    if aside.read_text() != content:  # someone took it over between our read and our rename: give it back
        try:
            os.link(aside, path)
        except FileExistsError:
            pass
        aside.unlink()
        return False
    aside.unlink()
    return True


def new_token() -> str:
    """What a claim (lock file or lock object) holds: who took it, and a nonce that tells two takes apart."""
    return json.dumps({"host": _HOST, "pid": os.getpid(), "id": uuid.uuid4().hex})


def owned_by(content: str, pid: int, host: str) -> bool:
    """Whether a claim holding ``content`` was taken by process ``pid`` of ``host``."""
    try:
        owner = json.loads(content)
    except json.JSONDecodeError:
        return False
    return isinstance(owner, dict) and owner.get("host") == host and owner.get("pid") == pid


def is_stale(content: str, age_s: float) -> bool:
    """Whether a lock with ``content``, last touched ``age_s`` ago, may be taken over."""
    if age_s > STALE_AFTER_S:
        return True
    try:
        owner = json.loads(content)
    except json.JSONDecodeError:
        return age_s > HEARTBEAT_S  # a holder killed between creating and writing the file
    return owner.get("host") == _HOST and not process_alive(int(owner.get("pid", -1)))


def process_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
