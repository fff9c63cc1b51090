"""The model families, one module each; importing this package registers every feature type they give.

A new family is a new module here and its import line below (see docs/contributing/adding-a-model.md).
"""
from extractors.models import (clap, clip, i3d, mmaction, open_clip_models, optical_flow, r21d, resnet,  # noqa: F401
                               resnext3d, s3d, slowfast, timesformer, timm_models, transformers_models, videomae,
                               vggish, vjepa2)
