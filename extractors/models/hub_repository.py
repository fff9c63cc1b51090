"""A weights source that is a transformers hub repository, for every family whose weights are one: the
``transformers`` path and its named entries, ``videomae``, ``vjepa2`` and ``clap``.

A repository holds ``config.json`` (which network, with ``architectures`` naming its class), the weights
(safetensors or a pickled state dict, one file or shards) and the processor configuration (the preprocessing).
What is written once here, for all of them:
- **Locating** it: the ``--checkpoint`` folder (the hub's format), else a hub id (a named entry's ``--weights``,
  or ``--model_name``) in ``--weights_dir`` or the hub cache, else downloaded (:func:`io_utils.hub.hub_repository`).
  A repository whose code is not in the installed transformers is refused before anything of it is imported.
- **Recording** it in the manifest: each file the run reads, with its hub address.
- **Writing** it with random weights: ``save_pretrained`` of the entry's network (``Weights.build``) and of the
  processor its publisher writes, in the hub cache layout, where ``--weights_dir`` finds it.
- **Loading** it: the class ``config.json`` names, by its ``from_pretrained`` in float32, refused unless every
  tensor of the file fits it (strict); the processor by transformers' own classes.
"""
from __future__ import annotations

import contextlib
import functools
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch
from torch import nn

from extractors.base import WeightsFile
from extractors.engine_options import CHECKPOINT, MODEL_NAME
from extractors.registry import feature_type
from extractors.weights import Meta, Weights, random_constants
from io_utils.errors import UsageError
from io_utils.hub import HUB, RepositoryUnavailable, hub_repository, hub_url, snapshot_folder

Renaming = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]
PROCESSOR_FILES = ("video_preprocessor_config.json", "preprocessor_config.json", "processor_config.json")


@dataclass(frozen=True)
class Repository:
    """A repository's folder and what its files say before its network is built."""

    folder: Path
    repo_id: str | None  # its hub id; None for a local folder
    values: Mapping[str, Any] = field(compare=False)  # config.json
    processors: Mapping[str, Mapping[str, Any]] = field(compare=False)  # processor file name -> its values

    @property
    def model_type(self) -> str:
        return self.values["model_type"]

    @property
    def architecture(self) -> type:
        """The class named first in ``architectures`` where transformers has it, else AutoModel's for the type."""
        import transformers
        from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

        for name in self.values.get("architectures") or ():
            if hasattr(transformers, name):
                return getattr(transformers, name)
        name = MODEL_MAPPING_NAMES.get(self.model_type)
        if name is None or not hasattr(transformers, name):
            raise UsageError(f"transformers has no model class for model type {self.model_type!r}")
        return getattr(transformers, name)

    def files(self) -> list[WeightsFile]:
        """The files a run reads, for the manifest: the configuration, the processor files and the weights."""
        return [WeightsFile(path, hub_url(self.repo_id, path.name) if self.repo_id else str(path))
                for path in sorted(self.folder.iterdir())
                if path.name == "config.json" or path.name in PROCESSOR_FILES or path.suffix in (".safetensors", ".bin")]


def hub_entry(name: str, repository: str, build: Callable[[], nn.Module], **meta: Any) -> Weights:
    """A named entry whose weights are the hub repository ``repository`` (``ORG/NAME``): its URL is the
    repository's page, and ``build`` makes its network (with random weights, for :func:`save_repository`)."""
    return Weights(name, f"{HUB}/{repository}", None, build, meta=Meta(**meta))


def entry_repository(weights: Weights) -> str:
    """The hub id (``ORG/NAME``) of a named entry."""
    return weights.url.removeprefix(f"{HUB}/")


