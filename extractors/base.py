"""The shared extraction loop: decode -> preprocess -> batch -> model -> sink.

An extractor subclass says which options it reads (``reads``), how to load its model (``load_model``), which
inputs a video gives (``model_inputs``, usually through ``preprocess``) and how to run a batch (``forward``).
The base owns the configuration, decoding, batching, device placement, the dtype of the results and where they
go, so every model gets the same guarantees. Inputs come as single sampled frames (:class:`FrameWiseExtractor`),
consecutive frame pairs (flow, ``extractors/flow.py``) or windows of frames (``extractors/windows.py``).
"""
from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence, TypeVar

import numpy as np
import torch

from extractors.config import RunConfig, resolve_config
from extractors.devices import select_device
from extractors.prefetch import Batch, Prefetcher, to_device
from extractors.registry import feature_type
from extractors.transforms import FramePreprocessing
from io_utils.errors import UsageError, VideoError
from io_utils.frames import FrameFolderReader
from io_utils.outputs import FinishingSink, MemorySink, Sink
from io_utils.sampling import SamplingMethod
from io_utils.video import VideoReader
from io_utils.video_list import VIDEO_EXTENSIONS
from io_utils.weights import Weights, checkpoint_path

V = TypeVar("V")
OnProgress = Callable[[Any, float, float], None]  # (video, seconds done, seconds in all)
DEFAULT_SAMPLING = SamplingMethod("fix", Fraction(1))  # of the frame-wise models
# Options of every model that produces feature vectors: --views, --pool, --l2_normalize, --dtype.
FEATURE_OPTIONS = frozenset({"views", "pool", "l2_normalize", "dtype"})


