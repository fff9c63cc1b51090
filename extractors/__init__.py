"""Extractors: one module per model family, each registering its feature types.

``extractor_class(feature_type)`` gives the class; ``from extractors import ExtractCLIP`` the class itself.
"""
from extractors.base import BaseExtractor, FrameWiseExtractor, WindowExtractor
from extractors.clip import ExtractCLIP
from extractors.flow import ExtractFlow
from extractors.i3d import ExtractI3D
from extractors.registry import extractor_class, feature_types

__all__ = ["BaseExtractor", "FrameWiseExtractor", "WindowExtractor", "ExtractCLIP", "ExtractFlow", "ExtractI3D",
           "extractor_class", "feature_types"]
