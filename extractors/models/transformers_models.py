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

import inspect
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from extractors.base import BaseExtractor
from extractors.engine_options import (BATCH_SIZE, CHECKPOINT, DEFAULT_SAMPLING, EXTRACT_METHOD, MODEL_NAME, VIEWS,
                                       WEIGHTS)
from extractors.frame_wise import FrameWiseExtractor, sampled_frames
from extractors.models.audio_examples import TIMESTAMPS_FROM, AudioExampleExtractor, examples_rule
from extractors.models.hub_repository import (PROCESSOR_FILES, HubRepositoryWeights, Repository, load_network,
                                             located_if_found, quiet, read_processor)
from extractors.options import Option
from extractors.registry import FeatureType, ModelDocs, register
from extractors.weights import Meta
from extractors.windows import EXTRACTION_FPS, PAD_LAST, STACK_SIZE, STEP_SIZE, WINDOW_OPTIONS, WindowExtractor
from io_utils.errors import UsageError
from io_utils.hub import snapshot_folder
from io_utils.readers import Reader
from io_utils.video_list import VideoJob

EMBEDDING = Option("embedding", "default", "default: the model's documented embedding (get_video_features, "
                   "get_image_features or get_audio_features, else the pooler output, else the mean of the last hidden "
                   "state); pooled: the pooler output; cls: the first token; token_mean: the mean of the tokens; "
                   "tokens: every token", "token_mean", choices=("default", "pooled", "cls", "token_mean", "tokens"))
MODALITY = Option("modality", None, "what a model of several modalities embeds (Perception Encoder audio-video: "
                  "video or audio; default: video)", "audio", choices=("video", "image", "audio"))
EXAMPLE_SECONDS = 10  # the example of audio models that take any length
_WINDOW_ONLY = (EXTRACTION_FPS, STACK_SIZE, STEP_SIZE, PAD_LAST)
_NOT_READ = {"video": (EXTRACT_METHOD, TIMESTAMPS_FROM), "image": (*_WINDOW_ONLY, TIMESTAMPS_FROM),
             "audio": _WINDOW_ONLY}


def repository_if_found(config) -> Repository | None:
    """The repository of a run where it is local or downloadable now (see :func:`located_if_found`); a
    ``--modality`` it does not embed is refused here, before any run."""
    found = located_if_found(config)
    if found is not None:
        modality_of(found, config[MODALITY])
    return found


def modality_of(found: Repository, chosen: str | None) -> str:
    """What the run embeds: ``--modality`` among the repository's modalities, else its main one."""
    modalities = _modalities(found)
    if chosen is not None and chosen not in modalities:
        raise UsageError(f"--modality {chosen}: {found.repo_id or found.folder} embeds {' and '.join(modalities)}")
    return chosen or modalities[0]


def _modalities(found: Repository) -> list[str]:
    """What the repository embeds, its main modality first. Video: a frame count in the configuration, a video
    processor or a video embedding; audio: a feature extractor (a sampling rate) or audio inputs; image: an
    image processor of a model that is not a video model."""
    architecture = found.architecture
    found_modalities = []
    if (frames_of(found) or "video_preprocessor_config.json" in found.processors
            or _has_embedding(found, "video")):
        found_modalities.append("video")
    if any("sampling_rate" in processor for processor in found.processors.values()) or (
            _has_embedding(found, "audio") or architecture.main_input_name in ("input_values", "input_features")):
        found_modalities.append("audio")
    return found_modalities or ["image"]


def _has_embedding(found: Repository, modality: str) -> bool:
    """Whether the model has a documented embedding of ``modality`` (it has more than one tower)."""
    return (found.model_type, modality) in _EMBEDDINGS_MISSING or any(
        hasattr(found.architecture, f"get_{modality}_{kind}") for kind in ("features", "embeds"))


def frames_of(found: Repository) -> int | None:
    """Frames per input: ``num_frames`` of the configuration or of its vision part, else the video processor's."""
    values = found.values
    video_processor = found.processors.get("video_preprocessor_config.json", {})
    for part in (values, values.get("vision_config") or {}, values.get("video_config") or {}, video_processor):
        if isinstance(part.get("num_frames"), int):
            return part["num_frames"]
    return None


def load_processor(found: Repository, modality: str) -> Any:
    """The repository's processor for ``modality``, as transformers' Auto classes read it: the class its file
    names. A video model whose file is an image processor's (VideoMAE's, ViViT's, X-CLIP's) keeps it, though
    transformers would map the file onto a video processor: ViViT's gives other values (1.6e-2 apart on a
    range of 2 in transformers 5.23), and the model cards run the image processor."""
    if modality == "audio":
        return read_processor(found.folder, "AutoFeatureExtractor")
    if modality == "video" and "video_preprocessor_config.json" in found.processors:
        return read_processor(found.folder, "AutoVideoProcessor")
    return read_processor(found.folder, "AutoImageProcessor")


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