def located(config, needs: tuple[str, ...] = ()) -> Repository:
    """The repository of a run: ``--checkpoint FOLDER``, else ``--model_name``, else the repository of the named
    entry ``--weights`` chooses; ``needs``: files it must hold beyond the configuration and weights (a tokenizer's)."""
    checkpoint = config[CHECKPOINT]
    if checkpoint:
        return _located(checkpoint, None, True, needs, f"--checkpoint {checkpoint}")
    if config[MODEL_NAME]:
        return _located(config[MODEL_NAME], config.weights_dir, False, needs)
    weights = feature_type(config.feature_type).weights_for(config)
    return _located(entry_repository(weights), config.weights_dir, False, needs, f"{config.feature_type} {weights.name}")


def located_if_found(config) -> Repository | None:
    """The repository of a run, or None where it is neither local nor downloadable now: the configuration is
    then resolved without the defaults its files give (``--list_models``, the reference pages, a Python user's
    configuration), and the run stops in ``prepare`` with the message that says where to put it."""
    try:
        return located(config)
    except RepositoryUnavailable:
        return None


@functools.lru_cache(maxsize=8)
def _located(name: str, weights_dir: str | None, local: bool, needs: tuple[str, ...], what: str = "") -> Repository:
    what = what or f"transformers model {name}"
    folder = Path(name) if local else hub_repository(name, weights_dir, what, needs=needs)
    needed = ", ".join(("config.json", *needs, "the weights (model.safetensors or pytorch_model.bin)"))
    if not (folder / "config.json").is_file():
        raise UsageError(f"{what}: not a repository in the hub's format (it needs {needed})")
    values = _json(folder / "config.json")
    processors = {file: _json(folder / file) for file in PROCESSOR_FILES if (folder / file).is_file()}
    refuse_remote_code(values, processors, folder)
    has_weights = any(folder.glob("*.safetensors")) or any(folder.glob("*.bin"))
    if not has_weights or any(not (folder / file).is_file() for file in needs):
        raise UsageError(f"{what}: not a repository in the hub's format (it needs {needed})")
    repo_id = None if local or Path(name).is_dir() else name
    return Repository(folder, repo_id, values, processors)


def refuse_remote_code(values: Mapping[str, Any], processors: Mapping[str, Mapping[str, Any]], folder: Path) -> None:
    """A repository whose model or processor is code of its own (``auto_map``), or a model type the installed
    transformers does not have, is refused before anything of it is imported."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    known = values.get("model_type") in CONFIG_MAPPING_NAMES
    if "auto_map" in values or any("auto_map" in processor for processor in processors.values()) or not known:
        what = ("its code is in the repository" if known
                else f"model type {values.get('model_type')!r} is not in the installed transformers")
        raise UsageError(f"{folder}: {what}; it would need trust_remote_code, which this tool never uses (none of "
                         f"its code was imported)")


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise UsageError(f"{path}: not a readable JSON file ({error})") from error


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """transformers' own progress bars and loading reports off: the tool says what matters in its own words.
    Some reports are plain prints to standard output, where a run's ``--on_extraction print`` writes features
    (5.23 prints a docstring check of its own code each time it builds Perception Encoder video): those go too."""
    from transformers.utils import logging

    level, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.set_verbosity(level)
        if bars:
            logging.enable_progress_bar()


def load_network(found: Repository) -> nn.Module:
    """The repository's network in float32, refused unless its file fits the class exactly."""
    import transformers

    architecture = found.architecture.__name__
    try:
        with quiet():
            network, info = found.architecture.from_pretrained(
                found.folder, dtype=torch.float32, output_loading_info=True, trust_remote_code=False)
    except Exception as error:  # transformers' loaders raise many types, its own defects included
        reason = " ".join(f"{type(error).__name__}: {error}".split())[:300]
        raise UsageError(f"{found.folder}: transformers {transformers.__version__} cannot load it as {architecture} "
                         f"({reason})") from error
    problems = {kind: info.get(kind) for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")
                if info.get(kind)}
    if problems:
        said = "; ".join(f"{kind.replace('_', ' ')}: {', '.join(map(str, sorted(keys)[:5]))}"
                         f"{' ...' if len(keys) > 5 else ''}" for kind, keys in problems.items())
        raise UsageError(f"{found.folder}: its weights do not fit the {architecture} its config.json describes ({said})")
    return _in_own_memory(network).eval()


