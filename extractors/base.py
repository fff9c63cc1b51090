"""The shared extraction engine: decode -> preprocess -> batch -> model -> sink.

A family's extractor class says which options it reads (``options``), how to load its model (``load_model``),
which inputs a video gives (``model_inputs``, usually through ``preprocess``) and how to run a batch
(``forward``). The class attributes and class methods (``key``, ``options``, ``feature_keys``,
``option_defaults``, ``validate``, ``sampling_rule``, ``checkpoints``) are the family's static description, which
the configuration reads before anything runs (``extractors/registry.py``). The engine owns decoding, batching,
device placement, the dtype of the results and where they go, so every model gets the same guarantees. Inputs
come as single sampled frames (:class:`FrameWiseExtractor`), consecutive frame pairs (flow,
``extractors/models/optical_flow.py``) or windows of frames (``extractors/windows.py``).
"""
from __future__ import annotations

import abc
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence, TypeVar

import numpy as np
import torch

from extractors.config import RunConfig, output_layout, resolve_config
from extractors.devices import default_device
from extractors.options import Option, Section, positive_int
from extractors.predictions import SHOW_PRED
from extractors.prefetch import Batch, Prefetcher, batches, pinned, to_device
from extractors.registry import ModelDocs, feature_type
from extractors.transforms import CROPS, PREPROCESS_ON_DEVICE, FramePreprocessing
from extractors.weights import Weights
from io_utils.activity import ACTIVITY, MODEL
from io_utils.checkpoints import checkpoint_path
from io_utils.errors import UsageError, VideoError
from io_utils.frames import FrameFolderReader
from io_utils.limits import InputLimits
from io_utils.outputs import FinishingSink, MemorySink, OutputLayout, Sink, open_sink
from io_utils.readers import FrameReader, Reader
from io_utils.sampling import SamplingMethod, parse_extract_method
from io_utils.sources import Source, as_source
from io_utils.video import Frame, VideoReader
from io_utils.video_list import VIDEO_EXTENSIONS, VideoJob, output_stem

V = TypeVar("V")
OnProgress = Callable[[Any, float, float], None]  # (video, seconds done, seconds in all)
DEFAULT_SAMPLING = SamplingMethod("fix", Fraction(1))  # of the frame-wise models
_MILLISECOND = Fraction(1, 1000)  # the time base of the inputs' times

# Options of every model whose outputs are feature vectors.
VIEWS = Option("views", None, "N inputs spread uniformly over the whole video (N frames, windows or clips), instead "
               "of --extract_method or --step_size (default: the model's; see --list_models)", 2,
               convert=positive_int, metavar="N", section=Section.SAMPLING)
POOL = Option("pool", None, "mean: save one vector per video, the mean over every frame, window or clip (and crop); "
              "none: one per frame, window or clip (default: the model's, none for most; see --list_models)",
              "mean", choices=("mean", "none"), section=Section.OUTPUTS)
L2_NORMALIZE = Option("l2_normalize", False, "scale every saved vector to unit L2 norm", True,
                      section=Section.OUTPUTS)
DTYPE = Option("dtype", "float32", "of the saved features", "float16", choices=("float32", "float16"),
               section=Section.OUTPUTS)
FEATURE_OPTIONS = (VIEWS, POOL, L2_NORMALIZE, DTYPE)
# The published weights of a feature type (``--help`` lists every type's) and a local file instead.
WEIGHTS = Option("weights", None, "which published weights", "IMAGENET1K_V2", metavar="NAME")
CHECKPOINT = Option("checkpoint", None, "a local checkpoint in the official format, instead of the published one",
                    "x.pt", metavar="PATH")
