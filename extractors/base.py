"""The shared extraction engine: decode -> preprocess -> batch -> model -> sink.

A family's extractor class says which options it reads (``options``), how to load its model (``load_model``),
which inputs a video gives (``model_inputs``, usually through ``preprocess``) and how to run a batch
(``forward``). The class attributes and class methods (``key``, ``options``, ``feature_keys``,
``option_defaults``, ``validate``, ``sampling_rule``, ``checkpoints``) are the family's static description, which
the configuration reads before anything runs (``extractors/registry.py``). The engine owns decoding, batching,
device placement, the dtype of the results and where they go, so every model gets the same guarantees: its one
loop is ``extractors/feed.py``'s, the options it declares are ``extractors/engine_options.py``'s. Inputs come as
single sampled frames (``extractors/frame_wise.py``), consecutive frame pairs (flow,
``extractors/models/optical_flow.py``) or windows of frames (``extractors/windows.py``).
"""
from __future__ import annotations

import abc
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence, TypeVar

import numpy as np
import torch

from extractors.config import RunConfig, output_layout, resolve_config
from extractors.devices import default_device
from extractors.engine_options import BATCH_SIZE, CHECKPOINT
from extractors.feed import ModelFeed, OnProgress, run_feeds
from extractors.options import Option
from extractors.predictions import SHOW_PRED
from extractors.prefetch import Batch, Prefetcher, batches, pinned, to_device
from extractors.registry import ModelDocs, feature_type
from extractors.transforms import CROPS, PREPROCESS_ON_DEVICE, FramePreprocessing
from extractors.weights import Weights
from io_utils.checkpoints import checkpoint_path
from io_utils.errors import UsageError, VideoError
from io_utils.frames import FrameFolderReader
from io_utils.limits import InputLimits
from io_utils.outputs import MemorySink, OutputLayout, Sink, open_sink
from io_utils.readers import FrameReader, Reader
from io_utils.sources import Source, as_source
from io_utils.video import VideoReader
from io_utils.video_list import VIDEO_EXTENSIONS, VideoJob, output_stem

V = TypeVar("V")


@dataclass(frozen=True)
class WeightsFile:
    """A file of weights a run loads: where it is, where it was published, and the preprocessing it goes with
    (None where the model's library gives it only once the model is built)."""

    path: Path
    source: str
    preprocessing: str | None = None


