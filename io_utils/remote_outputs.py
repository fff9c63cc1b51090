"""An output folder in object storage (``--output_path s3://bucket/features``).

An object store has no rename and no append, and the machines of a cluster need not share a disk, so:

- **Staging.** Every process (the main one, each worker or actor) writes into a private local staging folder of its
  own (``staging_folder``), with the names and the temporary-then-rename discipline of a local run. Nothing in it
  is shared: a node needs only the store.
- **Publishing a video.** Once a video's outputs are complete in staging, they are uploaded, the main features
  last, and deleted locally (``publish``). A PUT makes an object appear whole or not at all, so a worker killed
  mid-upload leaves at most some of the other keys, never the main object: the video is not complete, and the
  next run extracts it again. (A large file goes up as a multipart upload; one that was cut off stays invisible,
  and a bucket lifecycle rule aborting incomplete uploads reclaims its parts.)
- **Done** means every key's object exists (``complete``).
- **Claims** are lock objects beside the main object, created only if absent (``If-None-Match: *``, which S3,
  MinIO and SeaweedFS honour) and refreshed by being written again; a claim is stale by the same rules as a lock
  file (its holder's process is gone on the same host, or no refresh for ``STALE_AFTER_S``).
- **The manifest.** The main process keeps it in its staging folder, pulls the store's ``manifest.json`` and
  journal segments at the start, and uploads ``manifest.json`` at the start and end of a run. In between, the
  records are uploaded as numbered journal segments (``manifest.journal/<run>-<n>.jsonl``, at least every
  ``SEGMENT_EVERY_S``): a worker that dies loses nothing (records are kept by the main process), and a main
  process that dies loses at most the records of its last interval, whose videos the next run finds complete
  and records as ``found_complete``.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

from io_utils.claims import is_stale, new_token, process_alive
from io_utils.errors import UsageError, VideoError
from io_utils.sources import NO_SUCH_OBJECT, is_url, remote_errors

STAGING_ROOT = Path(tempfile.gettempdir()) / "video_features-staging"
JOURNAL_PREFIX = "manifest.journal"
SEGMENT_EVERY_S = 60.0


def join(url: str, relative: str) -> str:
    return f"{url.rstrip('/')}/{relative.lstrip('/')}"


def staging_folder() -> Path:
    """A new private folder for this process's staged outputs; those of processes of this host that are gone are
    removed first (a killed worker's leftovers)."""
    STAGING_ROOT.mkdir(parents=True, exist_ok=True)
    for folder in STAGING_ROOT.glob("*-*"):
        pid = folder.name.split("-", 1)[0]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=STAGING_ROOT))


