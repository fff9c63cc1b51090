"""Extractors: one module per model family, each registering its feature types.

``extractor_class(feature_type)`` gives the class; ``from extractors import ExtractCLIP`` the class itself.
"""
from extractors.base import BaseExtractor, FrameWiseExtractor
from extractors.clip import ExtractCLIP
from extractors.registry import extractor_class, feature_types

__all__ = ["BaseExtractor", "FrameWiseExtractor", "ExtractCLIP", "extractor_class", "feature_types"]
