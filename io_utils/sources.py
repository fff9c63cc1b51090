"""Where a video is read from: a local file, an object in storage or behind a URL, or a member of a tar shard.

Remote inputs (``s3://``, ``gs://``, ``az://``, ``http(s)://``...) go through fsspec and the back-end it names
for the scheme (s3fs, gcsfs, adlfs, aiohttp), which take credentials and endpoints from their usual places
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``~/.aws/config``, ``GOOGLE_APPLICATION_CREDENTIALS``...), so
there is nothing new to configure. A reader takes a remote source :func:`for_reading`: an object of at most
``WHOLE_OBJECT_BYTES`` (a typical web clip) is fetched whole in one request and read from memory
(:class:`Fetched`); a larger one is read in place (:class:`InPlace`), in aligned blocks of ``READ_BLOCK`` fetched
by ranged requests and shared by every decoder of the video (:class:`Ranges`), so a sparse read (``uni_12`` on a
long video) fetches the index and the blocks of the keyframe intervals it decodes, and a dense read fetches each
byte once.

A WebDataset shard (a tar file, local or remote) is listed by reading its headers only (a seek past each
member's data); each video member is then a :class:`ShardMember`: a window of the shard's bytes that PyAV reads
like a file, so nothing is unpacked to disk and one damaged member fails alone.
"""
from __future__ import annotations

import io
import json
import os
import re
import stat
import tarfile
import tempfile
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Iterator, Union
from urllib.parse import urlsplit

from io_utils.activity import ACTIVITY, READER
from io_utils.errors import VideoError

READ_BLOCK = 1 << 20  # bytes of one ranged request of an object read in place: about 1 ms at 1 GB/s
WHOLE_OBJECT_BYTES = 32 << 20  # remote objects up to this size are fetched whole (see Fetched)
CACHED_BLOCKS = 32  # blocks of an object read in place that its readers share
RETRY_DELAYS_S = (0.5, 2.0, 8.0)  # pauses before the retries of a failed ranged request
HEADER_BLOCK = 64 << 10  # a shard's listing reads this much around each tar header
SPOOL_CHUNK = 1 << 20  # bytes read from a pipe at a time
NO_SUCH_OBJECT = "no such object"
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(text: str | os.PathLike) -> bool:
    """Whether ``text`` names a remote object (``scheme://...``) rather than a local path."""
    return isinstance(text, str) and bool(_URL.match(text)) and not text.startswith("file://")


class _Named:
    """``stem`` and ``suffix`` of a ``name``, as a path has them."""

    name: str

    @property
    def stem(self) -> str:
        return PurePosixPath(self.name).stem

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.name).suffix


@dataclass(frozen=True)
class RemoteFile(_Named):
    """An object in storage or behind a URL, read through fsspec."""

    url: str

    def __str__(self) -> str:
        return self.url

    @property
    def name(self) -> str:
        return PurePosixPath(urlsplit(self.url).path).name

    def size(self) -> int:
        with remote_errors(self.url):
            filesystem, path = _filesystem(self.url)
            return int(filesystem.size(path))

    def open(self, block_size: int | None = None) -> BinaryIO:
        """For reading, in ranged requests of ``block_size`` bytes (default ``READ_BLOCK``): see :class:`Ranges`."""
        return Ranges(self.url, 0, self.size(), block_size).reader()

    def facts(self) -> dict[str, object]:
        """What a manifest records of the object: its URL, size and version tag (ETag or modification time)."""
        with remote_errors(self.url):
            filesystem, path = _filesystem(self.url)
            info = filesystem.info(path)
        version = info.get("ETag") or info.get("etag") or info.get("LastModified") or info.get("mtime")
        return {"source": self.url, "size": info.get("size"), "version": str(version) if version else None}


