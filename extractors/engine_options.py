"""The options the engine declares for every family that reads them: sampling (``--extract_method``,
``--views``, ``--batch_size``), what is saved (``--pool``, ``--l2_normalize``, ``--dtype``) and which weights
(``--weights``, ``--checkpoint``, ``--model_name``). A family lists the ones it reads in its ``options``.
"""
from __future__ import annotations

from fractions import Fraction

from extractors.config import RunConfig
from extractors.options import Option, Section, positive_int
from io_utils.sampling import SamplingMethod, parse_extract_method


DEFAULT_SAMPLING = SamplingMethod("fix", Fraction(1))  # of the frame-wise models
# Options of every model whose outputs are feature vectors.
VIEWS = Option("views", None, "N inputs spread uniformly over the whole video (N frames, windows or clips), instead "
               "of --extract_method or --step_size (default: the model's; see --list_models)", 2,
               convert=positive_int, metavar="N", section=Section.SAMPLING)
POOL = Option("pool", None, "mean: save one vector per video, the mean over every frame, window or clip (and crop); "
              "none: one per frame, window or clip (default: the model's, none for most; see --list_models)",
              "mean", choices=("mean", "none"), section=Section.OUTPUTS)
L2_NORMALIZE = Option("l2_normalize", False, "scale every saved vector to unit L2 norm", True,
                      section=Section.OUTPUTS)
DTYPE = Option("dtype", "float32", "of the saved features", "float16", choices=("float32", "float16"),
               section=Section.OUTPUTS)
FEATURE_OPTIONS = (VIEWS, POOL, L2_NORMALIZE, DTYPE)
# The published weights of a feature type (``--help`` lists every type's) and a local file instead.
WEIGHTS = Option("weights", None, "which published weights", "IMAGENET1K_V2", metavar="NAME")
CHECKPOINT = Option("checkpoint", None, "a local checkpoint in the official format, instead of the published one",
                    "x.pt", metavar="PATH")
# Families that run any model of a library name it (timm's, open_clip's).
MODEL_NAME = Option("model_name", None, "the model: for timm, with its pretrained tag if it has several (e.g. "
                    "vit_base_patch16_224.augreg2_in21k_ft_in1k); for open_clip, its name (ViT-B-16-SigLIP2) or a "
                    "local-dir:FOLDER / hf-hub:ORG/REPO in open_clip's hub format; for transformers, a hub repository "
                    "(ORG/NAME) or a local folder in the hub's format", "resnet50.a1_in1k",
                    metavar="NAME", required=True)
BATCH_SIZE = Option("batch_size", 32, "inputs (frames, clips, audio examples) per forward pass", 4,
                    convert=positive_int, section=Section.SAMPLING, changes_features=False)
EXTRACT_METHOD = Option("extract_method", None, "uni_N: N evenly spaced frames; fix_F: F frames per second; all: "
                        "every frame (default: the model's; see --list_models)", "uni_3",
                        convert=parse_extract_method, metavar="METHOD", section=Section.SAMPLING)


def sampling(config: RunConfig) -> SamplingMethod | None:
    """Which frames to take: ``--views N`` is ``uni_N``, else ``--extract_method`` (None: the model's own)."""
    return SamplingMethod("uni", Fraction(config[VIEWS])) if config[VIEWS] else config[EXTRACT_METHOD]
