"""Maps each ``--feature_type`` to the extractor class that produces it and the published weights it can load.

A model module registers its feature types with :func:`register`; nothing else needs to know about it: the
command line's choices and help, the option checks, the random checkpoint writer and the benchmarks all read
this registry.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Mapping

from io_utils.errors import UsageError
from io_utils.weights import Weights, choose_weights

if TYPE_CHECKING:
    from extractors.base import BaseExtractor
    from extractors.config import RunConfig

WeightsTable = Mapping[str, Weights]


@dataclass(frozen=True)
class FeatureType:
    """One ``--feature_type``.

    ``weights``: its published checkpoints by ``--weights`` name, the default first; a function of the run's
    configuration where the choice depends on another option (RAFT's ``--raft_model``); empty for models whose
    weights come from elsewhere (timm's hub). ``weight_aliases``: short names for some of them.
    """

    name: str
    extractor: type[BaseExtractor]
    weights: WeightsTable | Callable[[RunConfig], WeightsTable] = field(default_factory=dict)
    weight_aliases: Mapping[str, str] = field(default_factory=dict)

    def table(self, config: RunConfig) -> WeightsTable:
        return self.weights(config) if callable(self.weights) else self.weights

    def weights_for(self, config: RunConfig) -> Weights | None:
        """The entry ``--weights`` names (or the default); None for models without published weights here."""
        table = self.table(config)
        if not table:
            return None
        name = config.weights if "weights" in self.extractor.reads else None
        return choose_weights(table, name, self.weight_aliases, config.feature_type)


_FEATURE_TYPES: dict[str, FeatureType] = {}


def register(*feature_types: FeatureType) -> None:
    for spec in feature_types:
        if spec.name in _FEATURE_TYPES:
            raise ValueError(f"feature type {spec.name!r} is registered twice")
        _FEATURE_TYPES[spec.name] = spec


def feature_types() -> list[str]:
    return list(_FEATURE_TYPES)


def feature_type(name: str) -> FeatureType:
    try:
        return _FEATURE_TYPES[name]
    except KeyError:
        raise UsageError(f"unknown feature type {name!r}; known: {', '.join(_FEATURE_TYPES)}") from None


def extractor_class(name: str) -> type[BaseExtractor]:
    return feature_type(name).extractor