@dataclass(frozen=True)
class ShardMember(_Named):
    """A video inside a tar shard: ``length`` bytes from ``offset`` of the shard file; ``metadata`` is the
    sample's ``.json`` member as text ("" if it has none)."""

    shard: Union[Path, RemoteFile]
    member: str
    offset: int
    length: int
    metadata: str = ""

    def __str__(self) -> str:
        return f"{self.shard}#{self.member}"

    @property
    def name(self) -> str:
        return PurePosixPath(self.member).name

    def size(self) -> int:
        return self.length

    def open(self) -> BinaryIO:
        if isinstance(self.shard, RemoteFile):
            return Ranges(self.shard.url, self.offset, self.length).reader()
        return _Window(self.shard.open("rb"), self.offset, self.length)

    def facts(self) -> dict[str, object]:
        shard = self.shard.facts() if isinstance(self.shard, RemoteFile) else local_facts(self.shard)
        return {**shard, "member": self.member, "member_size": self.length,
                "metadata": json.loads(self.metadata) if self.metadata else None}


class _ReadingOf(_Named):
    """A remote ``source`` prepared for a reader: it says what the source says (its name, its URL)."""

    source: Union[RemoteFile, ShardMember]

    def __str__(self) -> str:
        return str(self.source)

    @property
    def name(self) -> str:
        return self.source.name


@dataclass(frozen=True, eq=False)
class Fetched(_ReadingOf):
    """A remote object or shard member small enough to fetch whole (``WHOLE_OBJECT_BYTES``), in one request: every
    reader of it (the index, each keyframe interval decoded at once) reads these bytes from memory, instead of a
    request per seek and per decoder."""

    source: Union[RemoteFile, ShardMember]
    data: bytes

    def size(self) -> int:
        return len(self.data)

    def open(self) -> BinaryIO:
        return io.BytesIO(self.data)


@dataclass(frozen=True, eq=False)
class InPlace(_ReadingOf):
    """A remote object or shard member too large to fetch whole, read in place: every reader of it (the index, each
    keyframe interval decoded at once) reads through the same :class:`Ranges`, so no block is fetched twice."""

    source: Union[RemoteFile, ShardMember]
    ranges: Ranges

    def size(self) -> int:
        return self.ranges.size

    def open(self) -> BinaryIO:
        return self.ranges.reader()


class Spooled(_Named):
    """A local input that can be read only once, from start to end (a named pipe, a character device such as
    ``/dev/stdin``), copied into an anonymous temporary file as it is read: decoding seeks, and several decoders read
    one video at once. The file has no name (it is gone when closed, also when the process is killed), and memory
    holds one chunk of it at a time."""

    def __init__(self, path: Path):
        self.path = path
        self._file = tempfile.TemporaryFile(buffering=0)  # unbuffered: a full disk is seen at the write
        with path.open("rb", buffering=0) as pipe:  # blocks until a writer opens the pipe
            while chunk := pipe.read(SPOOL_CHUNK):
                try:
                    self._file.write(chunk)
                except OSError as error:  # the temporary folder is full: this input fails, not the run
                    self._file.close()
                    raise VideoError(f"a pipe is copied to {tempfile.gettempdir()} to be read, and that failed "
                                     f"({error.strerror or error})") from error
                ACTIVITY.note(READER, f"reading the input ({self._file.tell():,} bytes so far)")
        self._size = self._file.tell()

    def __str__(self) -> str:
        return str(self.path)

    @property
    def name(self) -> str:
        return self.path.name

    def size(self) -> int:
        return self._size

    def open(self) -> BinaryIO:
        return io.BufferedReader(_SpoolView(self._file.fileno(), self._size), buffer_size=64 << 10)