class BaseExtractor:
    """Turns one video into a dict of arrays: ``{main key: (N, ...), "fps": (), "timestamps_ms": (N,)}``.

    ``external_call=True`` is for use from Python: the library prints nothing of its own (no progress bar for
    a download); ``extract`` returns the arrays in every case.
    """

    key: str = "features"  # the output key of the features
    reads: frozenset[str] = frozenset()  # the options this model reads, beyond those of every run
    option_aliases: Mapping[str, str] = {}  # former spelling -> option
    writes_flow: bool = False  # its output is optical flow (the flow image modes are for it)
    input_extensions: frozenset[str] = VIDEO_EXTENSIONS  # the files --video_dir takes
    crops_inside_forward: bool = False  # inputs are whole frames; ``forward`` returns (B * crops, ...) rows

    def __init__(self, config: RunConfig | Mapping[str, Any], external_call: bool = False):
        self.config = resolve_config(config)
        self.feature_type: str = self.config.feature_type
        spec = feature_type(self.feature_type)
        if type(self) is not spec.extractor:
            raise UsageError(f"{self.feature_type} is extracted by {spec.extractor.__name__}, not {type(self).__name__}")
        self.weights: Weights | None = spec.weights_for(self.config)
        self.external_call = external_call
        self.output_keys = [*self.feature_keys(self.config), "fps", "timestamps_ms"]
        self.main_key = self.output_keys[0]
        self.device = select_device(self.config)
        model, self.transform = self.load_model()
        self.model = model.to(self.device).eval()

    @classmethod
    def feature_keys(cls, config: RunConfig) -> list[str]:
        """The keys of the features a run writes, the main one first (known before any model is loaded)."""
        return [cls.key]

    @classmethod
    def option_defaults(cls, config: RunConfig, weights: Weights | None) -> dict[str, Any]:
        """Values this model gives the options left unset: the name of the weights it loads, and more in
        subclasses (window sizes, frame rate)."""
        return {"weights": weights.name} if weights is not None and "weights" in cls.reads else {}

    @classmethod
    def validate(cls, config: RunConfig, weights: Weights | None) -> None:
        """Refuse combinations of options this model cannot run, before any checkpoint or video is touched.
        Options it does not read at all are refused before this, from ``reads``."""

    @classmethod
    def sampling_rule(cls, config: RunConfig) -> str:
        """Which inputs a run takes, in words, for the manifest."""
        raise NotImplementedError

    @classmethod
    def checkpoints(cls, config: RunConfig) -> list[tuple[Weights, str | None, str]]:
        """The published checkpoints a run loads, each with the local file given instead (or None) and the
        option that gives it; by default the entry of ``--weights`` and ``--checkpoint``."""
        weights = feature_type(config.feature_type).weights_for(config)
        return [(weights, config.checkpoint, "checkpoint")] if weights is not None else []

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
            weights, local = self.weights, self.config.checkpoint
        return checkpoint_path(weights, local, option, self.config.weights_dir, progress=not self.external_call)

    @property
    def inputs_per_batch(self) -> int:
        return self.config.batch_size

    def load_model(self) -> tuple[torch.nn.Module, FramePreprocessing | None]:
        """The network with its weights, and the preprocessing of one frame (None: ``preprocess`` is overridden)."""
        raise NotImplementedError

    def preprocess(self, rgb: np.ndarray) -> torch.Tensor:
        """One (H, W, 3) uint8 RGB frame -> one model input, on the CPU, with ``--crops``."""
        return self.transform(rgb, self.config.crops)

    def forward(self, batch: Batch) -> torch.Tensor | dict[str, torch.Tensor]:
        """A batch of inputs, on ``self.device`` -> (B, ...) outputs of the main key, or a dict of them."""
        raise NotImplementedError

    def open_reader(self, path: str | os.PathLike) -> VideoReader | FrameFolderReader:
        """What ``model_inputs`` reads a file with: its video stream (audio models read its audio); a folder of
        frames with ``--frames_dir``."""
        if self.config.frames_dir:
            return FrameFolderReader(path, self.config.frames_fps)
        return VideoReader(path)

    def model_inputs(self, video: VideoReader) -> Iterator[tuple[torch.Tensor | dict[str, torch.Tensor], float]]:
        """Inputs (a tensor, or a dict of tensors) with their timestamps (ms), in time order."""
        raise NotImplementedError

    def show_predictions(self, outputs: Mapping[str, np.ndarray], timestamps_ms: Sequence[float]) -> None:
        """``--show_pred``: print what the model recognises in one batch (models that read ``show_pred``)."""
        raise NotImplementedError

    def extract(self, video_path: str | os.PathLike) -> dict[str, np.ndarray]:
        """Features of one video. Raises :class:`VideoError` for a video that cannot be processed."""
        for _, outcome in self.extract_many([video_path]):
            if isinstance(outcome, Exception):
                raise outcome
            return outcome
        raise VideoError("no frames were sampled")

    @torch.inference_mode()
    def extract_many(self, videos: Iterable[V], path_of: Callable[[V], str | os.PathLike] = lambda v: v,
                     sink_of: Callable[[V], Sink] = lambda v: MemorySink(), on_progress: OnProgress | None = None,
                     on_facts: Callable[[V, dict[str, Any]], None] | None = None,
                     ) -> Iterator[tuple[V, dict[str, np.ndarray] | Exception]]:
        """Each video with what its sink's ``close`` returned, or the exception that failed it, in order.

        A thread decodes ahead (``extractors/prefetch.py``) and consumes ``videos`` one video ahead of the
        model. Each batch's outputs go to the video's sink (``sink_of(video)``, by default kept in memory) as
        soon as they are computed, and ``on_progress(video, seconds done, seconds in all)`` follows them.
        ``on_facts(video, facts)`` receives what the reader knows of a video's stream once it is read.
        """
        prefetch = Prefetcher(self.model_inputs, self.inputs_per_batch, videos, path_of, self.open_reader)
        config = self.config
        finish = FinishingSink.wrapper(config.pool, config.l2_normalize, config.dtype, config.crops)
        sink: Sink | None = None
        failed: Exception | None = None
        duration_s = 0.0
        try:
            for kind, video, payload in prefetch:
                if kind == "start":
                    duration_s = payload
                    continue
                if kind == "batch":
                    if failed is None:
                        try:
                            sink = sink or finish(sink_of(video))
                            sink.add(*self._run_batch(*payload))
                            if on_progress is not None:
                                on_progress(video, payload[1][-1] / 1000, duration_s)
                        except Exception as error:  # out of memory, a full disk...: this video only
                            failed = error
                    continue
                outcome = payload if kind == "error" else failed
                if outcome is None:
                    if on_facts is not None:
                        on_facts(video, payload)
                    try:
                        sink = sink or finish(sink_of(video))
                        outcome, sink = sink.close(payload["fps"]), None
                    except Exception as error:
                        outcome = error
                if sink is not None:
                    sink.abort()
                sink, failed = None, None
                yield video, outcome
        finally:
            if sink is not None:
                sink.abort()
            prefetch.close()

    def _run_batch(self, inputs: Batch, timestamps_ms: list[float]) -> tuple[dict[str, np.ndarray], list[float]]:
        crops = self.config.crops
        if crops > 1 and not self.crops_inside_forward:  # (B, crops, ...): the crops are more inputs
            inputs = inputs.flatten(0, 1)
        outputs = self.forward(to_device(inputs, self.device))
        if isinstance(outputs, torch.Tensor):
            outputs = {self.main_key: outputs}
        arrays = {key: value.float().cpu().numpy() for key, value in outputs.items()}
        if self.config.show_pred:
            self.show_predictions(arrays, [time for time in timestamps_ms for _ in range(crops)])
        if crops > 1:
            arrays = {key: value.reshape(len(timestamps_ms), crops, *value.shape[1:]) for key, value in arrays.items()}
        return arrays, timestamps_ms


class FrameWiseExtractor(BaseExtractor):
    """Models that take single frames, sampled with ``--extract_method`` (``uni_N``, ``fix_F`` or ``all``);
    ``--views N`` is ``uni_N``."""

    reads = FEATURE_OPTIONS | {"extract_method", "batch_size"}

    @classmethod
    def option_defaults(cls, config: RunConfig, weights: Weights | None) -> dict[str, Any]:
        """One frame per second, unless ``--views`` samples."""
        defaults = super().option_defaults(config, weights)
        if config.extract_method is None and not config.views:
            defaults["extract_method"] = DEFAULT_SAMPLING
        return defaults

    @classmethod
    def validate(cls, config: RunConfig, weights: Weights | None) -> None:
        super().validate(config, weights)
        if config.views and config.extract_method is not None:
            raise UsageError("--views N takes N frames spread over the video: give it or --extract_method, not both")

    @classmethod
    def sampling_rule(cls, config: RunConfig) -> str:
        return f"frames on screen at the times of {config.sampling()} (presentation timestamps)"

    def model_inputs(self, video: VideoReader) -> Iterator[tuple[torch.Tensor, float]]:
        method = self.config.sampling()
        if method.kind == "all":
            frames = video.read_all()
        else:
            targets = method.target_pts(video.start_pts, video.end_pts, video.time_base)
            if method.kind == "uni" and len(targets) > video.num_frames:
                raise VideoError(f"too short: {video.num_frames} frames, fewer than the {len(targets)} that "
                                 f"{method} asks for")
            frames = video.read_at(targets)
        for frame in frames:
            yield self.preprocess(frame.rgb), frame.time_ms
