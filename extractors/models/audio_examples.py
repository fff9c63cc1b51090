"""Audio examples on the timeline of the visual features: what the audio families (vggish, clap) share.

An example is ``example_span`` samples at ``sample_rate``; its row's timestamp is its centre, on the timeline
whose 0 is the first video frame. Where examples go:
- by default one every ``example_hop`` samples from 0, while the audio holds a whole example (at least one: a
  shorter track gives one);
- ``--extract_method uni_N | fix_F | all`` and ``--views N``: centred on the frames a visual model takes with
  the same option (their times come from the video's packets; nothing is decoded), so the rows line up;
- ``--timestamps_from DIR``: centred on each row of the ``timestamps_ms`` outputs of an earlier run into ``DIR``,
  found as that run named them (``OutputLayout.in_folder``).
Audio is decoded and resampled in chunks (:class:`~io_utils.audio.AudioReader`) and memory holds about one
example (:class:`SampleWindow`), however long the track. A family turns an example's samples into its model's
input (:meth:`AudioExampleExtractor.example_input`), told which of them lie within the track.
"""
from __future__ import annotations

import abc
import itertools
import os
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch

from extractors.base import BaseExtractor
from extractors.engine_options import BATCH_SIZE, CHECKPOINT, EXTRACT_METHOD, FEATURE_OPTIONS, WEIGHTS, sampling
from extractors.options import Option, local_folder
from io_utils.audio import AUDIO_EXTENSIONS, AudioReader
from io_utils.errors import UsageError, VideoError
from io_utils.outputs import OutputLayout
from io_utils.video_list import VIDEO_EXTENSIONS, VideoJob

SECTION = "audio"
TIMESTAMPS_FROM = Option("timestamps_from", None, "centre one example on each row of the timestamps_ms outputs of an "
                         "earlier run of any feature type (DIR: its output folder)", "stamps", metavar="DIR",
                         convert=local_folder, section=SECTION)


class SampleWindow:
    """Reads spans of samples from a stream of chunks, in ascending order of their starts, holding only what
    the next spans can still need. Samples before 0 or past the end of the stream are zeros."""

    def __init__(self, chunks: Iterable[np.ndarray]):
        self._chunks = iter(chunks)
        self._held: list[np.ndarray] = []
        self._start = 0  # index of the first held sample
        self._count = 0  # samples held
        self.ended = False

    def read(self, start: int, length: int) -> np.ndarray:
        """Samples ``start`` to ``start + length``; the ones before ``start`` are let go."""
        while not self.ended and self._start + self._count < start + length:
            chunk = next(self._chunks, None)
            if chunk is None:
                self.ended = True
            else:
                self._held.append(chunk)
                self._count += len(chunk)
        held = np.concatenate(self._held) if self._held else np.zeros(0, np.float32)
        keep_from = min(max(start - self._start, 0), len(held))
        held, self._start = held[keep_from:], self._start + keep_from
        self._held, self._count = [held], len(held)
        span = np.zeros(length, np.float32)
        first, last = max(start, self._start), min(start + length, self._start + len(held))
        if last > first:
            span[first - start : last - start] = held[first - self._start : last - self._start]
        return span

    def present(self, start: int, length: int) -> slice:
        """Which samples of the span :meth:`read` just gave for ``start`` lie within the stream (the others are
        the zeros before its start or past its end)."""
        end = self._start + self._count if self.ended else start + length
        return slice(min(max(-start, 0), length), max(min(end - start, length), 0))

    def holds_until(self, end: int) -> bool:
        """Whether the stream reaches sample ``end`` (only meaningful right after a :meth:`read` up to it)."""
        return self._start + self._count >= end


