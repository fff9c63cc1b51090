"""Maps each ``--feature_type`` to the extractor class that produces it."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from extractors.base import BaseExtractor

_EXTRACTORS: dict[str, type[BaseExtractor]] = {}


def register(*feature_types: str) -> Callable[[type[BaseExtractor]], type[BaseExtractor]]:
    def decorate(cls: type[BaseExtractor]) -> type[BaseExtractor]:
        for feature_type in feature_types:
            if feature_type in _EXTRACTORS:
                raise ValueError(f"feature type {feature_type!r} is registered twice")
            _EXTRACTORS[feature_type] = cls
        return cls

    return decorate


def feature_types() -> list[str]:
    return list(_EXTRACTORS)


def extractor_class(feature_type: str) -> type[BaseExtractor]:
    try:
        return _EXTRACTORS[feature_type]
    except KeyError:
        raise ValueError(f"unknown feature type {feature_type!r}; known: {', '.join(_EXTRACTORS)}") from None
