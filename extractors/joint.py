"""Several feature types from one decode of each video (``--feature_type A B ...``).

Research feature sets come in pairs and triples (a 2D model at 1 fps beside a 3D one at 24 fps, a visual model
beside an audio one). Run one by one, each type opens, demuxes and decodes every video again, and decoding is most
of the bill. :class:`JointExtractor` opens a video once and decodes, in one pass, the union of the frames its
types take; each type gets exactly the frames it would get alone, so its features are those of a run of it alone.

How a video is shared, without a second model of what each family samples: every visual family reads its frames
with one call, ``read_at(targets)`` or ``read_all()``, on the reader it is given. So each type's ``model_inputs``
first runs against a :class:`_Planning` view, which records that call and stops the generator there; the union
of the recorded targets is then decoded once (``read_at``: the frame on screen at each time), and each type's
``model_inputs`` runs again on a :class:`_SharedView` that hands it its own frames from that one pass. The types
are advanced in the time order of their inputs, so a decoded frame waits only for the types that lag by one input
at most, and is dropped once every type that takes it has it. Types that read something else (the audio models
read the audio stream) open their own reader of the same input.
"""
from __future__ import annotations

import heapq
import os
from collections import Counter
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Collection, Iterable, Iterator, Mapping, Sequence, TypeVar

import numpy as np
import torch

from extractors.base import BaseExtractor
from extractors.config import RunConfig, joint_configs
from extractors.feed import ModelFeed, OnProgress, run_feeds
from extractors.prefetch import Batcher, Prefetcher
from extractors.registry import extractor_class
from io_utils.errors import VideoError
from io_utils.outputs import MemorySink, OutputLayout, Sink
from io_utils.readers import FrameReader, Reader
from io_utils.sources import Source
from io_utils.forward_decoder import on_screen
from io_utils.video import Frame
from io_utils.video_list import VideoJob

V = TypeVar("V")
Outcomes = dict[str, "dict[str, np.ndarray] | Exception"]  # feature type -> its arrays, or why it failed