@torch.no_grad()
def _in_own_memory(network: nn.Module) -> nn.Module:
    """Every tensor of ``network`` copied out of the weights file's memory map. ``from_pretrained`` leaves them
    there, at whatever alignment the file gives, and CPU kernels take other paths on unaligned memory: CLAP's
    features came out 4e-8 apart from those of the same weights in memory of their own. Ties between
    parameters stay (each tensor is replaced in place)."""
    for tensor in (*network.parameters(), *network.buffers()):
        tensor.data = tensor.data.clone()
    return network


def read_processor(folder: Path, kind: str) -> Any:
    """The processor of the repository as transformers' class ``kind`` reads it (``AutoImageProcessor``, a video
    processor class, ...): files written by any transformers version load as transformers loads them. A file it
    cannot read is refused in one line."""
    import transformers

    try:
        with quiet():
            return getattr(transformers, kind).from_pretrained(folder)
    except Exception as error:  # transformers raises many types for files it cannot read
        raise UsageError(f"{folder}: no processor configuration that transformers' {kind} reads "
                         f"({type(error).__name__}: {' '.join(str(error).split())[:300]})") from error


def save_repository(folder: Path, build: Callable[[], nn.Module], processor_for: Callable[[nn.Module], Any],
                    seed: int = 0, published: Renaming | None = None) -> list[Path]:
    """A repository of random weights in ``folder``: ``save_pretrained`` of the network ``build`` makes (seeded;
    its parameters that initialise to one value made random, :func:`~extractors.weights.random_constants`) and of
    the processor ``processor_for`` makes for it. ``published`` renames the tensors as the publisher's files name
    them, where they differ from transformers' module names."""
    from safetensors.torch import load_file, save_file

    torch.manual_seed(seed)
    network = random_constants(build())
    folder.mkdir(parents=True, exist_ok=True)
    with quiet():
        network.save_pretrained(folder)
        processor_for(network).save_pretrained(folder)
    if published is not None:
        weights = folder / "model.safetensors"
        save_file(published(load_file(str(weights))), str(weights), metadata={"format": "pt"})
    return sorted(path for path in folder.iterdir() if path.is_file())


class HubRepositoryWeights:
    """The weights hooks of a family whose weights are a hub repository: found by :func:`located`, recorded by
    :meth:`Repository.files`, written at random by :func:`save_repository` with the processor
    :meth:`publishes_processor` makes for an entry's network."""

    repository_needs: tuple[str, ...] = ()  # files beyond the configuration and weights

    @classmethod
    def repository(cls, config) -> Repository:
        return located(config, cls.needs(config))

    @classmethod
    def needs(cls, config) -> tuple[str, ...]:
        return cls.repository_needs

    @classmethod
    def checkpoints(cls, config) -> list:
        return []  # a repository, found by ``repository``

    @classmethod
    def prepare(cls, config) -> None:
        cls.repository(config)

    @classmethod
    def weights_files(cls, config) -> list[WeightsFile]:
        return cls.repository(config).files()

    @classmethod
    def write_random(cls, config, folder: Path, seed: int = 0) -> list[Path]:
        """The repository of ``--weights`` with random weights, in the hub cache layout under ``folder``."""
        weights = feature_type(config.feature_type).weights_for(config)
        return save_repository(snapshot_folder(folder, entry_repository(weights)), weights.build,
                               cls.publishes_processor, seed, cls.published_names)

    @staticmethod
    def publishes_processor(network: nn.Module) -> Any:
        """The processor the publisher writes beside ``network`` (for random weights)."""
        raise NotImplementedError

    published_names: Renaming | None = None  # the publisher's tensor names, where they are not transformers'