# Families that run any model of a library name it (timm's, open_clip's).
MODEL_NAME = Option("model_name", None, "the model: for timm, with its pretrained tag if it has several (e.g. "
                    "vit_base_patch16_224.augreg2_in21k_ft_in1k); for open_clip, its name (ViT-B-16-SigLIP2) or a "
                    "local-dir:FOLDER / hf-hub:ORG/REPO in open_clip's hub format; for transformers, a hub repository "
                    "(ORG/NAME) or a local folder in the hub's format", "resnet50.a1_in1k",
                    metavar="NAME", required=True)
BATCH_SIZE = Option("batch_size", 32, "inputs (frames, clips, audio examples) per forward pass", 4,
                    convert=positive_int, section=Section.SAMPLING, changes_features=False)
EXTRACT_METHOD = Option("extract_method", None, "uni_N: N evenly spaced frames; fix_F: F frames per second; all: "
                        "every frame (default: the model's; see --list_models)", "uni_3",
                        convert=parse_extract_method, metavar="METHOD", section=Section.SAMPLING)


@dataclass(frozen=True)
class WeightsFile:
    """A file of weights a run loads: where it is, where it was published, and the preprocessing it goes with
    (None where the model's library gives it only once the model is built)."""

    path: Path
    source: str
    preprocessing: str | None = None


def sampling(config: RunConfig) -> SamplingMethod | None:
    """Which frames to take: ``--views N`` is ``uni_N``, else ``--extract_method`` (None: the model's own)."""
    return SamplingMethod("uni", Fraction(config[VIEWS])) if config[VIEWS] else config[EXTRACT_METHOD]


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


def run_feeds(prefetch: Prefetcher, feeds: Sequence[ModelFeed],
              ended: Callable[[Any, Any, Exception | None], Any], on_progress: OnProgress | None = None
              ) -> Iterator[tuple[Any, Any]]:
    """The engine's one loop, decode -> batch -> model -> sink, for one feature type or several from one decode:
    the decoding thread's events (``prefetch``, whose batches are tagged with the index of their feed, or carry
    the exception that failed that feed) go to their :class:`ModelFeed`; at each video's end (or failure)
    ``ended(video, the reader's facts or None, the error or None)`` gives what is yielded with the video."""
    duration_s = 0.0
    try:
        for kind, video, payload in prefetch:
            if kind == "start":
                duration_s = payload
                for feed in feeds:
                    feed.start()
            elif kind == "batch":
                (index, inputs), times = payload
                if isinstance(inputs, Exception):
                    feeds[index].fail(inputs)
                elif feeds[index].run(video, inputs, times) and on_progress is not None:
                    on_progress(video, times[-1] / 1000, duration_s)
            else:
                yield video, ended(video, payload if kind == "end" else None, payload if kind == "error" else None)
    finally:
        for feed in feeds:
            feed.abort()
        prefetch.close()


def _length(inputs: Batch) -> int:
    return len(next(iter(inputs.values()))) if isinstance(inputs, dict) else len(inputs)


def _split(inputs: Batch, size: int) -> list[Batch]:
    """``inputs`` in consecutive parts of ``size`` inputs (the last one shorter)."""
    if isinstance(inputs, dict):
        pieces = {key: value.split(size) for key, value in inputs.items()}
        return [{key: pieces[key][index] for key in pieces} for index in range(len(next(iter(pieces.values()))))]
    return list(inputs.split(size))


