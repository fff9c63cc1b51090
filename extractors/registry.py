"""Maps each ``--feature_type`` to the family that produces it and the published weights it can load.

A family's module registers its feature types with :func:`register`; nothing else needs to know about it: the
command line's choices, options and help, the option checks, ``--list_models``, the reference documentation, the
random checkpoint writer and the benchmarks all read this registry.

What the configuration needs of a family is its static description (:class:`Family`): the options it reads, its
output keys, its defaults, its checks. The engine's extractor classes give it as class attributes and class
methods, so this module knows them by that description alone and never imports the engine.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Protocol

from extractors.options import Option
from extractors.weights import Weights, WeightsTable
from io_utils.errors import UsageError

RunConfig = Any  # extractors.config.RunConfig: the configuration imports this module, never the reverse
_RUN_OPTIONS: set[str] = set()  # the options of every run, which no family may declare (set by the configuration)


@dataclass(frozen=True)
class ModelDocs:
    """What the model tables of the README and of ``docs/models/index.md`` say of a family (they are generated
    from these, by ``python main.py reference docs/reference``): its page's title and file under
    ``docs/models/``, one line of what it extracts, its inputs, and its output key with its dimension."""

    title: str
    page: str
    summary: str
    inputs: str
    outputs: str


class Family(Protocol):
    """The static description of a model family, given by its extractor class (class attributes and class
    methods; see ``extractors/base.py`` for what each means)."""

    key: str
    options: tuple[Option, ...]
    writes_flow: bool
    input_extensions: frozenset[str]
    examples: Mapping[str, Any]
    docs: ModelDocs | None

    def feature_keys(self, config: RunConfig) -> list[str]: ...
    def option_defaults(self, config: RunConfig, weights: Weights | None) -> dict[str, Any]: ...
    def validate(self, config: RunConfig, weights: Weights | None) -> None: ...
    def sampling_rule(self, config: RunConfig) -> str: ...
    def checkpoints(self, config: RunConfig) -> list[tuple[Weights, str | None, str]]: ...
    def write_random(self, config: RunConfig, folder: Path, seed: int) -> list[Path]: ...
    def library_weights(self) -> tuple[str, ...]: ...
    def weights_files(self, config: RunConfig) -> list[Any]: ...


@dataclass(frozen=True)
class FeatureType:
    """One ``--feature_type``: its extractor class and its published checkpoints: a table; or, where the table
    depends on another option (RAFT's on ``--raft_model``), one table per value of the option ``weights_by``;
    None for models whose weights come from elsewhere (timm's, from its hub)."""

    name: str
    extractor: Family  # the extractor class
    weights: WeightsTable | Mapping[Any, WeightsTable] | None = None
    weights_by: str | None = None

    def table(self, config: RunConfig) -> WeightsTable | None:
        return self.weights[config.model_options[self.weights_by]] if self.weights_by else self.weights

    def tables(self) -> dict[str, WeightsTable]:
        """Every table, each under the option that chooses it (``--raft_model small``; "" for the only one)."""
        if self.weights_by:
            return {f"--{self.weights_by} {value}": table for value, table in self.weights.items()}
        return {"": self.weights} if self.weights is not None else {}

    def weights_for(self, config: RunConfig) -> Weights | None:
        """The entry ``--weights`` names (or the default); None for models without published weights here."""
        table = self.table(config)
        if table is None:
            return None
        return table.choose(config.model_options.get("weights"), config.feature_type)


_FEATURE_TYPES: dict[str, FeatureType] = {}


def register(*feature_types: FeatureType) -> None:
    """Add feature types; refuse a name registered twice, and options that contradict another family's
    declaration of the same option (one option, one meaning on the command line)."""
    for spec in feature_types:
        if spec.name in _FEATURE_TYPES:
            raise ValueError(f"feature type {spec.name!r} is registered twice")
        _check_declarations(spec)
        _FEATURE_TYPES[spec.name] = spec


def _check_declarations(spec: FeatureType) -> None:
    names = [option.name for option in spec.extractor.options]
    repeated = {name for name in names if names.count(name) > 1}
    if repeated:
        raise ValueError(f"{spec.name}: options declared twice: {', '.join(sorted(repeated))}")
    known = {option.name: option for option in declared_everywhere()}
    for option in spec.extractor.options:
        if option.name in _RUN_OPTIONS or any(former in _RUN_OPTIONS for former in option.former):
            raise ValueError(f"{spec.name}: --{option.name} is an option of every run")
        if option.name in known and not option.same_as(known[option.name]):
            raise ValueError(f"{spec.name}: --{option.name} differs from its declaration by another family")
        for former in (name for name in option.former if name in known):  # one argument, parsed one way
            if not _parsed_alike(option, known[former]):
                raise ValueError(f"{spec.name}: --{former} would parse as another family's option, not as "
                                 f"--{option.name}")


def reserve_run_options(names: Iterable[str]) -> None:
    """The options of every run, which the configuration declares: no family may declare one (checked for the
    families registered already, and for each one registered later)."""
    _RUN_OPTIONS.update(names)
    for spec in _FEATURE_TYPES.values():
        _check_declarations(spec)


def _parsed_alike(option: Option, other: Option) -> bool:
    return (option.convert, option.many, option.flag) == (other.convert, other.many, other.flag)


def feature_types() -> list[str]:
    return list(_FEATURE_TYPES)


def feature_type(name: str) -> FeatureType:
    try:
        return _FEATURE_TYPES[name]
    except KeyError:
        raise UsageError(f"unknown feature type {name!r}; known: {', '.join(_FEATURE_TYPES)} "
                         "(see --list_models)") from None


def extractor_class(name: str) -> Family:
    return feature_type(name).extractor


def declared_options(family) -> dict[str, Option]:
    """A family's options by name, in declaration order."""
    return {option.name: option for option in family.options}


def declared_everywhere() -> list[Option]:
    """Every registered family's options, each name once (with no former spelling), in registration order."""
    found: dict[str, Option] = {}
    for spec in _FEATURE_TYPES.values():
        for option in spec.extractor.options:
            found.setdefault(option.name, replace(option, former=()))
    return list(found.values())


def known_options() -> set[str]:
    """Every name some feature type reads: its options and their former spellings."""
    return {*readers(), *former_spellings()}


def readers() -> dict[str, list[str]]:
    """Option name -> the feature types that read it, in registration order (former spellings apart: see
    :func:`former_spellings`)."""
    found: dict[str, list[str]] = {}
    for name, spec in _FEATURE_TYPES.items():
        for option in spec.extractor.options:
            found.setdefault(option.name, []).append(name)
    return found


def former_spellings() -> dict[str, dict[str, list[str]]]:
    """Former spelling -> the option it stands for -> the feature types that accept it so."""
    found: dict[str, dict[str, list[str]]] = {}
    for name, spec in _FEATURE_TYPES.items():
        for option in spec.extractor.options:
            for former in option.former:
                found.setdefault(former, {}).setdefault(option.name, []).append(name)
    return found