class RemoteFolder:
    """The output folder's URL and the fsspec file system that serves it."""

    def __init__(self, url: str):
        import fsspec

        self.url = url.rstrip("/")
        try:
            # no listings cache: whether an object exists must be asked of the store, which other workers write
            self._fs, self._root = fsspec.core.url_to_fs(self.url, use_listings_cache=False)
        except (ImportError, ValueError) as error:
            raise UsageError(f"--output_path {url}: {error}") from error

    def url_of(self, relative: str) -> str:
        return join(self.url, relative)

    def _path(self, relative: str) -> str:
        return f"{self._root.rstrip('/')}/{relative}"

    def check_writable(self) -> None:
        """Stop the run at once, in one line, if the store cannot be reached or written."""
        probe = f".write-check-{uuid.uuid4().hex}"
        try:
            with remote_errors(self.url):
                self._fs.pipe_file(self._path(probe), b"")
                self._fs.rm_file(self._path(probe))
        except VideoError as error:
            raise UsageError(f"--output_path {self.url}: cannot write there: {error}") from error

    def exists(self, relative: str) -> bool:
        with remote_errors(self.url_of(relative)):
            return self._fs.exists(self._path(relative))

    def upload(self, local: Path, relative: str) -> None:
        with remote_errors(self.url_of(relative)):
            self._fs.put_file(str(local), self._path(relative))

    def _unless_missing(self, relative: str, operation: Callable[[str], Any]) -> Any:
        """``operation`` on the object's path; None if there is no such object."""
        try:
            with remote_errors(self.url_of(relative)):
                return operation(self._path(relative))
        except VideoError as error:
            if str(error) == NO_SUCH_OBJECT:
                return None
            raise

    def download(self, relative: str, local: Path) -> bool:
        """Fetch an object into ``local``; False if there is none."""
        data = self._unless_missing(relative, self._fs.cat_file)
        if data is None:
            return False
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(data)
        return True

    def delete(self, relative: str) -> None:
        self._unless_missing(relative, self._fs.rm_file)

    def delete_below(self, prefix: str) -> None:
        """Delete every object below ``prefix`` (in batches: S3 deletes up to 1,000 objects a request)."""
        try:
            with remote_errors(self.url_of(prefix)):
                self._fs.rm(self._path(prefix), recursive=True)
        except FileNotFoundError:
            pass

    def list(self, prefix: str = "") -> list[str]:
        """The objects below ``prefix`` (all the folder's with ""), relative to the folder, sorted."""
        with remote_errors(self.url):
            try:
                found = self._fs.find(self._path(prefix) if prefix else self._root)
            except FileNotFoundError:
                return []
        root = self._root.rstrip("/") + "/"
        return sorted(path[len(root):] for path in found if path.startswith(root))

    def create_exclusive(self, relative: str, data: bytes) -> bool:
        """Create the object only if it does not exist; False if it does."""
        try:
            with self._fs.open(self._path(relative), "xb") as handle:
                handle.write(data)
            return True
        except FileExistsError:
            return False
        except OSError as error:
            if "pre-condition" in str(error).lower() or "precondition" in str(error).lower():
                return False
            with remote_errors(self.url_of(relative)):
                raise

    def read_text(self, relative: str) -> str | None:
        data = self._unless_missing(relative, self._fs.cat_file)
        return None if data is None else data.decode()

    def age_s(self, relative: str) -> float | None:
        """Seconds since the object was last written; None if it does not exist."""
        info = self._unless_missing(relative, self._fs.info)
        if info is None:
            return None
        modified = info.get("LastModified") or info.get("mtime") or info.get("last_modified")
        stamp = modified.timestamp() if hasattr(modified, "timestamp") else float(modified or 0)
        return max(0.0, time.time() - stamp)

    def write(self, relative: str, data: bytes) -> None:
        with remote_errors(self.url_of(relative)):
            self._fs.pipe_file(self._path(relative), data)


@contextmanager
def local_copy(folder: str) -> Iterator[Path]:
    """A local folder holding an output folder: the folder itself, or a temporary copy of the objects of one in
    object storage (claims and journal segments left out), removed afterwards."""
    if not is_url(folder):
        yield Path(folder)
        return
    remote = RemoteFolder(folder)
    with tempfile.TemporaryDirectory(prefix="video_features-copy-") as copy:
        try:
            for relative in remote.list():
                if not relative.endswith(".lock") and not relative.startswith(JOURNAL_PREFIX + "/"):
                    remote.download(relative, Path(copy) / relative)
        except VideoError as error:
            raise UsageError(f"{folder}: {error}") from error
        yield Path(copy)


def relative_to(staging: Path, local: Path) -> str:
    return local.relative_to(staging).as_posix()


def complete(folder: RemoteFolder, staging: Path, paths: Iterable[Path]) -> bool:
    """Whether every output of a video exists in the store (``paths``: where the layout stages them)."""
    return all(folder.exists(relative_to(staging, path)) for path in paths)