class ExtractTransformers(HubRepositoryWeights, WindowExtractor, AudioExampleExtractor):
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
        modality = modality_of(found, config[MODALITY]) if found else cls.entry_modality
        if modality is None:
            return defaults
        if modality == "image":
            unset = config[EXTRACT_METHOD] is None and not config[VIEWS]
            return {**defaults, "extract_method": DEFAULT_SAMPLING} if unset else defaults
        if modality == "audio":
            return defaults
        meta = weights.meta if weights is not None else Meta()
        stack_size = config[STACK_SIZE] or (found and frames_of(found)) or meta.stack_size
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
        modality = modality_of(found, config[MODALITY])
        for option in _NOT_READ[modality]:  # (a named entry declares only its modality's)
            if config.model_options.get(option.name) not in (None, False):
                raise UsageError(f"--{option.name} is not read by {config.feature_type} for "
                                 f"{config[MODEL_NAME] or found.folder}, a {modality} model")
        if modality == "audio":
            AudioExampleExtractor.validate.__func__(cls, config, weights)
        choice = config[EMBEDDING]
        if choice not in ("default", "pooled") and _has_embedding(found, modality):
            raise UsageError(f"--embedding {choice}: {found.architecture.__name__} embeds {modality} with more than "
                             f"one tower; it gives default or pooled")

    @classmethod
    def sampling_rule(cls, config) -> str:
        found = repository_if_found(config)
        modality = modality_of(found, config[MODALITY]) if found else cls.entry_modality
        if modality == "video":
            return WindowExtractor.sampling_rule.__func__(cls, config)
        if modality == "image":
            return FrameWiseExtractor.sampling_rule.__func__(cls, config)
        if found is None:
            return ("by the repository's modality: video, windows of its frame count; image, frames as --extract_method "
                    "takes them (default fix_1); audio, examples of its feature extractor's length")
        processor = load_processor(found, "audio")
        seconds = example_samples(processor) / processor.sampling_rate
        return examples_rule(config, f"{seconds:g} s examples at {processor.sampling_rate} Hz", seconds)

    @classmethod
    def write_random(cls, config, folder: Path, seed: int = 0) -> list[Path]:
        """The repository of ``--model_name`` with random weights (``save_pretrained`` of its architecture built
        from its configuration) and its own processor files, in the hub cache layout under ``folder``; a named
        entry's as :class:`HubRepositoryWeights` writes it."""
        import transformers

        if config[MODEL_NAME] is None:
            return super().write_random(config, folder, seed)
        found = cls.repository(config)
        if found.repo_id is None:
            raise UsageError(f"--model_name {config[MODEL_NAME]}: a local folder; random weights are written for "
                             f"hub repositories (ORG/NAME)")
        torch.manual_seed(seed)
        destination = snapshot_folder(folder, found.repo_id)
        configuration = transformers.AutoConfig.from_pretrained(found.folder)
        with quiet():
            found.architecture(configuration).save_pretrained(destination)
        for name in PROCESSOR_FILES:
            if (found.folder / name).is_file():
                (destination / name).write_bytes((found.folder / name).read_bytes())
        return sorted(path for path in destination.iterdir() if path.is_file())

    def load_model(self) -> tuple[nn.Module, None]:
        found = self.repository(self.config)
        self.modality = modality_of(found, self.config[MODALITY])
        self.processor = load_processor(found, self.modality)
        network = load_network(found)
        self._embedding = _embedding_function(network, found, self.modality)
        if self._embedding is None or self._choice() not in ("default", "pooled"):
            self._embedding = None
            network = _encoder(network)
        if self.modality == "audio":
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


def _embedding_function(network: nn.Module, found: Repository, modality: str):
    """The model's documented embedding of the modality: ``get_<modality>_features`` (or ``_embeds``, Perception
    Encoder's name); None for a model of one tower."""
    if (found.model_type, modality) in _EMBEDDINGS_MISSING:
        return _EMBEDDINGS_MISSING[found.model_type, modality](network)
    for kind in ("features", "embeds"):
        function = getattr(network, f"get_{modality}_{kind}", None)
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


def _first(processed: Any) -> dict[str, torch.Tensor]:
    """One input's tensors from a processor's batch of one."""
    return {key: value[0] for key, value in processed.items() if isinstance(value, torch.Tensor)}


class TransformersEntry(ExtractTransformers):
    """A named entry on this path: a feature type whose repositories are a :class:`WeightsTable` (``--weights``
    chooses one), with the sampling of its model card (``Meta``: ``fps``, ``stack_size``; a frame count in the
    repository's configuration comes first) and, where it is documented so, its own ``default_embedding``. Its
    random weights are the network ``Weights.build`` makes, with the processor ``publishes_processor`` makes
    (:class:`~extractors.models.hub_repository.HubRepositoryWeights`)."""

    options = (*WINDOW_OPTIONS, BATCH_SIZE, WEIGHTS, CHECKPOINT, EMBEDDING)  # a video entry's (image or audio
    examples = {}  # entries would declare theirs)
    entry_modality = "video"


register(FeatureType("transformers", ExtractTransformers))