class ModelFeed:
    """The consumer's side of the engine for one extractor: a video's batches through its model into the video's
    sink, and the video's outcome. A batch that fails (out of memory, a full disk...) fails this video only; the
    video's later batches are then not run."""

    def __init__(self, extractor: BaseExtractor, sink_of: Callable[[Any], Sink]):
        self._extractor, self._sink_of = extractor, sink_of
        config = extractor.config
        self._finish = FinishingSink.wrapper(config[POOL], config[L2_NORMALIZE], config[DTYPE],
                                             config[CROPS])
        self._sink: Sink | None = None
        self.failed: Exception | None = None

    def start(self) -> None:
        """A new video: it starts from ``--batch_size`` again."""
        self._sink, self.failed = None, None
        self._extractor.reset_batch_size()

    def run(self, video, inputs: Batch, timestamps_ms: list[float]) -> bool:
        """One batch of ``video`` through the model and into its sink; False if the video has failed."""
        if self.failed is not None:
            return False
        ACTIVITY.begin(MODEL, video, "running the model", round(timestamps_ms[0]), _MILLISECOND)
        try:
            self._sink = self._sink or self._finish(self._sink_of(video))
            self._sink.add(*self._extractor._run_batch(inputs, timestamps_ms))
        except Exception as error:  # out of memory, a full disk...: this video only
            self.failed = error
        ACTIVITY.waiting(MODEL)
        return self.failed is None

    def fail(self, error: Exception) -> None:
        """The video cannot give this model its inputs (``error`` says why)."""
        self.failed = self.failed or error

    def end(self, video, facts: dict[str, Any] | None, error: Exception | None) -> dict[str, np.ndarray] | Exception:
        """What the sink of a video read whole (``facts``: the reader's) returns, or why the video failed."""
        outcome = error or self.failed
        if outcome is None:
            ACTIVITY.begin(MODEL, video, "writing the outputs")
            try:
                self._sink = self._sink or self._finish(self._sink_of(video))
                outcome, self._sink = self._sink.close(facts["fps"]), None
            except Exception as failure:
                outcome = failure
            ACTIVITY.waiting(MODEL)
        self.abort()
        self.failed = None
        return outcome

    def abort(self) -> None:
        """Remove what the current video's sink has written so far."""
        if self._sink is not None:
            self._sink.abort()
            self._sink = None


class FrameWiseExtractor(BaseExtractor):
    """Models that take single frames, sampled with ``--extract_method`` (``uni_N``, ``fix_F`` or ``all``);
    ``--views N`` is ``uni_N``. With ``--preprocess_on_device`` (for the families whose preprocessing is a
    :class:`FramePreprocessing`, which declare it) their inputs are the decoded frames themselves, preprocessed in
    batches on the model's device (see ``_prepared``)."""

    options = (EXTRACT_METHOD, BATCH_SIZE, *FEATURE_OPTIONS)

    @classmethod
    def option_defaults(cls, config: RunConfig, weights: Weights | None) -> dict[str, Any]:
        """One frame per second, unless ``--views`` samples."""
        defaults = super().option_defaults(config, weights)
        if config[EXTRACT_METHOD] is None and not config[VIEWS]:
            defaults["extract_method"] = DEFAULT_SAMPLING
        return defaults

    @classmethod
    def validate(cls, config: RunConfig, weights: Weights | None) -> None:
        super().validate(config, weights)
        if config[VIEWS] and config[EXTRACT_METHOD] is not None:
            raise UsageError("--views N takes N frames spread over the video: give it or --extract_method, not both")

    @classmethod
    def sampling_rule(cls, config: RunConfig) -> str:
        return f"frames on screen at the times of {sampling(config)} (presentation timestamps)"

    def model_inputs(self, video: FrameReader, job: VideoJob) -> Iterator[tuple[torch.Tensor, float]]:
        for frame in sampled_frames(video, self.config):
            yield (torch.from_numpy(frame.rgb) if self._on_device else self.preprocess(frame.rgb)), frame.time_ms


def sampled_frames(video: FrameReader, config: RunConfig) -> Iterator[Frame]:
    """The frames ``--extract_method`` (or ``--views``) takes, in time order: what frame-wise models read."""
    method = sampling(config)
    if method.kind == "all":
        return video.read_all()
    targets = method.target_pts(video.start_pts, video.end_pts, video.time_base)
    if method.kind == "uni" and len(targets) > video.num_frames:
        counted = f"{video.num_frames} frame" + ("s" * (video.num_frames != 1))
        raise VideoError(f"too short: {counted}, fewer than the {len(targets)} that {method} asks for")
    return video.read_at(targets)