def publish(folder: RemoteFolder, staging: Path, paths: Mapping[str, Path], main_key: str) -> None:
    """Upload a video's staged outputs, the main one last, then delete them locally. A folder output (flow
    images) goes up file by file, its objects named as the folder's files."""
    order = [key for key in paths if key != main_key] + [main_key]
    try:
        for key in order:
            local = paths[key]
            files = sorted(p for p in local.rglob("*") if p.is_file()) if local.is_dir() else [local]
            for file in files:
                folder.upload(file, relative_to(staging, file))
    except VideoError as error:
        raise VideoError(f"upload to {folder.url} failed: {error}") from error
    finally:
        for local in paths.values():
            shutil.rmtree(local, ignore_errors=True) if local.is_dir() else local.unlink(missing_ok=True)


class RemoteClaim:
    """A lock object owned by this process; ``acquire`` returns None if another live run holds it."""

    def __init__(self, folder: RemoteFolder, relative: str, token: str):
        self._folder, self.relative, self._token = folder, relative, token

    @classmethod
    def acquire(cls, folder: RemoteFolder, relative: str) -> RemoteClaim | None:
        """A lock whose holder is gone may be taken over, by the rules of lock files (``claims.is_stale``)."""
        token = new_token()
        for _ in range(2):
            if folder.create_exclusive(relative, token.encode()):
                return cls(folder, relative, token)
            content, age = folder.read_text(relative), folder.age_s(relative)
            if content is None or age is None:
                continue  # released meanwhile
            if not is_stale(content, age):
                return None
            folder.delete(relative)  # contenders that both delete still race on the exclusive create
        return None

    def refresh(self) -> None:
        try:
            if self._folder.read_text(self.relative) == self._token:
                self._folder.write(self.relative, self._token.encode())
        except VideoError:
            pass  # the store is briefly unreachable: the next heartbeat tries again

    def release(self) -> None:
        try:
            if self._folder.read_text(self.relative) == self._token:
                self._folder.delete(self.relative)
        except VideoError:
            pass


class ManifestMirror:
    """Keeps a staged manifest and the store's in step (see the module's docstring)."""

    def __init__(self, folder: RemoteFolder, staging: Path):
        self._folder, self._staging = folder, staging
        self._run = f"{int(time.time())}-{uuid.uuid4().hex[:8]}"
        self._pending: list[str] = []
        self._segments = 0
        self._last_push = time.monotonic()
        self._folded: list[str] = []

    def pull(self, manifest_file: str, journal: Path) -> None:
        """Fetch ``manifest.json`` into staging and the store's journal segments into the local journal (so a run
        folds in what an interrupted one recorded)."""
        try:
            self._folder.download(manifest_file, self._staging / manifest_file)
            self._folded = self._folder.list(JOURNAL_PREFIX + "/")
        except VideoError as error:
            raise UsageError(f"--output_path {self._folder.url}: {error}") from error
        with journal.open("a", encoding="utf-8") as handle:
            for segment in self._folded:
                handle.write((self._folder.read_text(segment) or "").rstrip("\n") + "\n")

    def record(self, line: str) -> None:
        self._pending.append(line)
        if time.monotonic() - self._last_push >= SEGMENT_EVERY_S:
            self._push_segment()

    def _push_segment(self) -> None:
        self._last_push = time.monotonic()
        if not self._pending:
            return
        name = f"{JOURNAL_PREFIX}/{self._run}-{self._segments:06d}.jsonl"
        try:
            self._folder.write(name, "".join(self._pending).encode())
        except VideoError:
            return  # kept for the next segment
        self._segments += 1
        self._folded.append(name)
        self._pending = []

    def saved(self, manifest_path: Path) -> None:
        """``manifest.json`` was rewritten locally with every record: upload it; the segments are then folded."""
        try:
            self._folder.upload(manifest_path, manifest_path.name)
            for segment in self._folded:
                self._folder.delete(segment)
        except VideoError as error:
            raise UsageError(f"{self._folder.url_of(manifest_path.name)}: could not be written ({error}); the "
                             "outputs are in place, and the next run records them") from error
        self._folded, self._pending = [], []

    def upload(self, local: Path) -> None:
        self._folder.upload(local, local.name)

    def delete(self, name: str) -> None:
        self._folder.delete(name)
