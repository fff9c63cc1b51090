"""The command-line options, shared by ``main.py`` and by the Python API (which takes the same options)."""
from __future__ import annotations

import argparse
import math
from typing import Any, Mapping

from extractors.registry import extractor_class, feature_types
from extractors.transforms import CROP_CHOICES
from flow.raft import RAFT_MODELS
from io_utils.outputs import ON_EXTRACTION_CHOICES
from io_utils.sampling import parse_extract_method
from io_utils.weights import WEIGHTS_DIR_ENV


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="main.py",
        description="Extract features from videos with pretrained networks.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--feature_type", required=True, choices=feature_types(), metavar="FEATURE_TYPE",
                        help=f"one of: {', '.join(feature_types())}")

    inputs = parser.add_mutually_exclusive_group(required=True)
    inputs.add_argument("--video_paths", nargs="+", metavar="PATH", help="video files")
    inputs.add_argument("--video_dir", metavar="DIR", help="a folder of videos (by file extension)")
    inputs.add_argument("--file_with_video_paths", metavar="FILE",
                        help="one video path per line, or a CSV with the header video_path,feature_path")
    parser.add_argument("--recursive", action="store_true", help="with --video_dir: also take sub-folders")

    parser.add_argument("--extract_method", type=parse_extract_method, default=parse_extract_method("fix_1"),
                        metavar="METHOD", help="uni_N: N evenly spaced frames; fix_F: F frames per second")
    parser.add_argument("--batch_size", type=_positive_int, default=32, help="frames per forward pass")

    devices = parser.add_mutually_exclusive_group()
    devices.add_argument("--device_ids", type=int, nargs="+", default=[0], metavar="ID", help="CUDA devices")
    devices.add_argument("--cpu", action="store_true", help="run on the CPU")
    parser.add_argument("--num_workers", type=_positive_int, default=1, help="with --cpu: worker processes")

    parser.add_argument("--on_extraction", choices=ON_EXTRACTION_CHOICES, default="print")
    parser.add_argument("--output_path", default="./output", metavar="DIR")
    parser.add_argument("--output_direct", action="store_true",
                        help="write into --output_path itself, not a sub-folder named after the feature type")
    parser.add_argument("--overwrite", action="store_true",
                        help="extract again videos whose outputs already exist (they are skipped otherwise)")

    parser.add_argument("--weights_dir", default=None, metavar="DIR",
                        help=f"folder of checkpoints under their official file names (or ${WEIGHTS_DIR_ENV})")
    parser.add_argument("--clip_checkpoint", default=None, metavar="PATH",
                        help="an OpenAI-format CLIP checkpoint (TorchScript archive or state dict) to use instead")
    parser.add_argument("--checkpoint", default=None, metavar="PATH",
                        help="resnet*, timm, r21d, s3d, resnext101_3d: a local checkpoint to use instead of the published one")
    parser.add_argument("--weights", default=None, metavar="NAME",
                        help="resnet*: torchvision weights, IMAGENET1K_V1 (default) or IMAGENET1K_V2 (resnet50 and up)")
    parser.add_argument("--model_name", default=None, metavar="NAME",
                        help="timm: any timm model name; r21d: which R(2+1)D (default r2plus1d_18_16_kinetics)")
    parser.add_argument("--show_pred", action="store_true",
                        help="print the top-5 classes per frame or window (CLIP: zero-shot)")
    parser.add_argument("--pred_texts", nargs="+", default=None, metavar="TEXT",
                        help="with --show_pred: score these texts instead of the Kinetics-400 classes")
    parser.add_argument("--verbose", action="store_true", help="report skipped videos, tracebacks of unexpected errors")
    _add_flow_options(parser)
    _add_window_options(parser)
    _add_output_options(parser)
    return parser


