"""``<output folder>/manifest.json``: how every feature in the folder was made.

The manifest holds the tool's version, the run's configuration (every option that changes the features), each
checkpoint's file name and SHA-256, the preprocessing and sampling rule, library versions, the device, and per
video the source's size and modification time, its stream's facts, the output shapes and the time taken. A run
into a folder whose manifest records another configuration is refused (features made differently must not mix
silently); a resumed run adds its videos. The file is replaced atomically at the start and at the end of a run;
in between, each video's record is appended to a journal beside it (see :class:`Manifest`). For an output folder
in object storage, a :class:`~io_utils.remote_outputs.ManifestMirror` keeps the store's copy and journal
segments in step with the staged one.
"""
from __future__ import annotations

import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

from io_utils.errors import UsageError
from io_utils.files import atomic_write, sha256_of
from io_utils.remote_outputs import ManifestMirror

MANIFEST_FILE = "manifest.json"
JOURNAL_FILE = "manifest.videos.jsonl"
_LIBRARIES = ("torch", "torchvision", "av", "open_clip_torch", "timm", "transformers", "huggingface_hub", "numpy",
              "opencv-python-headless", "pillow")
_ROOT = Path(__file__).resolve().parents[1]


def read_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UsageError(f"{path}: no such manifest") from None
    except (OSError, ValueError) as error:
        raise UsageError(f"{path}: not a manifest.json ({error})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("configuration"), dict):
        raise UsageError(f"{path}: not a manifest.json (no configuration)")
    return manifest


def differences(recorded: Mapping[str, Any], asked: Mapping[str, Any]) -> list[str]:
    """``--name recorded -> asked`` for every option whose value differs."""
    names = sorted(set(recorded) | set(asked))
    return [f"--{name} {recorded.get(name)} -> {asked.get(name)}" for name in names
            if recorded.get(name) != asked.get(name)]


def existing_manifest(folder: Path) -> dict[str, Any] | None:
    """``folder``'s manifest, None if it has none. Read it once per run: with a million videos it is about
    400 MB of JSON, some 10 s to parse."""
    path = folder / MANIFEST_FILE
    return read_manifest(path) if path.exists() else None


def refuse_another_configuration(folder: Path, existing: Mapping[str, Any] | None, configuration: Mapping[str, Any],
                                 overwrite: bool) -> bool:
    """Whether ``existing`` (``folder``'s manifest, None if it has none) records ``configuration`` (compared on
    its keys only, so that a run can be checked before its checkpoints are at hand); another configuration is
    refused unless ``overwrite``."""
    if existing is None:
        return True
    recorded = existing["configuration"]
    changed = differences({name: recorded.get(name) for name in configuration}, configuration)
    if changed and not overwrite:
        raise UsageError(f"{folder} holds features made with another configuration ({'; '.join(changed)}); "
                         "use another --output_path, or --overwrite to extract every video again")
    return not changed


class Manifest:
    """The manifest of one output folder during a run.

    Each finished video's record is appended to ``manifest.videos.jsonl`` as it comes (a line, flushed: cheap
    whatever the number of videos, and nothing is lost in a crash); ``manifest.json`` is rewritten at the start
    and at the end of a run, with those records folded in, and the journal is then removed. A run that finds a
    journal left by a crashed one folds it in first.
    """

    def __init__(self, path: Path, content: dict[str, Any], mirror: ManifestMirror | None = None):
        self.path, self.content, self._mirror = path, content, mirror
        self.journal = path.with_name(JOURNAL_FILE)
        self._handle = None

    @classmethod
    def open(cls, folder: Path, existing: Mapping[str, Any] | None, configuration: dict[str, Any],
             recipe: dict[str, Any], overwrite: bool, mirror: ManifestMirror | None = None) -> Manifest:
        """The folder's manifest for a run of ``configuration``, from ``existing`` (:func:`existing_manifest`):
        one with the same configuration keeps its videos; one with another is refused, unless ``overwrite``
        (then it starts afresh)."""
        path = folder / MANIFEST_FILE
        same = refuse_another_configuration(folder, existing, configuration, overwrite)
        kept = existing.get("videos", {}) if existing is not None else {}
        videos = {**kept, **_journal_records(path.with_name(JOURNAL_FILE))} if same else {}
        content = {"tool": tool_version(), "configuration": configuration, **recipe, "libraries": library_versions(),
                   "machine": platform.node(), "videos": videos}
        manifest = cls(path, content, mirror)
        manifest.save()
        return manifest

    def has_video(self, key: str) -> bool:
        return key in self.content["videos"]

    def record(self, key: str) -> dict[str, Any] | None:
        """A video's record, None if it has none."""
        return self.content["videos"].get(key)

    def add_video(self, key: str, facts: Mapping[str, Any]) -> None:
        self.content["videos"][key] = dict(facts)
        if self._handle is None:
            self._handle = open(self.journal, "a", encoding="utf-8")
        line = json.dumps({"video": key, **facts}) + "\n"
        self._handle.write(line)
        self._handle.flush()
        if self._mirror is not None:
            self._mirror.record(line)

    def save(self) -> None:
        """Rewrite ``manifest.json`` whole (atomically) with every record so far; the journal is then redundant."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.content, indent=1, sort_keys=False) + "\n"
        atomic_write(self.path, lambda handle: handle.write(text.encode()))
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        self.journal.unlink(missing_ok=True)
        if self._mirror is not None:
            self._mirror.saved(self.path)


def _journal_records(journal: Path) -> dict[str, Any]:
    """The records of a journal left by a run that did not finish (a torn last line is skipped)."""
    records: dict[str, Any] = {}
    if not journal.exists():
        return records
    for line in journal.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "video" in record:
            records[record.pop("video")] = record
    return records


def tool_version() -> dict[str, Any]:
    """The git commit of the package (and whether tracked files differ from it), when it is a git checkout."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=_ROOT, capture_output=True, text=True, timeout=10)
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=_ROOT,
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return {"name": "video_features", "commit": None}
    if commit.returncode != 0:
        return {"name": "video_features", "commit": None}
    return {"name": "video_features", "commit": commit.stdout.strip(), "modified": bool(status.stdout.strip())}


def library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    import av

    versions["ffmpeg (libavcodec)"] = ".".join(map(str, av.library_versions.get("libavcodec", ())))
    return versions


def file_sha256(path: Path) -> str:
    """The file's SHA-256, computed once: cached in ``<file>.sha256`` with the size and modification time it was
    computed for (a folder that cannot be written to only loses the cache)."""
    path = Path(path)
    stat = path.stat()
    cache = path.with_name(path.name + ".sha256")
    stamp = f"{stat.st_size} {stat.st_mtime_ns}"
    try:
        digest, cached_stamp = cache.read_text().split("\n")[:2]
        if cached_stamp == stamp and len(digest) == 64:
            return digest
    except (OSError, ValueError):
        pass
    digest = sha256_of(path)
    try:
        atomic_write(cache, lambda handle: handle.write(f"{digest}\n{stamp}\n".encode()))
    except OSError:
        pass
    return digest