def _read_once(path: Path) -> bool:
    """Whether a local path is an input that can be read only once (see :class:`Spooled`)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False  # opening it says why
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)


Source = Union[Path, RemoteFile, ShardMember, Fetched, InPlace, Spooled]


def for_reading(source: Source) -> Source:
    """How a reader reads ``source``: a local file as it is, a pipe copied as it is read (:class:`Spooled`); a
    remote one of at most ``WHOLE_OBJECT_BYTES`` fetched whole in one request (:class:`Fetched`), a larger one in
    place (:class:`InPlace`)."""
    if isinstance(source, Path) and _read_once(source):
        return Spooled(source)
    shard = source.shard if isinstance(source, ShardMember) else None
    if not (isinstance(source, RemoteFile) or isinstance(shard, RemoteFile)):
        return source
    url, offset, size = (shard.url, source.offset, source.length) if shard else (source.url, 0, source.size())
    if size == 0:
        return source  # opening it says "empty file"
    if size <= WHOLE_OBJECT_BYTES:
        with Ranges(url, offset, size, block_size=size).reader() as handle:
            return Fetched(source, handle.read())
    return InPlace(source, Ranges(url, offset, size))


def as_source(text: str | os.PathLike | Source) -> Source:
    """A path as given on the command line or in a list: a URL, else a local path (sources are kept)."""
    if isinstance(text, (RemoteFile, ShardMember, Fetched, InPlace, Spooled)):
        return text
    return RemoteFile(text) if is_url(text) else Path(text)


def byte_size(source: Source) -> int:
    if isinstance(source, Path):
        return source.stat().st_size
    return source.size()


def open_binary(source: Source) -> BinaryIO:
    """The source's bytes, for reading (seekable)."""
    if isinstance(source, Path):
        return source.open("rb")
    return source.open()


def local_facts(path: Path) -> dict[str, object]:
    stat = os.stat(path)
    return {"source": str(Path(path).resolve()), "size": stat.st_size, "mtime": stat.st_mtime}


def source_facts(source: Source) -> dict[str, object]:
    """What a manifest records of where a video came from."""
    return local_facts(source) if isinstance(source, Path) else source.facts()


def list_remote(url: str, recursive: bool, extensions: frozenset[str]) -> list[RemoteFile]:
    """The objects under the prefix ``url`` with one of ``extensions`` (``recursive``: also below
    sub-prefixes), sorted."""
    with remote_errors(url):
        filesystem, prefix = _filesystem(url)
        prefix = prefix.rstrip("/")
        found = filesystem.find(prefix) if recursive else filesystem.ls(prefix, detail=False)
    scheme = urlsplit(url).scheme
    return [RemoteFile(f"{scheme}://{path}") for path in sorted(found)
            if PurePosixPath(path).suffix.lower() in extensions and path != prefix]


def relative_stem(source: RemoteFile, prefix_url: str) -> PurePosixPath:
    """The object's name below ``prefix_url``, without its extension (how ``--video_dir`` names outputs)."""
    relative = source.url[len(prefix_url.rstrip("/")) + 1:]
    return PurePosixPath(relative).with_suffix("")


@dataclass(frozen=True)
class ShardListing:
    """A shard's video members, and why its listing stopped early (None if it was read to the end)."""

    members: list[ShardMember]
    problem: str | None


def list_shard(shard: Path | RemoteFile, extensions: frozenset[str]) -> ShardListing:
    """The video members of a tar shard (by extension), from its headers only; each gets the ``.json`` member of
    its sample (same key: the name up to the first dot of the file name), as WebDataset groups them.

    A damaged header ends the listing: the members before it are still listed and ``problem`` says where. A shard
    that cannot be opened (missing, unreadable) lists nothing, and ``problem`` says why."""
    videos: list[tuple[str, tarfile.TarInfo]] = []
    metadata: dict[str, str] = {}
    problem = None
    try:
        with _open_shard(shard) as handle:
            try:
                with tarfile.open(fileobj=handle, mode="r:") as archive:
                    for info in _members(archive):
                        key, extension = sample_key(info.name)
                        if extension.lower() == ".json" and info.size <= (16 << 20):
                            metadata[key] = _member_text(archive, info)
                        elif info.isfile() and PurePosixPath(info.name).suffix.lower() in extensions:
                            videos.append((key, info))
            except (tarfile.TarError, EOFError, OSError, VideoError) as error:
                reason = error or type(error).__name__
                problem = f"damaged shard, listing stopped after {len(videos)} video(s): {reason}"
    except (OSError, VideoError) as error:  # raised on opening: the shard itself cannot be read
        problem = str(error) if isinstance(error, VideoError) else f"cannot be read ({error})"
    members = [ShardMember(shard, info.name, info.offset_data, info.size, metadata.get(key, ""))
               for key, info in videos]
    return ShardListing(members, problem)


