"""Extractors: one module per model family, each registering its feature types.

``extractor_class(feature_type)`` gives the class; ``from extractors import ExtractCLIP`` the class itself.
"""
from extractors.base import BaseExtractor, FrameWiseExtractor
from extractors.clip import ExtractCLIP
from extractors.config import RunConfig, resolve_config
from extractors.flow import ExtractFlow, ExtractRAFT
from extractors.i3d import ExtractI3D
from extractors.mmaction import ExtractSlowOnly, ExtractTSN
from extractors.r21d import ExtractR21D
from extractors.registry import extractor_class, feature_types
from extractors.resnet import ExtractResNet
from extractors.resnext3d import ExtractResNeXt3D
from extractors.s3d import ExtractS3D
from extractors.timm_models import ExtractTimm
from extractors.vggish import ExtractVGGish
from extractors.windows import WindowExtractor

__all__ = ["BaseExtractor", "FrameWiseExtractor", "WindowExtractor", "RunConfig", "resolve_config", "ExtractCLIP",
           "ExtractFlow", "ExtractRAFT", "ExtractI3D", "ExtractR21D", "ExtractResNet", "ExtractResNeXt3D",
           "ExtractS3D", "ExtractSlowOnly", "ExtractTimm", "ExtractTSN", "ExtractVGGish", "extractor_class", "feature_types"]