class BaseExtractor(abc.ABC):
    """Turns one video into a dict of arrays: ``{main key: (N, ...), "fps": (), "timestamps_ms": (N,)}``.

    ``external_call=True`` is for use from Python: the library prints nothing of its own (no progress bar for
    a download); ``extract`` returns the arrays in every case. ``device``: where the model runs (the worker that
    creates an extractor knows its device; by default the CPU with ``--cpu``, else the first of
    ``--device_ids``). ``layout``: where the run's outputs go (the runner's; by default the configuration's).
    """

    key: str = "features"  # the output key of the features
    options: tuple[Option, ...] = ()  # the options this family reads, beyond those of every run
    writes_flow: bool = False  # its output is optical flow (the flow image modes are for it)
    input_extensions: frozenset[str] = VIDEO_EXTENSIONS  # the files --video_dir takes
    crops_inside_forward: bool = False  # inputs are whole frames; ``forward`` returns (B * crops, ...) rows
    # option values for a runnable example of this family, where an option's own example is another family's
    examples: Mapping[str, Any] = {}
    docs: ModelDocs | None = None  # its row in the generated model tables

    def __init__(self, config: RunConfig | Mapping[str, Any], external_call: bool = False,
                 device: str | torch.device | None = None, layout: OutputLayout | None = None):
        self.config = resolve_config(config)
        self.feature_type: str = self.config.feature_type
        spec = feature_type(self.feature_type)
        if type(self) is not spec.extractor:
            raise UsageError(f"{self.feature_type} is extracted by {spec.extractor.__name__}, not {type(self).__name__}")
        self.weights: Weights | None = spec.weights_for(self.config)
        self.external_call = external_call
        self.layout = layout or output_layout(self.config)
        self.main_key = self.layout.main_key
        self.device = torch.device(device) if device is not None else default_device(self.config)
        self.limits = InputLimits.of(self.config.input_limits)
        model, self.transform = self.load_model()
        self.model = model.to(self.device).eval()
        self._fitting_inputs: int | None = None  # inputs per forward that fit after running out of memory
        self._on_device = self.config[PREPROCESS_ON_DEVICE]  # declared by families of FramePreprocessing
        self._copy_stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None

    @classmethod
    def feature_keys(cls, config: RunConfig) -> list[str]:
        """The keys of the features a run writes, the main one first (known before any model is loaded)."""
        return [cls.key]

    @classmethod
    def option_defaults(cls, config: RunConfig, weights: Weights | None) -> dict[str, Any]:
        """Values this model gives the options left unset: the name of the weights it loads, and more in
        subclasses (window sizes, frame rate)."""
        return {"weights": weights.name} if weights is not None and "weights" in config.model_options else {}

    @classmethod
    def validate(cls, config: RunConfig, weights: Weights | None) -> None:
        """Refuse combinations of options this model cannot run, before any checkpoint or video is touched.
        Options it does not read at all are refused before this, from ``options``."""

    @classmethod
    @abc.abstractmethod
    def sampling_rule(cls, config: RunConfig) -> str:
        """Which inputs a run takes, in words, for the manifest and ``--list_models``."""

    @classmethod
    def checkpoints(cls, config: RunConfig) -> list[tuple[Weights, str | None, str]]:
        """The published checkpoints a run loads, each with the local file given instead (or None) and the
        option that gives it; by default the entry of ``--weights`` and ``--checkpoint``."""
        weights = feature_type(config.feature_type).weights_for(config)
        return [(weights, config[CHECKPOINT], "checkpoint")] if weights is not None else []

    @classmethod
    def weights_files(cls, config: RunConfig) -> list[WeightsFile]:
        """Every file of weights a run loads, for the manifest (after :meth:`prepare`, so each is local); by
        default those of :meth:`checkpoints`."""
        files = []
        for weights, local, option in cls.checkpoints(config):
            path = checkpoint_path(weights, local, option, config.weights_dir, progress=False)
            files.append(WeightsFile(path, weights.url, repr(weights.preprocessing) if weights.preprocessing else None))
        return files

    @classmethod
    def library_weights(cls) -> tuple[str, ...]:
        """For a family that loads its library's pretrained weights (no :class:`Weights` table): what
        ``--list_models`` lists of them."""
        return ()

    @classmethod
    def write_random(cls, config: RunConfig, folder: Path, seed: int = 0) -> list[Path]:
        """Every checkpoint a run loads, with random weights in the official format, where ``--weights_dir
        folder`` finds it; by default those of :meth:`checkpoints`, under their official file names."""
        return [weights.write_random(folder, seed + index) for index, (weights, _, _) in enumerate(cls.checkpoints(config))]

    @classmethod
    def prepare(cls, config: RunConfig) -> None:
        """Find (or download) every checkpoint once per run, before workers start, so it is not done N times
        and a missing file stops the run with one line."""
        for weights, local, option in cls.checkpoints(config):
            checkpoint_path(weights, local, option, config.weights_dir)

    def checkpoint_file(self, weights: Weights | None = None, local: str | None = None, option: str = "checkpoint"
                        ) -> Path:
        """The file to load: ``local`` (by default ``--checkpoint``), else the published ``weights`` (by default
        this extractor's) looked up or downloaded."""
        if weights is None:
            weights, local = self.weights, self.config[CHECKPOINT]
        return checkpoint_path(weights, local, option, self.config.weights_dir, progress=not self.external_call)

    @property
    def inputs_per_batch(self) -> int:
        return self.config[BATCH_SIZE]

    @abc.abstractmethod
    def load_model(self) -> tuple[torch.nn.Module, FramePreprocessing | None]:
        """The network with its weights, and the preprocessing of one frame (None: ``preprocess`` is overridden)."""

    def preprocess(self, rgb: np.ndarray) -> torch.Tensor:
        """One (H, W, 3) uint8 RGB frame -> one model input, on the CPU, with ``--crops``."""
        return self.transform(rgb, self.config[CROPS])

    @abc.abstractmethod
    def forward(self, batch: Batch) -> torch.Tensor | dict[str, torch.Tensor]:
        """A batch of inputs, on ``self.device`` -> (B, ...) outputs of the main key, or a dict of them."""

    def open_reader(self, path: str | os.PathLike | Source) -> Reader:
        """What ``model_inputs`` reads a file with: its video stream (audio models read its audio); a folder of
        frames with ``--frames_dir``."""
        if self.config.frames_dir:
            return FrameFolderReader(path, self.config.frames_fps)
        return VideoReader(path, limits=self.limits)

    @abc.abstractmethod
    def model_inputs(self, video: FrameReader, job: VideoJob
                     ) -> Iterator[tuple[torch.Tensor | dict[str, torch.Tensor], float]]:
        """Inputs (a tensor, or a dict of tensors) with their timestamps (ms), in time order. ``job`` says where
        this video's outputs go (and so where an earlier run's are, for families that read them)."""

    def open_sink(self, paths: Mapping[str, Path]) -> Sink:
        """Where a video's outputs go, batch by batch, for ``--on_extraction`` (``paths``: the layout's)."""
        return open_sink(self.config.on_extraction, paths)

    def show_predictions(self, outputs: Mapping[str, np.ndarray], timestamps_ms: Sequence[float]) -> None:
        """``--show_pred``: print what the model recognises in one batch. Not abstract: only the families that
        declare ``--show_pred`` give it (the option is refused for the others, so this is never reached)."""
        raise NotImplementedError

    def video_job(self, path: str | os.PathLike | Source) -> VideoJob:
        """The job of one video given by its path or URL (its outputs named as ``--video_dir`` or a path list name
        them)."""
        source = as_source(path)
        return VideoJob(source, output_stem(source, self.config.video_dir))

    def extract(self, video_path: str | os.PathLike | Source) -> dict[str, np.ndarray]:
        """Features of one video. Raises :class:`VideoError` for a video that cannot be processed."""
        for _, outcome in self.extract_many([self.video_job(video_path)]):
            if isinstance(outcome, Exception):
                raise outcome
            return outcome
        raise VideoError("no frames were sampled")

    @torch.inference_mode()
    def extract_many(self, videos: Iterable[V], job_of: Callable[[V], VideoJob] = lambda job: job,
                     sink_of: Callable[[V], Sink] = lambda video: MemorySink(), on_progress: OnProgress | None = None,
                     on_facts: Callable[[V, dict[str, Any]], None] | None = None,
                     ) -> Iterator[tuple[V, dict[str, np.ndarray] | Exception]]:
        """Each video with what its sink's ``close`` returned, or the exception that failed it, in order.

        A thread decodes ahead (``extractors/prefetch.py``) and consumes ``videos`` one video ahead of the
        model. Each batch's outputs go to the video's sink (``sink_of(video)``, by default kept in memory) as
        soon as they are computed, and ``on_progress(video, seconds done, seconds in all)`` follows them.
        ``on_facts(video, facts)`` receives what the reader knows of a video's stream once it is read.
        """
        prefetch = Prefetcher(self._tagged_batches, videos, job_of,
                              lambda video: self.open_reader(job_of(video).path),
                              lambda tagged: (tagged[0], self._prepared(tagged[1])))
        feed = ModelFeed(self, sink_of)

        def ended(video: V, facts: dict[str, Any] | None, error: Exception | None) -> Any:
            if facts is not None and feed.failed is None and on_facts is not None:
                on_facts(video, facts)
            return feed.end(video, facts, error)

        yield from run_feeds(prefetch, [feed], ended, on_progress)

    def batched_inputs(self, reader: Reader, job: VideoJob) -> Iterator[tuple[Batch, list[float]]]:
        """The video's model inputs stacked into batches of ``inputs_per_batch``."""
        return batches(self.model_inputs(reader, job), self.inputs_per_batch)

    def _tagged_batches(self, reader: Reader, job: VideoJob) -> Iterator[tuple[tuple[int, Batch], list[float]]]:
        """The batches as :func:`run_feeds` takes them: tagged with the index of their feed (this one's: 0)."""
        for batch, times in self.batched_inputs(reader, job):
            yield (0, batch), times

    def reset_batch_size(self) -> None:
        """Each video starts from ``--batch_size``, whatever size the video before had to fall back to."""
        self._fitting_inputs = None

    def _prepared(self, batch: Batch) -> Batch:
        """A batch made ready for the model, in the decoding thread: on CUDA, copied to the device from pinned
        memory on a stream of its own, so the copy overlaps the model's work on the batch before (and with
        ``--preprocess_on_device``, resized, cropped and normalised there too). The tensors are marked as used
        by the model's stream, so that their memory is not reused while the model still reads it."""
        if self._copy_stream is None:
            return self.transform.batch(batch, self.config[CROPS]) if self._on_device else batch
        with torch.cuda.stream(self._copy_stream):
            moved = to_device(pinned(batch), self.device)
            if self._on_device:
                moved = self.transform.batch(moved, self.config[CROPS])
        self._copy_stream.synchronize()
        model_stream = torch.cuda.default_stream(self.device)
        for tensor in (moved.values() if isinstance(moved, dict) else [moved]):
            tensor.record_stream(model_stream)
        return moved

    def _run_batch(self, inputs: Batch, timestamps_ms: list[float]) -> tuple[dict[str, np.ndarray], list[float]]:
        crops = self.config[CROPS]
        if crops > 1 and not self.crops_inside_forward:  # (B, crops, ...): the crops are more inputs
            inputs = inputs.flatten(0, 1)
        arrays = self._forward_fitting(inputs)
        if self.config[SHOW_PRED]:
            self.show_predictions(arrays, [time for time in timestamps_ms for _ in range(crops)])
        if crops > 1:
            arrays = {key: value.reshape(len(timestamps_ms), crops, *value.shape[1:]) for key, value in arrays.items()}
        return arrays, timestamps_ms

    def _forward_fitting(self, inputs: Batch) -> dict[str, np.ndarray]:
        """The batch's outputs as arrays, in parts small enough for the device: on running out of memory the part
        is halved and the batch run again, down to one input, and the rest of the video keeps the size that fit.
        Each part is an ordinary batch, so the features equal a run at that ``--batch_size``."""
        size = self._fitting_inputs or _length(inputs)
        while True:
            try:
                parts = [self._forward_arrays(part) for part in _split(inputs, size)]
                return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
            except torch.OutOfMemoryError as error:
                if size == 1:
                    raise VideoError(f"out of memory on {self.device} even with one input per batch "
                                     f"({str(error).splitlines()[0]})") from error
            # out of the except block: the failed attempt's tensors are released before the cache is emptied
            size = self._fitting_inputs = size // 2
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    def _forward_arrays(self, inputs: Batch) -> dict[str, np.ndarray]:
        outputs = self.forward(to_device(inputs, self.device))
        if isinstance(outputs, torch.Tensor):
            outputs = {self.main_key: outputs}
        return {key: value.float().cpu().numpy() for key, value in outputs.items()}


def _length(inputs: Batch) -> int:
    return len(next(iter(inputs.values()))) if isinstance(inputs, dict) else len(inputs)


def _split(inputs: Batch, size: int) -> list[Batch]:
    """``inputs`` in consecutive parts of ``size`` inputs (the last one shorter)."""
    if isinstance(inputs, dict):
        pieces = {key: value.split(size) for key, value in inputs.items()}
        return [{key: pieces[key][index] for key in pieces} for index in range(len(next(iter(pieces.values()))))]
    return list(inputs.split(size))