class JointExtractor:
    """The extractors of several feature types, fed from one decode of each video.

    ``options``: the options of the run, ``feature_type`` a list (see :func:`extractors.config.joint_configs`), or
    the resolved configurations themselves. ``layouts``: where each type's outputs go (by default its
    configuration's)."""

    def __init__(self, options: Mapping[str, Any] | Sequence[RunConfig], external_call: bool = False,
                 device: str | torch.device | None = None, layouts: Mapping[str, OutputLayout] | None = None):
        configs = joint_configs(options) if isinstance(options, Mapping) else list(options)
        self.members: list[BaseExtractor] = [
            extractor_class(config.feature_type)(config, external_call, device,
                                                 layouts[config.feature_type] if layouts else None)
            for config in configs]
        self.feature_types = [member.feature_type for member in self.members]
        self._shares = [_shares_frames(member) for member in self.members]

    def extract(self, video_path: str | os.PathLike | Source) -> dict[str, dict[str, np.ndarray]]:
        """Each type's features of one video. Raises :class:`VideoError` if any type fails, naming it."""
        for _, outcomes in self.extract_many([self.members[0].video_job(video_path)]):
            failed = {name: outcome for name, outcome in outcomes.items() if isinstance(outcome, Exception)}
            if failed:
                raise VideoError("; ".join(f"{name}: {error}" for name, error in failed.items()))
            return outcomes

    @torch.inference_mode()
    def extract_many(self, videos: Iterable[V], job_of: Callable[[V], VideoJob] = lambda job: job,
                     sinks_of: Callable[[V, str], Sink] = lambda video, name: MemorySink(),
                     on_progress: OnProgress | None = None,
                     on_facts: Callable[[V, str, dict[str, Any]], None] | None = None,
                     types_of: Callable[[V], Collection[str]] | None = None) -> Iterator[tuple[V, Outcomes]]:
        """Each video with each type's outcome (what its sink's ``close`` returned, or why it failed), in order:
        :meth:`BaseExtractor.extract_many` for several types (``sinks_of(video, type)``, ``on_facts(video, type,
        facts)``). ``types_of(video)``: the types to extract from that video (by default all; a resumed run
        extracts only those whose outputs are missing), the only ones its outcomes name."""
        wanted = (lambda video: [index for index, name in enumerate(self.feature_types) if name in types_of(video)]
                  ) if types_of else (lambda video: list(range(len(self.members))))
        prefetch = Prefetcher(self._batched, videos, job_of,
                              lambda video: _JointInput(self.members, self._shares, job_of(video).path, wanted(video)),
                              self._prepared)
        feeds = [ModelFeed(member, lambda video, name=member.feature_type: sinks_of(video, name))
                 for member in self.members]
        yield from run_feeds(prefetch, feeds, lambda video, facts, error: self._outcomes(
            video, wanted(video), feeds, facts, error, on_facts), on_progress)

    def _outcomes(self, video, indices: list[int], feeds: list[ModelFeed], facts: dict[int, dict] | None,
                  error: Exception | None, on_facts: Callable | None) -> Outcomes:
        outcomes = {}
        for index in indices:
            member, feed = self.members[index], feeds[index]
            known = facts.get(index) if facts is not None else None  # none for a type whose reader did not open
            if known is not None and feed.failed is None and on_facts is not None:
                on_facts(video, member.feature_type, known)
            outcomes[member.feature_type] = feed.end(video, known, error)
        return outcomes

    def _prepared(self, payload: tuple[int, Any]) -> tuple[int, Any]:
        index, inputs = payload
        return index, inputs if isinstance(inputs, Exception) else self.members[index]._prepared(inputs)

    def _batched(self, joint: _JointInput, job: VideoJob) -> Iterator[tuple[tuple[int, Any], list[float]]]:
        """Every type's batches, tagged with the type's index, the types advanced in the time order of their
        inputs. A type that fails gives its exception in place of a batch; the others go on."""
        streams: dict[int, Iterator] = {}
        for index, error in joint.errors.items():
            yield (index, error), []
        sharing = [index for index in joint.sharing if index not in joint.errors]
        if len(sharing) == 1:  # one type reads the frames: a run of it alone, without the planning pass
            alone = sharing.pop()
            streams[alone] = _inputs(self.members[alone], joint.video, job)
        if sharing:
            frames = _SharedFrames(joint.video, {index: self.members[index] for index in sharing}, job)
            for index in sharing:
                streams[index] = _inputs(self.members[index], frames.view(index), job)
        for index, reader in joint.own.items():
            streams[index] = _inputs(self.members[index], reader, job)
        batchers = {index: Batcher(self.members[index].inputs_per_batch) for index in streams}
        queue = [(0.0, index) for index in sorted(streams)]
        while queue:
            _, index = heapq.heappop(queue)
            try:
                item, time_ms = next(streams[index])
            except StopIteration:
                if index in sharing:
                    frames.release(index)
                for batch, times in batchers[index].flush():
                    yield (index, batch), times
                continue
            except Exception as error:  # this type cannot read the video (too short, ...): the others go on
                if index in sharing:
                    frames.release(index)  # the frames it would have taken are not kept for it
                yield (index, error), []
                continue
            for batch, times in batchers[index].add(item, time_ms):
                yield (index, batch), times
            # next: the type whose next frame comes first (a type reading its own input: its last input's time)
            heapq.heappush(queue, (frames.next_ms(index) if index in sharing else time_ms, index))


def _inputs(member: BaseExtractor, reader: Reader, job: VideoJob) -> Iterator[tuple[Any, float]]:
    """``member``'s inputs, its ``model_inputs`` called at the first ``next`` (where a failure is that type's)."""
    yield from member.model_inputs(reader, job)


