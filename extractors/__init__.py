"""Extractors: the model families (``extractors/models``, each registering its feature types) on a shared engine.

``extractor_class(feature_type)`` gives the class; ``list_models()`` the feature types, ``describe(name)`` what one
reads and writes; ``from extractors import ExtractCLIP`` a class itself; ``JointExtractor`` several feature types
from one decode of each video; ``open_features(path)`` the features a run wrote, video by video.
"""
from extractors import models  # noqa: F401  (registers every feature type)
from extractors.base import BaseExtractor
from extractors.catalog import describe, list_models
from extractors.config import RunConfig, resolve_config
from extractors.features import open_features
from extractors.frame_wise import FrameWiseExtractor
from extractors.joint import JointExtractor
from extractors.models.clap import ExtractCLAP
from extractors.models.clip import ExtractCLIP
from extractors.models.i3d import ExtractI3D
from extractors.models.mmaction import ExtractSlowOnly, ExtractTSN
from extractors.models.open_clip_models import ExtractOpenCLIP
from extractors.models.optical_flow import ExtractFlow, ExtractRAFT
from extractors.models.r21d import ExtractR21D
from extractors.models.resnet import ExtractResNet
from extractors.models.resnext3d import ExtractResNeXt3D
from extractors.models.s3d import ExtractS3D
from extractors.models.slowfast import ExtractSlowFast
from extractors.models.timesformer import ExtractTimeSformer
from extractors.models.timm_models import ExtractTimm
from extractors.models.transformers_models import ExtractTransformers
from extractors.models.vggish import ExtractVGGish
from extractors.models.videomae import ExtractVideoMAE
from extractors.models.vjepa2 import ExtractVJEPA2
from extractors.registry import extractor_class, feature_types
from extractors.windows import WindowExtractor

__all__ = ["BaseExtractor", "FrameWiseExtractor", "WindowExtractor", "RunConfig", "resolve_config", "ExtractCLAP",
           "ExtractCLIP", "ExtractOpenCLIP", "ExtractFlow", "ExtractRAFT", "ExtractI3D", "ExtractR21D", "ExtractResNet",
           "ExtractResNeXt3D", "ExtractS3D", "ExtractSlowFast", "ExtractSlowOnly", "ExtractTimeSformer", "ExtractTimm",
           "ExtractTransformers", "ExtractTSN", "ExtractVGGish", "ExtractVideoMAE", "ExtractVJEPA2", "describe",
           "extractor_class", "feature_types", "JointExtractor", "list_models", "open_features"]