def sample_key(member: str) -> tuple[str, str]:
    """WebDataset's split of a member name into the sample's key and the field: at the first dot of the file
    name (``dir/000012.mp4`` -> ``dir/000012``, ``.mp4``)."""
    folder, _, name = member.rpartition("/")
    base, dot, rest = name.partition(".")
    return (f"{folder}/{base}" if folder else base), (dot + rest)


def _members(archive: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    while (info := archive.next()) is not None:
        yield info


def _member_text(archive: tarfile.TarFile, info: tarfile.TarInfo) -> str:
    handle = archive.extractfile(info)
    text = handle.read().decode("utf-8", errors="replace") if handle else ""
    try:
        json.loads(text)
    except ValueError:
        return json.dumps({"unparsed": text})
    return text


@contextmanager
def _open_shard(shard: Path | RemoteFile) -> Iterator[BinaryIO]:
    if isinstance(shard, Path):
        if not shard.is_file():
            raise VideoError("no such file")
        with shard.open("rb") as handle:
            yield handle
    else:
        with shard.open(block_size=HEADER_BLOCK) as handle:
            yield handle


class _View(io.RawIOBase):
    """A read-only, seekable file of ``size`` bytes that keeps its own position; subclasses say how a read at
    ``position`` is served (``readinto``)."""

    def __init__(self, size: int):
        super().__init__()
        self._size, self._position = size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def tell(self) -> int:
        return self._position


class _Window(_View):
    """Bytes ``[offset, offset + size)`` of a seekable file, as a file of its own."""

    def __init__(self, inner: BinaryIO, offset: int, size: int):
        super().__init__(size)
        self._inner, self._offset = inner, offset

    def readinto(self, buffer) -> int:
        wanted = min(len(buffer), self._size - self._position)
        if wanted <= 0:
            return 0
        self._inner.seek(self._offset + self._position)
        data = self._inner.read(wanted)
        buffer[: len(data)] = data
        self._position += len(data)
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._inner.close()
        super().close()


class Ranges:
    """Bytes ``[offset, offset + size)`` of a remote object, fetched in aligned blocks of ``block_size`` (default
    ``READ_BLOCK``) by ranged requests, kept in a small cache that all its :meth:`reader` views share (thread-safe:
    each keyframe interval decoded at once has its own view). A failed request is retried ``len(RETRY_DELAYS_S)``
    times (a cut-off transfer, a throttled or refused request), with growing pauses, then fails as a
    :class:`VideoError` with the reason."""

    def __init__(self, url: str, offset: int, size: int, block_size: int | None = None):
        self.url, self.offset, self.size = url, offset, size
        self.block_size = max(1, block_size or READ_BLOCK)
        self._blocks: OrderedDict[int, bytes] = OrderedDict()
        self._in_flight: dict[int, threading.Event] = {}
        self._lock = threading.Lock()

    def reader(self) -> BinaryIO:
        return io.BufferedReader(_RangesView(self), buffer_size=64 << 10)

    def block(self, index: int) -> bytes:
        """Block ``index``, fetched once: a reader that wants a block another is fetching waits for it."""
        while True:
            with self._lock:
                if index in self._blocks:
                    self._blocks.move_to_end(index)
                    return self._blocks[index]
                waiting = self._in_flight.get(index)
                if waiting is None:
                    self._in_flight[index] = threading.Event()
                    break
            waiting.wait()
        try:
            start = index * self.block_size
            data = self._fetch(self.offset + start, self.offset + min(start + self.block_size, self.size))
            with self._lock:
                self._blocks[index] = data
                while len(self._blocks) > CACHED_BLOCKS:
                    self._blocks.popitem(last=False)
            return data
        finally:
            with self._lock:
                self._in_flight.pop(index).set()

    def _fetch(self, start: int, end: int) -> bytes:
        filesystem, path = _filesystem(self.url)
        for delay in (*RETRY_DELAYS_S, None):
            ACTIVITY.note(READER, f"fetching bytes {start}-{end} of the input")
            try:
                with remote_errors(self.url):
                    data = filesystem.cat_file(path, start=start, end=end)
                if len(data) == end - start:
                    return data
                error = VideoError(f"reading failed (a ranged request for {end - start} bytes brought {len(data)})")
            except VideoError as failure:
                if str(failure) == NO_SUCH_OBJECT or str(failure).startswith("access denied"):
                    raise
                error = failure
            if delay is None:
                raise error
            time.sleep(delay)
        raise AssertionError("unreachable")


class _RangesView(_View):
    """One reader's position in a :class:`Ranges`."""

    def __init__(self, ranges: Ranges):
        super().__init__(ranges.size)
        self._ranges = ranges

    def readinto(self, buffer) -> int:
        if self._position >= self._size:
            return 0
        index, within = divmod(self._position, self._ranges.block_size)
        data = self._ranges.block(index)[within: within + len(buffer)]
        buffer[: len(data)] = data
        self._position += len(data)
        return len(data)


class _SpoolView(_View):
    """One reader's position in a :class:`Spooled` file (reads at an offset: the readers share the descriptor)."""

    def __init__(self, descriptor: int, size: int):
        super().__init__(size)
        self._descriptor = descriptor

    def readinto(self, buffer) -> int:
        data = os.pread(self._descriptor, min(len(buffer), max(self._size - self._position, 0)), self._position)
        buffer[: len(data)] = data
        self._position += len(data)
        return len(data)


def _filesystem(url: str):
    """The fsspec file system for ``url``'s scheme (fsspec keeps one per process and settings) and the path in it."""
    import fsspec

    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as error:
        raise VideoError(f"cannot read {urlsplit(url).scheme}:// URLs: {error}") from error


@contextmanager
def remote_errors(url: str) -> Iterator[None]:
    """Failures of the storage back-end as :class:`VideoError` with the reason in words."""
    try:
        yield
    except VideoError:
        raise
    except FileNotFoundError as error:  # fsspec's HTTP back-end reports any failed lookup so: its cause says why
        raise VideoError(_remote_reason(url, error, otherwise=NO_SUCH_OBJECT)) from error
    except PermissionError as error:
        raise VideoError(f"access denied ({error})") from error
    except Exception as error:  # back-ends raise their own types (botocore, aiohttp, azure)
        raise VideoError(_remote_reason(url, error)) from error


def _remote_reason(url: str, error: BaseException, otherwise: str | None = None) -> str:
    """The reason in words, from the HTTP status or the kind of failure anywhere in the chain of causes;
    ``otherwise`` if none is recognised (default: "reading failed" with the last cause)."""
    chain = []
    while error is not None and len(chain) < 16:
        chain.append(error)
        error = error.__cause__ or error.__context__
    statuses = [status for status in (getattr(item, "status", None) for item in chain) if isinstance(status, int)]
    texts = " ".join(f"{type(item).__name__} {item}" for item in chain).lower()
    last = " ".join(f"{type(chain[-1]).__name__}: {chain[-1]}".split()) if chain else ""  # one line
    if any(isinstance(item, ConnectionError) for item in chain) or "connect" in texts or "resolve" in texts:
        return f"cannot reach the storage for {urlsplit(url).scheme}:// ({last})"
    if "nocredentials" in texts or "unable to locate credentials" in texts:
        return f"no credentials for {urlsplit(url).scheme}:// ({last})"
    if any(status in (401, 403) for status in statuses) or "accessdenied" in texts or "forbidden" in texts:
        return f"access denied ({last})"
    if 404 in statuses or "nosuchkey" in texts or "nosuchbucket" in texts or "not found" in texts:
        return NO_SUCH_OBJECT
    return otherwise or f"reading failed ({last})"