def _shares_frames(member: BaseExtractor) -> bool:
    """Whether a type reads the video's frames through the engine's reader (the audio models read their own)."""
    return type(member).open_reader is BaseExtractor.open_reader


class _JointInput:
    """One video opened for the types ``wanted`` (indices): one frame reader for the types that share it, and each
    other type's own reader. A reader that cannot be opened fails the types that read it (``errors``), not the
    others; if it fails them all, opening raises."""

    def __init__(self, members: list[BaseExtractor], shares: list[bool], path: Source, wanted: list[int]):
        if not wanted:
            raise ValueError("a video opened for no feature type")
        self.sharing = [index for index in wanted if shares[index]]
        self.errors: dict[int, Exception] = {}
        self.video: FrameReader | None = None
        self.own: dict[int, Reader] = {}
        if self.sharing:
            try:
                self.video = members[self.sharing[0]].open_reader(path)
            except VideoError as error:
                self.errors.update({index: error for index in self.sharing})
        for index in wanted:
            if not shares[index]:
                try:
                    self.own[index] = members[index].open_reader(path)
                except VideoError as error:
                    self.errors[index] = error
        if len(self.errors) == len(wanted):
            self.close()
            raise next(iter(self.errors.values()))
        first = self.video or next(iter(self.own.values()))
        self.path, self.fps = first.path, first.fps

    @property
    def duration_s(self) -> float | None:
        return max((reader.duration_s or 0.0 for reader in self._readers()), default=None)

    def facts(self) -> dict[int, dict[str, object]]:
        """Each type's reader's facts, by the type's index."""
        facts = {index: self.video.facts() for index in self.sharing} if self.video is not None else {}
        return {**facts, **{index: reader.facts() for index, reader in self.own.items()}}

    def _readers(self) -> list[Reader]:
        return ([self.video] if self.video is not None else []) + list(self.own.values())

    def close(self) -> None:
        for reader in self._readers():
            reader.close()

    def __enter__(self) -> _JointInput:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


_EVERY_FRAME = None  # what ``read_all`` asks for


class _Asked(BaseException):
    """Raised by :class:`_Planning` at a type's frame request, to stop its ``model_inputs`` there (a BaseException,
    so that no family's ``except Exception`` takes it for a failure)."""

    def __init__(self, targets: list[int] | None):
        super().__init__()
        self.targets = targets