def _add_flow_options(parser: argparse.ArgumentParser) -> None:
    flow = parser.add_argument_group("optical flow (raft, pwc, and i3d's flow stream)")
    flow.add_argument("--flow_batch_size", type=_positive_int, default=8, help="frame pairs per flow forward pass")
    flow.add_argument("--side_size", type=_positive_int, default=None, metavar="N",
                      help="raft/pwc: resize frames so that their short side is N before flow (default: original size)")
    flow.add_argument("--flow_bound", type=_positive_float, default=20.0,
                      help="save_flow_images and --flow_dir: flow is clipped to +-bound and mapped to 0..255")
    flow.add_argument("--raft_model", choices=RAFT_MODELS, default="large")
    flow.add_argument("--raft_weights", default=None, metavar="NAME",
                      help="torchvision weights: sintel (default for large), things (default for small), kitti, "
                           "things_v1, sintel_v1, kitti_v1, or an enum name such as C_T_SKHT_V2")
    flow.add_argument("--raft_iters", type=_positive_int, default=20, help="RAFT's recurrent refinement steps")
    flow.add_argument("--flow_checkpoint", default=None, metavar="PATH",
                      help="a local RAFT (torchvision or princeton-vl format) or PWC-Net checkpoint to use instead")


def _add_window_options(parser: argparse.ArgumentParser) -> None:
    windows = parser.add_argument_group("clip models (i3d, r21d, s3d, resnext101_3d)")
    windows.add_argument("--stack_size", type=_positive_int, default=None,
                         help="frames per window (default: the model's, e.g. 64 for i3d, 16 for r21d)")
    windows.add_argument("--step_size", type=_positive_int, default=None,
                         help="frames between window starts (default: --stack_size)")
    windows.add_argument("--extraction_fps", type=_positive_float, default=None, metavar="FPS",
                         help="take frames at this rate (default: every frame of the video, 24 for resnext101_3d); "
                              "also for raft/pwc")
    windows.add_argument("--pad_last", action="store_true",
                         help="pad the frames after the last full window (or of a too short video) into one more window")
    windows.add_argument("--streams", nargs="+", choices=("rgb", "flow"), default=["rgb", "flow"])
    windows.add_argument("--flow_type", choices=("raft", "pwc", "precomputed"), default="raft")
    windows.add_argument("--flow_dir", default=None, metavar="DIR",
                         help="with --flow_type precomputed: DIR/<video stem>/flow_x_00001.jpg, flow_y_00001.jpg, ...")


def _add_output_options(parser: argparse.ArgumentParser) -> None:
    outputs = parser.add_argument_group("views and outputs (every model but raft/pwc)")
    outputs.add_argument("--views", type=_positive_int, default=None, metavar="N",
                         help="N frames (image models) or N windows (clip models) spread uniformly over the whole "
                              "video, instead of --extract_method or --step_size")
    outputs.add_argument("--crops", type=int, choices=CROP_CHOICES, default=1,
                         help="1: centre crop; 3: three crops along the long side (outputs get a crop axis)")
    outputs.add_argument("--pool", choices=("mean",), default=None,
                         help="save one vector per video: the mean over every frame or window (and crop)")
    outputs.add_argument("--l2_normalize", action="store_true", help="scale every saved vector to unit L2 norm")
    outputs.add_argument("--dtype", choices=("float32", "float16"), default="float32", help="of the saved features")


def complete_args(args: argparse.Namespace | Mapping[str, Any]) -> argparse.Namespace:
    """Fill every option the caller left out with the CLI default, so the Python API takes partial options,
    then the options left unset (None) with the feature type's own defaults (window sizes, frame rate).

    Strings for ``extract_method`` are parsed as the CLI parses them.
    """
    given = dict(vars(args) if isinstance(args, argparse.Namespace) else args)
    parser = build_parser()
    completed = {action.dest: action.default for action in parser._actions if action.dest != "help"}
    completed.update(given)
    if isinstance(completed["extract_method"], str):
        completed["extract_method"] = parse_extract_method(completed["extract_method"])
    if completed.get("feature_type") is None:
        raise ValueError("feature_type is required")
    args = argparse.Namespace(**completed)
    for option, value in extractor_class(args.feature_type).option_defaults(args).items():
        if getattr(args, option) is None:
            setattr(args, option, value)
    return args


def _positive_float(text: str) -> float:
    value = float(text)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value