class AudioExampleExtractor(BaseExtractor):
    """Models of audio examples on the visual timeline. A family sets ``sample_rate``, ``example_span`` (samples
    an example reads), ``example_hop`` (samples between examples of the default grid; a centred example starts
    half a hop before its centre), ``example_name`` (for ``--list_models``) and :meth:`example_input`."""

    options = (EXTRACT_METHOD, BATCH_SIZE, *FEATURE_OPTIONS, WEIGHTS, CHECKPOINT, TIMESTAMPS_FROM)
    input_extensions = VIDEO_EXTENSIONS | AUDIO_EXTENSIONS
    sample_rate: int
    example_span: int
    example_hop: int
    example_name: str

    @classmethod
    def validate(cls, config, weights) -> None:
        super().validate(config, weights)
        if config.frames_dir:
            raise UsageError(f"--frames_dir: folders of frames have no audio for {config.feature_type}")
        sampled = [f"--{name}" for name in ("extract_method", "views") if name in config.given()]
        if config[TIMESTAMPS_FROM] and sampled:  # (nothing fills either in: "given" is what the user gave)
            raise UsageError(f"--timestamps_from places the examples: give it or {' or '.join(sampled)}, not both")
        if config[TIMESTAMPS_FROM] and not Path(config[TIMESTAMPS_FROM]).is_dir():
            raise UsageError(f"--timestamps_from {config[TIMESTAMPS_FROM]}: no such folder")

    @classmethod
    def sampling_rule(cls, config) -> str:
        return examples_rule(config, cls.example_name, cls.example_hop / cls.sample_rate)

    def open_reader(self, path: str | os.PathLike) -> AudioReader:
        return AudioReader(path, self.sample_rate, verbose=self.config.verbose, limits=self.limits)

    @abc.abstractmethod
    def example_input(self, samples: np.ndarray, present: slice) -> torch.Tensor:
        """The model's input for one example: its ``example_span`` samples (zeros outside the track) and which
        of them lie within the track."""

    def model_inputs(self, audio: AudioReader, job: VideoJob) -> Iterator[tuple[torch.Tensor, float]]:
        chunks = audio.chunks()
        first = next(chunks, None)  # sets where the audio starts on the timeline
        if first is None:
            raise VideoError("the audio stream holds no decodable samples")
        window = SampleWindow(_chained(first, chunks))
        offset = round(audio.audio_start_s * self.sample_rate)
        span, hop, per_ms = self.example_span, self.example_hop, self.sample_rate / 1000
        centres = self._centres_ms(audio, job)
        if centres is None:  # every hop from 0 while the track holds a whole example
            for index in itertools.count():
                start = index * hop - offset
                samples = window.read(start, span)
                if index and not window.holds_until(start + span):
                    return
                yield self.example_input(samples, window.present(start, span)), (index * hop + hop / 2) / per_ms
        for centre_ms in centres:
            start = round(centre_ms * per_ms) - hop // 2 - offset
            samples = window.read(start, span)
            yield self.example_input(samples, window.present(start, span)), float(centre_ms)

    def _centres_ms(self, audio: AudioReader, job: VideoJob) -> list[float] | None:
        """Where the examples are centred, or None for the default grid."""
        config = self.config
        if config[TIMESTAMPS_FROM]:
            return _timestamps_of(self.layout.in_folder(config[TIMESTAMPS_FROM]), job)
        method = sampling(config)
        if method is None:
            return None
        if audio.video is not None:  # on the frames a visual model takes with the same option
            video = audio.video
            targets = None if method.kind == "all" else method.target_pts(video.start_pts, video.end_pts,
                                                                           video.time_base)
            return video.frame_times_ms(targets)
        if method.kind == "all":
            raise VideoError("--extract_method all takes every video frame, and this file has no video")
        if audio.duration_s is None:
            raise VideoError(f"the file declares no duration, which {method} needs")
        duration = Fraction(audio.duration_s).limit_denominator(1_000_000)
        return [float(offset * 1000) for offset in method.target_offsets(duration)]


def examples_rule(config, examples: str, hop_s: float) -> str:
    """Where a run's audio examples go, in words (``examples``: what they are, "10 s examples"; ``hop_s``: the
    seconds between those of the default grid), for the manifest and ``--list_models``."""
    if config[TIMESTAMPS_FROM]:
        return f"{examples} centred on the rows of the timestamps_ms outputs in {config[TIMESTAMPS_FROM]}"
    if sampling(config) is not None:
        return f"{examples} centred on the frames of {sampling(config)}"
    return f"{examples} every {hop_s:g} s from the first video frame"


def _chained(first: np.ndarray, rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    yield first
    yield from rest


def _timestamps_of(earlier_run: OutputLayout, job: VideoJob) -> list[float]:
    """The rows of an earlier run (its outputs named as this run names them), in ascending order."""
    source = earlier_run.path(job, "timestamps_ms")
    if not source.is_file():
        raise VideoError(f"--timestamps_from: no {source}")
    times = np.load(source, allow_pickle=False).astype(np.float64).ravel()
    if times.size == 0 or np.any(np.diff(times) < 0):
        raise VideoError(f"--timestamps_from: {source} holds {'no times' if times.size == 0 else 'times out of order'}")
    return times.tolist()
