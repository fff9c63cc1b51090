"""What the video families whose weights are transformers hub repositories share (videomae, vjepa2).

A published repository holds ``config.json`` (the network), the weights (safetensors, or a pickled state dict in
older ones) and the processor configuration (the preprocessing). The three are found together: in the
``--checkpoint`` folder (the hub's format), else in ``--weights_dir`` or the hub cache, else downloaded
(:mod:`io_utils.hub`). The network is built from ``config.json`` by the family and the weights load with
``strict=True``, so a file whose tensors do not fit is refused instead of silently left at initial values.
"""
from __future__ import annotations

import abc
from pathlib import Path
from typing import Any

from torch import nn
from torchvision.transforms import InterpolationMode

from extractors.base import WeightsFile
from extractors.engine_options import CHECKPOINT, WEIGHTS
from extractors.predictions import SHOW_PRED
from extractors.registry import feature_type
from extractors.transforms import FramePreprocessing
from extractors.video_classifier import VideoClassifierExtractor
from extractors.weights import Weights
from io_utils.errors import UsageError
from io_utils.hub import HUB, hub_file, hub_url

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# PIL's resampling codes, as processor configurations store them.
_RESAMPLE = {0: InterpolationMode.NEAREST, 2: InterpolationMode.BILINEAR, 3: InterpolationMode.BICUBIC}


def repo_id(weights: Weights) -> str:
    """The hub repository (``ORG/NAME``) of an entry, whose URL is the repository's page."""
    return weights.url.removeprefix(f"{HUB}/")


class HubVideoExtractor(VideoClassifierExtractor):
    """A window model whose weights are a transformers hub repository. A family names its processor file(s)
    and says how to build its network from the repository's files (:meth:`build`) and how to write a random
    one (:meth:`write_random_repository`)."""

    options = (*VideoClassifierExtractor.options, WEIGHTS)
    display_name = ""  # the model's name in messages: "VideoMAE"
    processor_files: tuple[str, ...] = ("preprocessor_config.json",)

    @classmethod
    def checkpoints(cls, config) -> list:
        return []  # hub repositories, found by ``repository_files``

    @classmethod
    def prepare(cls, config) -> None:
        cls.repository_files(cls._weights(config), config[CHECKPOINT], config.weights_dir)

    @classmethod
    def weights_files(cls, config) -> list[WeightsFile]:
        weights = cls._weights(config)
        files = cls.repository_files(weights, config[CHECKPOINT], config.weights_dir, progress=False)
        return [WeightsFile(path, str(path) if config[CHECKPOINT] else hub_url(repo_id(weights), path.name))
                for path in files.values()]

    @classmethod
    def write_random(cls, config, folder: Path, seed: int = 0) -> list[Path]:
        return cls.write_random_repository(cls._weights(config), folder, seed)

    @classmethod
    @abc.abstractmethod
    def write_random_repository(cls, weights: Weights, cache: Path, seed: int) -> list[Path]:
        """The repository of ``weights`` with random weights, in the hub cache layout under ``cache``."""

    @staticmethod
    def _weights(config) -> Weights:
        return feature_type(config.feature_type).weights_for(config)

    def checked_for_show_pred(self, model: nn.ModuleDict, weights_file: Path) -> nn.ModuleDict:
        """``model``, refused for ``--show_pred`` when its file holds no classifier (a ``--checkpoint`` folder of a
        pre-trained model given with the name of a classifier's weights)."""
        if self.config[SHOW_PRED] and "head" not in model:
            raise UsageError(f"--show_pred: {weights_file} holds no classifier")
        return model

    @classmethod
    def repository_files(cls, weights: Weights, checkpoint: str | None, weights_dir: str | None,
                         progress: bool = True) -> dict[str, Path]:
        """The configuration, weights and processor configuration: from the ``--checkpoint`` folder (the hub's
        format), else the repository's files found locally or downloaded."""
        if checkpoint:
            folder = Path(checkpoint)
            found = {"config": folder / "config.json",
                     "processor": _first_file(folder, cls.processor_files),
                     "weights": _first_file(folder, WEIGHT_FILES)}
            if not found["config"].is_file() or None in found.values():
                raise UsageError(f"--checkpoint {checkpoint}: not a {cls.display_name} folder in the hub's format (it needs "
                                 f"config.json, {' or '.join(cls.processor_files)} and {' or '.join(WEIGHT_FILES)})")
            return found
        repository, what = repo_id(weights), f"{cls.key} {weights.name}"
        return {"config": hub_file(repository, ("config.json",), weights_dir, what, progress),
                "weights": hub_file(repository, WEIGHT_FILES, weights_dir, what, progress),
                "processor": hub_file(repository, cls.processor_files, weights_dir, what, progress)}


def _first_file(folder: Path, names: tuple[str, ...]) -> Path | None:
    return next((folder / name for name in names if (folder / name).is_file()), None)


def processor_preprocessing(processor: Any, shortest_edge: int | None = None) -> FramePreprocessing:
    """A processor, as transformers read it from the repository's file, as a :class:`FramePreprocessing`:
    transformers' default (torchvision) image and video processors resize uint8 tensors with
    ``torchvision.transforms.v2``, antialiased. Asking transformers for the values reads every file it reads with
    the values it gives: the 2022 files of MCG-NJU's VideoMAE repositories, written by a ``*FeatureExtractor``,
    say ``"size": 224`` with no ``crop_size`` or rescale keys. ``shortest_edge`` replaces the stored size for
    processors that derive it from the crop."""
    crop = processor.crop_size
    return FramePreprocessing(shortest_edge or processor.size.shortest_edge, (crop.height, crop.width),
                              tuple(processor.image_mean), tuple(processor.image_std),
                              divisor=1 / processor.rescale_factor, interpolation=_RESAMPLE[int(processor.resample)],
                              v2=True)


def read_processor(path: Path, kind: str) -> Any:
    """The processor of the repository file at ``path`` as transformers reads it (``kind``: ``AutoImageProcessor``,
    or a video processor class), its log quiet; a file it cannot read is refused in one line."""
    import transformers
    from transformers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        return getattr(transformers, kind).from_pretrained(path.parent)
    except Exception as error:  # transformers raises many types for files it cannot read
        raise UsageError(f"{path}: not a processor configuration transformers reads ({type(error).__name__}: "
                         f"{' '.join(str(error).split())[:300]})") from error
    finally:
        logging.set_verbosity(level)