class _SharedFrames:
    """One decode of a video for several types: plans what each takes, then decodes the union once, keeping a
    frame until every type that takes it has it."""

    def __init__(self, reader: FrameReader, members: dict[int, BaseExtractor], job: VideoJob):
        self.reader = reader
        self._frame_pts: list[int] | None = None
        asked = {index: self._planned(member, job) for index, member in members.items()}
        self._asked = {index: targets for index, targets in asked.items() if targets is not False}
        wanted = {index: self.frame_pts() if targets is _EVERY_FRAME else targets
                  for index, targets in self._asked.items()}
        union = sorted({target for targets in wanted.values() for target in targets})
        position = {target: index for index, target in enumerate(union)}
        self._positions = {index: [position[target] for target in targets] for index, targets in wanted.items()}
        self._taken = Counter()  # type -> how many of its frames it has had
        self._uses = Counter(spot for spots in self._positions.values() for spot in spots)
        self._union = union
        self._frames: Iterator[Frame] | None = None
        self._held: dict[int, Frame] = {}
        self._decoded = 0  # union positions decoded so far
        self._error: Exception | None = None

    def _planned(self, member: BaseExtractor, job: VideoJob) -> list[int] | None | bool:
        """The targets ``member`` asks for (``_EVERY_FRAME``: all), or False if it asks for none (it reads no
        frame, or fails before: its second run on the shared view does the same)."""
        try:
            next(iter(member.model_inputs(_Planning(self), job)))
        except _Asked as asked:
            return asked.targets
        except Exception:
            pass
        return False

    def view(self, index: int) -> _SharedView:
        return _SharedView(self, index)

    def frame_pts(self) -> list[int]:
        """The reader's frame times, read once for every type."""
        if self._frame_pts is None:
            self._frame_pts = self.reader.frame_pts()
        return self._frame_pts

    def frames_of(self, index: int, targets: Sequence[int] | None) -> Iterator[Frame]:
        """Type ``index``'s frames, as it asks for them again on its shared view (the plan's request)."""
        if index not in self._asked or self._asked[index] != (None if targets is None else list(targets)):
            raise RuntimeError("a model asked for other frames than it planned to (its sampling must depend only "
                               "on the video)")
        for spot in self._positions[index]:
            self._taken[index] += 1
            yield self._take(spot)

    def release(self, index: int) -> None:
        """Type ``index`` takes no more frames (it ended, or failed): those it has not taken are kept for the
        other types only, and dropped if no other takes them."""
        for spot in self._positions.get(index, [])[self._taken[index]:]:
            self._uses[spot] -= 1
            if not self._uses[spot]:
                self._held.pop(spot, None)
        self._taken[index] = len(self._positions.get(index, []))

    def next_ms(self, index: int) -> float:
        """When the next frame type ``index`` takes is shown (infinity once it has them all)."""
        spots, taken = self._positions.get(index, []), self._taken[index]
        return self.reader.pts_to_ms(self._union[spots[taken]]) if taken < len(spots) else float("inf")

    def _take(self, spot: int) -> Frame:
        while self._decoded <= spot:
            if self._error is not None:
                raise self._error
            if self._frames is None:
                self._frames = iter(self.reader.read_at(self._union))
            try:
                frame = next(self._frames)
            except StopIteration:
                self._error = VideoError("the video ended before its last frames could be decoded")
                continue
            except Exception as error:  # every type that needs a frame from here on fails as it would alone
                self._error = error
                raise
            if self._uses[self._decoded]:
                self._held[self._decoded] = frame
            self._decoded += 1
        frame = self._held[spot]
        self._uses[spot] -= 1
        if not self._uses[spot]:
            del self._held[spot]
        return frame


class _FrameViewBase:
    """What a type reads of the shared video besides its frames: the reader's own answers."""

    def __init__(self, shared: _SharedFrames):
        self._shared = shared
        reader = shared.reader
        self.path: Path = reader.path
        self.fps: float = reader.fps
        self.time_base: Fraction = reader.time_base
        self.start_pts: int = reader.start_pts
        self.end_pts: int = reader.end_pts
        self.num_frames: int = reader.num_frames

    @property
    def duration_s(self) -> float | None:
        return self._shared.reader.duration_s

    def pts_to_ms(self, pts: int) -> float:
        return self._shared.reader.pts_to_ms(pts)

    def frame_pts(self) -> list[int]:
        return list(self._shared.frame_pts())

    def frame_times_ms(self, targets: Sequence[int] | None = None) -> list[float]:
        return [self.pts_to_ms(pts) for pts in on_screen(self._shared.frame_pts(), targets)]

    def facts(self) -> dict[str, object]:
        return self._shared.reader.facts()


class _Planning(_FrameViewBase):
    """The view a type's ``model_inputs`` first runs against: its frame request is recorded, not served."""

    def read_at(self, targets: Sequence[int]) -> Iterator[Frame]:
        raise _Asked(list(targets))

    def read_all(self) -> Iterator[Frame]:
        raise _Asked(_EVERY_FRAME)


class _SharedView(_FrameViewBase):
    """The view a type reads its frames from, out of the one decode."""

    def __init__(self, shared: _SharedFrames, index: int):
        super().__init__(shared)
        self._index = index

    def read_at(self, targets: Sequence[int]) -> Iterator[Frame]:
        return self._shared.frames_of(self._index, targets)

    def read_all(self) -> Iterator[Frame]:
        return self._shared.frames_of(self._index, None)
