"""How a run's outputs are checked, claimed, published and cleaned up after a dead worker: in a folder on a disk
(``io_utils.claims``: lock files, atomic renames) or in object storage (``io_utils.remote_outputs``: staging,
uploads, lock objects). Workers and the scheduler see one interface, chosen by :func:`output_store`."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from io_utils.claims import Claim, outputs_complete, owned_by, remove_leftover_temporaries
from io_utils.errors import VideoError
from io_utils.outputs import PENDING_FOLDER, SHARD_SUFFIXES, OutputLayout
from io_utils.remote_outputs import RemoteClaim, RemoteFolder, complete, publish, relative_to
from io_utils.video_list import VideoJob


class LocalOutputs:
    """Done, claims and clean-up for an output folder on a disk (the rules above)."""

    def __init__(self, layout: OutputLayout):
        self.layout = layout
        self._taken_over: set[VideoJob] = set()  # claimed from a holder that died

    def complete(self, job: VideoJob) -> bool:
        return outputs_complete(self.layout.paths(job).values())

    def claim(self, job: VideoJob) -> Claim | None:
        claim = Claim.acquire(self.layout.claim(job))
        if claim is not None and claim.took_over:
            self._taken_over.add(job)
        return claim

    def prepare(self, job: VideoJob) -> None:
        """Before extracting a claimed video: remove what a killed writer left of it. Only a claim taken over from a
        dead holder can find anything: a writer removes its own temporaries when it fails or is stopped, and the
        scheduler those of a worker that died; a killed run leaves its claims, which the next run takes over."""
        if job in self._taken_over:
            self._taken_over.discard(job)
            remove_leftover_temporaries(self.layout.paths(job).values())

    def publish(self, job: VideoJob) -> None:
        """The outputs are in place once written."""

    def clean_up_after(self, job: VideoJob, pid: int, host: str) -> None:
        """Remove the temporaries and the claim of a video that process ``pid`` of ``host`` held when it died."""
        lock = self.layout.claim(job)
        if Claim.held_by(lock, pid, host):
            remove_leftover_temporaries(self.layout.paths(job).values())
            lock.unlink(missing_ok=True)


class ObjectStoreOutputs(LocalOutputs):
    """The same for an output folder in object storage (``io_utils.remote_outputs``): the layout's folder is this
    process's staging folder, the store holds the outputs and the claims."""

    def __init__(self, layout: OutputLayout):
        super().__init__(layout)
        self.folder = RemoteFolder(layout.remote)

    def _relative(self, path: Path) -> str:
        return relative_to(self.layout.folder, path)

    def complete(self, job: VideoJob) -> bool:
        return complete(self.folder, self.layout.folder, self.layout.paths(job).values())

    def claim(self, job: VideoJob) -> RemoteClaim | None:
        return RemoteClaim.acquire(self.folder, self._relative(self.layout.claim(job)))

    def publish(self, job: VideoJob) -> None:
        publish(self.folder, self.layout.folder, self.layout.paths(job), self.layout.main_key)

    def clean_up_after(self, job: VideoJob, pid: int, host: str) -> None:
        lock = self._relative(self.layout.claim(job))
        try:
            if owned_by(self.folder.read_text(lock) or "", pid, host):
                self.folder.delete(lock)
        except VideoError:
            pass  # the store is unreachable: the claim goes stale, and is taken over


def output_store(layout: OutputLayout) -> LocalOutputs:
    """How a run's outputs are checked, claimed and published: on a disk, or in object storage."""
    return ObjectStoreOutputs(layout) if layout.remote else LocalOutputs(layout)


@dataclass
class Listing:
    """What one listing of an output folder says: the jobs whose outputs are all there and, with sharded outputs,
    the shards published and the shards with a pending folder (``io_utils.shards``)."""

    finished: set[VideoJob] = field(default_factory=set)
    published: set[str] = field(default_factory=set)
    pending: set[str] = field(default_factory=set)


def finished_by_listing(layout: OutputLayout, jobs: list[VideoJob]) -> Listing:
    """What the output folder holds of ``jobs``, from one listing of it (paginated in object storage: no request
    per video). A video of a published shard counts as finished (the manifest says whether it failed). On a disk, a
    listed ``.npy`` or ``.pkl`` file must also be whole (its header is read); in object storage, an object is only
    ever put whole. An output outside the folder (a CSV list's absolute ``feature_path``) is not listed: its video
    is left to its worker's check."""
    files = _listed_files(layout)
    suffix = SHARD_SUFFIXES.get(layout.on_extraction)
    published = {job.output_shard for job in jobs if suffix and f"{job.output_shard}{suffix}" in files}
    pending = {name.split("/")[1] for name in files if name.startswith(f"{PENDING_FOLDER}/") and name.count("/") > 1}
    finished = set()
    for job in jobs:
        if job.output_shard in published:
            finished.add(job)
            continue
        paths = layout.paths(job)
        try:
            relative = [path.relative_to(layout.folder).as_posix() for path in paths.values()]
        except ValueError:
            continue
        if paths and all(name in files for name in relative) and (layout.remote or outputs_complete(paths.values())):
            finished.add(job)
    return Listing(finished, published, pending)


def _listed_files(layout: OutputLayout) -> set[str]:
    """Every file in the output folder, relative to it: one listing (a walk on a disk, ``find`` in a store)."""
    if layout.remote:
        return set(RemoteFolder(layout.remote).list())
    root = str(layout.folder)
    return {os.path.relpath(os.path.join(folder, name), root).replace(os.sep, "/")
            for folder, _, names in os.walk(root) for name in names}
