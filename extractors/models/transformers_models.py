"""Any vision, video or audio encoder transformers knows, from its hub repository
(``--feature_type transformers --model_name REPO``): VideoPrism, Perception Encoder, X-CLIP, TimeSformer, ViViT,
DINOv3, SigLIP 2, AST, Whisper's encoder, Wav2Vec2, HuBERT, ...

Everything is asked of transformers, nothing is re-implemented:
- **Network.** The class that the repository's ``config.json`` names in ``architectures`` (else ``AutoModel``'s
  for its model type), loaded by its ``from_pretrained`` in float32 and refused unless every tensor of the file
  fits it and it leaves none at its initial value (strict). A repository whose code is not in the installed
  transformers (``auto_map``) is refused: ``trust_remote_code`` is never used.
- **Preprocessing.** The repository's own processor file, read by transformers' Auto classes:
  ``AutoVideoProcessor`` for a video processor's file (``video_preprocessor_config.json``), else
  ``AutoImageProcessor`` (for a video model, on the window's frames), ``AutoFeatureExtractor`` for audio. Files written by any transformers version load as transformers
  loads them.
- **What is fed.** Video models (a frame count in their configuration, or a video processor): windows of
  ``--stack_size`` frames (default: the configuration's ``num_frames``, else the video processor's) as the other
  window families take them. Image models: the frames of ``--extract_method`` (default ``fix_1``). Audio models:
  examples of the feature extractor's length (Whisper's ``n_samples``, AST's ``max_length`` frames of 10 ms;
  10 s for models that take any length) at its sampling rate, placed as the other audio families place theirs.
- **The feature** (``--embedding``). ``default``: the model's documented embedding: ``get_video_features``,
  ``get_image_features`` or ``get_audio_features`` where its class has one, else the pooler output, else the mean
  of the last hidden state. ``pooled``, ``cls``, ``token_mean`` and ``tokens`` (every token: one (tokens, D)
  array per input) choose another, for the encoders of one tower.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from extractors.base import BaseExtractor, WeightsFile
from extractors.engine_options import (BATCH_SIZE, CHECKPOINT, DEFAULT_SAMPLING, EXTRACT_METHOD, MODEL_NAME, VIEWS,
                                       WEIGHTS)
from extractors.frame_wise import FrameWiseExtractor, sampled_frames
from extractors.models.audio_examples import TIMESTAMPS_FROM, AudioExampleExtractor, examples_rule
from extractors.options import Option
from extractors.registry import FeatureType, ModelDocs, feature_type, register
from extractors.weights import Meta, Weights, random_constants
from extractors.windows import EXTRACTION_FPS, PAD_LAST, STACK_SIZE, STEP_SIZE, WINDOW_OPTIONS, WindowExtractor
from io_utils.errors import UsageError
from io_utils.hub import HUB, RepositoryUnavailable, hub_repository, hub_url, snapshot_folder
from io_utils.readers import Reader
from io_utils.video_list import VideoJob

EMBEDDING = Option("embedding", "default", "default: the model's documented embedding (get_video_features, "
                   "get_image_features or get_audio_features, else the pooler output, else the mean of the last hidden "
                   "state); pooled: the pooler output; cls: the first token; token_mean: the mean of the tokens; "
                   "tokens: every token", "token_mean", choices=("default", "pooled", "cls", "token_mean", "tokens"))
MODALITY = Option("modality", None, "what a model of several modalities embeds (Perception Encoder audio-video: "
                  "video or audio; default: video)", "audio", choices=("video", "image", "audio"))
PROCESSOR_FILES = ("video_preprocessor_config.json", "preprocessor_config.json", "processor_config.json")
EXAMPLE_SECONDS = 10  # the example of audio models that take any length
_WINDOW_ONLY = (EXTRACTION_FPS, STACK_SIZE, STEP_SIZE, PAD_LAST)
_NOT_READ = {"video": (EXTRACT_METHOD, TIMESTAMPS_FROM), "image": (*_WINDOW_ONLY, TIMESTAMPS_FROM),
             "audio": _WINDOW_ONLY}


@dataclass(frozen=True)
class Repository:
    """What a repository's files say before its network is built: enough to resolve a run's options."""

    folder: Path
    repo_id: str | None  # its hub id; None for a local folder
    model_type: str
    architecture: str  # the transformers class its weights were saved from
    modality: str  # video, image or audio
    frames: int | None  # frames per input of a video model, where its files say


def repository(config) -> Repository:
    """The repository of a run: ``--model_name``'s, or a named entry's ``--weights`` (``--checkpoint FOLDER`` in
    place of their files), downloaded if it is nowhere local."""
    checkpoint = config[CHECKPOINT]
    weights = feature_type(config.feature_type).weights_for(config)
    name = config[MODEL_NAME] or weights.url.removeprefix(f"{HUB}/")
    return _repository(checkpoint or name, config.weights_dir, bool(checkpoint), config[MODALITY])


def repository_if_found(config) -> Repository | None:
    """The repository of a run, or None where it is neither local nor downloadable now: the configuration is
    then resolved without the defaults that its files give (``--list_models``, the reference pages, a Python
    user's configuration), and the run stops in :meth:`ExtractTransformers.prepare` with the message that says
    where to put it."""
    try:
        return repository(config)
    except RepositoryUnavailable:
        return None


@functools.lru_cache(maxsize=8)
def _repository(name: str, weights_dir: str | None, local: bool, modality: str | None) -> Repository:
    what = f"transformers model {name}"
    folder = Path(name) if local else hub_repository(name, weights_dir, what)
    if not (folder / "config.json").is_file():
        raise UsageError(f"{what}: {folder} holds no config.json (a repository in the hub's format is needed)")
    values = _json(folder / "config.json")
    refuse_remote_code(values, folder)
    processors = {name: _json(folder / name) for name in PROCESSOR_FILES if (folder / name).is_file()}
    architecture = _architecture(values)
    modalities = _modalities(folder, values, processors, architecture)
    if modality is not None and modality not in modalities:
        raise UsageError(f"--modality {modality}: {name} embeds {' and '.join(modalities)}")
    modality = modality or modalities[0]
    video_processor = processors.get("video_preprocessor_config.json", {})
    repo_id = None if local or Path(name).is_dir() else name
    return Repository(folder, repo_id, values["model_type"], architecture.__name__, modality,
                      _frames(values, video_processor) if modality == "video" else None)


def refuse_remote_code(values: dict[str, Any], folder: Path) -> None:
    """A repository whose model or processor is code of its own (``auto_map``), or a model type the installed
    transformers does not have, is refused before anything of it is imported."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    processors = [name for name in PROCESSOR_FILES if "auto_map" in _json(folder / name, missing_ok=True)]
    if "auto_map" in values or processors or values.get("model_type") not in CONFIG_MAPPING_NAMES:
        what = (f"model type {values.get('model_type')!r} is not in the installed transformers"
                if values.get("model_type") not in CONFIG_MAPPING_NAMES else "its code is in the repository")
        raise UsageError(f"{folder}: {what}; it would need trust_remote_code, which this tool never uses (none of "
                         f"its code was imported)")


def _json(path: Path, missing_ok: bool = False) -> dict[str, Any]:
    if missing_ok and not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise UsageError(f"{path}: not a readable JSON file ({error})") from error


def _architecture(values: dict[str, Any]) -> type:
    """The class named first in ``architectures`` where transformers has it, else AutoModel's for the type."""
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    for name in values.get("architectures") or ():
        if hasattr(transformers, name):
            return getattr(transformers, name)
    name = MODEL_MAPPING_NAMES.get(values["model_type"])
    if name is None or not hasattr(transformers, name):
        raise UsageError(f"transformers has no model class for model type {values['model_type']!r}")
    return getattr(transformers, name)


def _modalities(folder: Path, values: dict, processors: dict[str, dict], architecture: type) -> list[str]:
    """What the repository embeds, its main modality first. Video: a frame count in the configuration, a video
    processor or a video embedding; audio: a feature extractor (a sampling rate) or audio inputs; image: an
    image processor of a model that is not a video model."""
    found = []
    if _frames(values, {}) or "video_preprocessor_config.json" in processors or _has_embedding(architecture, "video"):
        found.append("video")
    if any("sampling_rate" in processor for processor in processors.values()) or (
            _has_embedding(architecture, "audio") or architecture.main_input_name in ("input_values", "input_features")):
        found.append("audio")
    if not found:
        found.append("image")
    return found


def _has_embedding(architecture: type, modality: str) -> bool:
    if architecture.__name__ in ("PeVideoModel", "PeAudioVideoModel") and modality == "video":
        return True  # see _pe_video_embeds
    return any(hasattr(architecture, f"get_{modality}_{kind}") for kind in ("features", "embeds"))


def _frames(values: dict, processor: dict) -> int | None:
    """Frames per input: ``num_frames`` of the configuration or of its vision part, else the processor's."""
    for part in (values, values.get("vision_config") or {}, values.get("video_config") or {}, processor):
        if isinstance(part.get("num_frames"), int):
            return part["num_frames"]
    return None


@contextlib.contextmanager
def _quiet():
    """transformers' own progress bars and loading reports off: the tool says what matters in its own words."""
    from transformers.utils import logging

    level, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(level)
        if bars:
            logging.enable_progress_bar()


def load_network(folder: Path, architecture: str) -> nn.Module:
    """The repository's network in float32, refused unless its file fits the class exactly."""
    import transformers

    try:
        with _quiet():
            network, info = getattr(transformers, architecture).from_pretrained(
                folder, dtype=torch.float32, output_loading_info=True, trust_remote_code=False)
    except Exception as error:  # transformers' loaders raise many types, its own defects included
        reason = " ".join(f"{type(error).__name__}: {error}".split())[:300]
        raise UsageError(f"{folder}: transformers {transformers.__version__} cannot load it as {architecture} "
                         f"({reason})") from error
    problems = {kind: info.get(kind) for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")
                if info.get(kind)}
    if problems:
        said = "; ".join(f"{kind.replace('_', ' ')}: {', '.join(map(str, sorted(keys)[:5]))}"
                         f"{' ...' if len(keys) > 5 else ''}" for kind, keys in problems.items())
        raise UsageError(f"{folder}: its weights do not fit the {architecture} its config.json describes ({said})")
    return network.eval()


def load_processor(folder: Path, modality: str) -> Any:
    """The repository's processor for ``modality``, as transformers' Auto classes read it: the class its file
    names. A video model whose file is an image processor's (VideoMAE's, ViViT's, X-CLIP's) keeps it, though
    transformers would map the file onto a video processor: ViViT's gives other values (1.6e-2 apart on a
    range of 2 in transformers 5.23), and the model cards run the image processor."""
    import transformers

    with _quiet():
        if modality == "audio":
            return transformers.AutoFeatureExtractor.from_pretrained(folder)
        if modality == "video" and (folder / "video_preprocessor_config.json").is_file():
            return transformers.AutoVideoProcessor.from_pretrained(folder)
        return transformers.AutoImageProcessor.from_pretrained(folder)


def example_samples(processor: Any) -> int:
    """Samples per audio example: what the feature extractor fills (Whisper's ``n_samples``; AST's
    ``max_length`` frames of 10 ms with a 25 ms window), else :data:`EXAMPLE_SECONDS`."""
    rate = processor.sampling_rate
    if getattr(processor, "n_samples", None):
        return int(processor.n_samples)
    if getattr(processor, "max_length", None):
        return (processor.max_length - 1) * rate // 100 + rate * 25 // 1000
    return EXAMPLE_SECONDS * rate


def _arguments(inputs: dict[str, torch.Tensor], function) -> dict[str, torch.Tensor]:
    """The inputs under the names ``function`` takes (video processors say ``pixel_values_videos``, some video
    models ``pixel_values``)."""
    parameters = inspect.signature(function).parameters
    synonyms = {"pixel_values_videos": "pixel_values", "pixel_values": "pixel_values_videos"}
    given = {}
    for key, value in inputs.items():
        name = key if key in parameters else synonyms.get(key)
        if name in parameters:
            given[name] = value
    return given


class ExtractTransformers(WindowExtractor, AudioExampleExtractor):
    """Features of any transformers encoder; the key is ``transformers``. Which inputs a run takes follows the
    repository's modality: windows (:class:`WindowExtractor`), sampled frames (as :class:`FrameWiseExtractor`)
    or audio examples (:class:`AudioExampleExtractor`); the options of the others are refused."""

    key = "transformers"
    docs = ModelDocs("transformers", "transformers.md", "any vision, video or audio encoder transformers knows "
                     "(`--model_name ORG/NAME`), with its own processor", "windows, frames or audio",
                     "`transformers`, the model's")
    default_embedding = "default"  # what --embedding default takes (a named entry may choose another)
    entry_modality: str | None = None  # a named entry's, known before its files are
    options = (*WINDOW_OPTIONS, EXTRACT_METHOD, BATCH_SIZE, TIMESTAMPS_FROM, MODEL_NAME, CHECKPOINT, EMBEDDING,
               MODALITY)
    examples = {"model_name": "facebook/dinov3-vits16-pretrain-lvd1689m"}

    @classmethod
    def option_defaults(cls, config, weights) -> dict[str, Any]:
        """Video: windows of the repository's frame count; image: one frame per second, as the frame-wise
        families; audio: the examples' default grid."""
        defaults = BaseExtractor.option_defaults.__func__(cls, config, weights)  # a named entry's --weights
        found = repository_if_found(config)
        modality = found.modality if found else cls.entry_modality
        if modality is None:
            return defaults
        if modality == "image":
            unset = config[EXTRACT_METHOD] is None and not config[VIEWS]
            return {**defaults, "extract_method": DEFAULT_SAMPLING} if unset else defaults
        if modality == "audio":
            return defaults
        meta = weights.meta if weights is not None else Meta()
        stack_size = config[STACK_SIZE] or (found and found.frames) or meta.stack_size
        if stack_size is None:
            raise UsageError(f"--model_name {config[MODEL_NAME]}: its files give no frame count per input; "
                             f"give --stack_size")
        return {**defaults, "stack_size": stack_size, "step_size": config[STEP_SIZE] or stack_size,
                "extraction_fps": config[EXTRACTION_FPS] or meta.fps}

    @classmethod
    def validate(cls, config, weights) -> None:
        if config[VIEWS] and config[EXTRACT_METHOD] is not None:
            raise UsageError("--views N takes N inputs spread over the video: give it or --extract_method, not both")
        found = repository_if_found(config)
        if found is None:
            return
        for option in _NOT_READ[found.modality]:  # (a named entry declares only its modality's)
            if config.model_options.get(option.name) not in (None, False):
                raise UsageError(f"--{option.name} is not read by {config.feature_type} for "
                                 f"{config[MODEL_NAME] or found.folder}, a {found.modality} model")
        if found.modality == "audio":
            AudioExampleExtractor.validate.__func__(cls, config, weights)
        choice = config[EMBEDDING]
        if choice not in ("default", "pooled") and _has_embedding(_class(found), found.modality):
            raise UsageError(f"--embedding {choice}: {found.architecture} embeds {found.modality} with more than "
                             f"one tower; it gives default or pooled")

    @classmethod
    def sampling_rule(cls, config) -> str:
        found = repository_if_found(config)
        modality = found.modality if found else cls.entry_modality
        if modality == "video":
            return WindowExtractor.sampling_rule.__func__(cls, config)
        if modality == "image":
            return FrameWiseExtractor.sampling_rule.__func__(cls, config)
        if found is None:
            return ("by the repository's modality: video, windows of its frame count; image, frames as --extract_method "
                    "takes them (default fix_1); audio, examples of its feature extractor's length")
        processor = load_processor(found.folder, "audio")
        seconds = example_samples(processor) / processor.sampling_rate
        return examples_rule(config, f"{seconds:g} s examples at {processor.sampling_rate} Hz", seconds)

    @classmethod
    def checkpoints(cls, config) -> list:
        return []  # a repository, found by ``repository``

    @classmethod
    def prepare(cls, config) -> None:
        repository(config)

    @classmethod
    def weights_files(cls, config) -> list[WeightsFile]:
        found = repository(config)
        return [WeightsFile(path, hub_url(found.repo_id, path.name) if found.repo_id else str(path))
                for path in sorted(found.folder.iterdir())
                if path.name == "config.json" or path.name in PROCESSOR_FILES or path.suffix in (".safetensors", ".bin")]

    @classmethod
    def write_random(cls, config, folder: Path, seed: int = 0) -> list[Path]:
        """The repository with random weights (``save_pretrained`` of its architecture built from its
        configuration) and its own processor files, in the hub cache layout under ``folder``."""
        import transformers

        found = repository(config)
        if found.repo_id is None:
            raise UsageError(f"--model_name {config[MODEL_NAME]}: a local folder; random weights are written for "
                             f"hub repositories (ORG/NAME)")
        torch.manual_seed(seed)
        destination = snapshot_folder(folder, found.repo_id)
        configuration = transformers.AutoConfig.from_pretrained(found.folder)
        with _quiet():
            getattr(transformers, found.architecture)(configuration).save_pretrained(destination)
        for name in PROCESSOR_FILES:
            if (found.folder / name).is_file():
                (destination / name).write_bytes((found.folder / name).read_bytes())
        return sorted(path for path in destination.iterdir() if path.is_file())

    def load_model(self) -> tuple[nn.Module, None]:
        found = repository(self.config)
        self.modality = found.modality
        self.processor = load_processor(found.folder, found.modality)
        network = load_network(found.folder, found.architecture)
        self._embedding = _embedding_function(network, found)
        if self._embedding is None or self._choice() not in ("default", "pooled"):
            self._embedding = None
            network = _encoder(network)
        if found.modality == "audio":
            self.sample_rate = self.processor.sampling_rate
            self.example_span = self.example_hop = example_samples(self.processor)
        return network, None

    def _choice(self) -> str:
        """``--embedding``, where ``default`` is a named entry's own choice."""
        choice = self.config[EMBEDDING]
        return self.default_embedding if choice == "default" else choice

    @property
    def inputs_per_batch(self) -> int:
        return self.config[BATCH_SIZE]

    def open_reader(self, path) -> Reader:
        if self.modality == "audio":
            return AudioExampleExtractor.open_reader(self, path)
        return BaseExtractor.open_reader(self, path)

    def model_inputs(self, video: Reader, job: VideoJob) -> Iterator[tuple[Any, float]]:
        if self.modality == "audio":
            return AudioExampleExtractor.model_inputs(self, video, job)
        if self.modality == "video":
            return WindowExtractor.model_inputs(self, video, job)
        return ((self.preprocess(frame.rgb), frame.time_ms) for frame in sampled_frames(video, self.config))

    def preprocess(self, rgb: np.ndarray) -> Any:
        """A video model's frames stay as decoded until their window is complete (its processor takes the window
        whole); an image model's frame goes through the image processor."""
        if self.modality == "video":
            return rgb
        return _first(self.processor(images=rgb, return_tensors="pt"))

    def window_input(self, indices: list[int], frames: list, inputs: list[np.ndarray]) -> dict[str, torch.Tensor]:
        """The window through the video processor (its own frame sampling off: the window is the sample), or
        through the image processor frame by frame for models that have no video processor."""
        from transformers.video_processing_utils import BaseVideoProcessor

        if isinstance(self.processor, BaseVideoProcessor):
            processed = self.processor(videos=[np.stack(inputs)], do_sample_frames=False, return_tensors="pt")
        else:
            processed = self.processor(images=list(inputs), return_tensors="pt")
        return {key: value[0] if value.dim() == 5 else value for key, value in processed.items()
                if isinstance(value, torch.Tensor)}

    def example_input(self, samples: np.ndarray, present: slice) -> dict[str, torch.Tensor]:
        """The example's samples (zeros outside the track, so every example has the same length) through the
        feature extractor."""
        return _first(self.processor(samples, sampling_rate=self.sample_rate, return_tensors="pt"))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self._embedding is not None:
            output = self._embedding(**_arguments(batch, self._embedding))
            return _one_vector(output if isinstance(output, torch.Tensor) else output.pooler_output)
        output = self.model(**_arguments(batch, self.model.forward))
        choice = self._choice()
        pooled = getattr(output, "pooler_output", None)
        if choice == "pooled" or (choice == "default" and pooled is not None):
            if pooled is None:
                raise UsageError(f"--embedding pooled: {type(self.model).__name__} has no pooler output")
            return _one_vector(pooled)
        hidden = output.last_hidden_state
        return {"cls": hidden[:, 0], "tokens": hidden}.get(choice, hidden.mean(dim=1))


def _encoder(network: nn.Module) -> nn.Module:
    """The network whose outputs are the hidden states: a network with a task head (transformers names those
    ``<Model>For<Task>``: a classifier, a decoder for generation, CTC) gives its base model, and an
    encoder-decoder (Whisper) its encoder."""
    base = network.base_model if "For" in type(network).__name__ else network
    return base.get_encoder() if getattr(base.config, "is_encoder_decoder", False) else base


def _embedding_function(network: nn.Module, found: Repository):
    """The model's documented embedding of the modality: ``get_<modality>_features`` (or ``_embeds``, Perception
    Encoder's name); None for a model of one tower."""
    if (found.model_type, found.modality) in _EMBEDDINGS_MISSING:
        return _EMBEDDINGS_MISSING[found.model_type, found.modality](network)
    for kind in ("features", "embeds"):
        function = getattr(network, f"get_{found.modality}_{kind}", None)
        if function is not None:
            return function
    return None


def _pe_video_embeds(network: nn.Module):
    """Perception Encoder's video embedding as its models' forward computes it (``video_embeds``): in
    transformers 5.23 ``PeVideoModel.get_video_features`` is defined inside ``__init__``, so the class lacks it,
    and ``PeAudioVideoModel.get_video_embeds`` calls a method its video model does not have."""
    video = getattr(network, "video_model", network)  # PeAudioVideoModel holds a PeVideoModel

    def video_embeds(pixel_values_videos: torch.Tensor, padding_mask_videos: torch.Tensor | None = None):
        encoded = video.video_encoder(pixel_values_videos=pixel_values_videos, padding_mask_videos=padding_mask_videos)
        return video.video_head(encoded.pooler_output)
    return video_embeds


# The documented embeddings that the installed transformers lacks, by model type and modality.
_EMBEDDINGS_MISSING = {("pe_video", "video"): _pe_video_embeds, ("pe_audio_video", "video"): _pe_video_embeds}


def _one_vector(pooled: torch.Tensor) -> torch.Tensor:
    """One vector per input: a pooler that keeps a token axis of one (VideoPrism's, (B, 1, D)) is squeezed, as
    the model's own similarity does."""
    return pooled.squeeze(1) if pooled.dim() == 3 and pooled.shape[1] == 1 else pooled


def _class(found: Repository) -> type:
    import transformers

    return getattr(transformers, found.architecture)


def _first(processed: Any) -> dict[str, torch.Tensor]:
    """One input's tensors from a processor's batch of one."""
    return {key: value[0] for key, value in processed.items() if isinstance(value, torch.Tensor)}


class TransformersEntry(ExtractTransformers):
    """A named entry on this path: a feature type whose repositories are a :class:`WeightsTable` (``--weights``
    chooses one), with the sampling of its model card (``Meta``: ``fps``, ``stack_size``; a frame count in the
    repository's configuration comes first) and, where it is documented so, its own ``default_embedding``. Its
    random weights are the network ``Weights.build`` makes, with the processor ``publishes_processor`` makes."""

    options = (*WINDOW_OPTIONS, BATCH_SIZE, WEIGHTS, CHECKPOINT, EMBEDDING)  # a video entry's (image or audio
    examples = {}  # entries would declare theirs)
    entry_modality = "video"
    publishes_processor: Callable[[], Any]

    @classmethod
    def write_random(cls, config, folder: Path, seed: int = 0) -> list[Path]:
        """The repository of ``--weights`` with random weights, in the hub cache layout under ``folder``:
        ``save_pretrained`` of the network and of the processor its publisher writes."""
        weights = feature_type(config.feature_type).weights_for(config)
        torch.manual_seed(seed)
        destination = snapshot_folder(folder, weights.url.removeprefix(f"{HUB}/"))
        with _quiet():
            random_constants(weights.build()).save_pretrained(destination)
            cls.publishes_processor().save_pretrained(destination)
        return sorted(path for path in destination.iterdir() if path.is_file())


def hub_entry(name: str, repository: str, build: Callable[[], nn.Module], **meta: Any) -> Weights:
    """A hub repository of a named entry (``build``: its network, with random weights)."""
    return Weights(name, f"{HUB}/{repository}", None, build, meta=Meta(**meta))


register(FeatureType("transformers", ExtractTransformers))

