"""Throughput of the frame-wise and clip-level models, random weights (by default ResNet-50/152, R(2+1)D, S3D,
3D ResNeXt-101, MMAction2's TSN and SlowOnly; ``--only`` takes any registered frame or clip model but i3d, timm
and open_clip, which ``--timm NAME`` and ``--open_clip NAME:TAG`` add; ``bench/flow.py`` measures I3D and the flow
networks).

For each model: the model alone (median of ``--repeats`` passes after one warm-up, on random input of the
model's input size, taken from its weights' preprocessing: a batch of 32 frames, or one window), and
``extract()`` end to end on a sample video with the model's default sampling (decoding, preprocessing and the
model overlapped), with its count of inputs.

    python bench/models.py                      # CPU, the 19.62 fps sample
    python bench/models.py --device cuda:0 --only CLIP-ViT-B/32 r21d
    python bench/models.py --only CLIP-ViT-L/14 --open_clip ViT-B-16-SigLIP2:webli --timm vit_small_patch14_dinov2.lvd142m
"""
from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.flow import median_seconds  # noqa: E402
from extractors import WindowExtractor, extractor_class, feature_types  # noqa: E402
from extractors.catalog import write_random_weights  # noqa: E402
from extractors.engine_options import VIEWS  # noqa: E402
from extractors.models.mmaction import MMActionExtractor  # noqa: E402
from extractors.windows import STACK_SIZE  # noqa: E402

DEFAULT_TYPES = ("resnet50", "resnet152", "r21d", "s3d", "resnext101_3d", "tsn", "slowonly")


def input_shape(extractor) -> tuple[int, ...]:
    """One model input: (3, H, W) for a frame, a window (T, 3, H, W) or an MMAction2 clip as its extractor
    stacks it, at the preprocessing's crop size."""
    frame = (3, *extractor.transform.crop)
    if isinstance(extractor, MMActionExtractor):
        return tuple(extractor.clip_input([torch.empty(frame)] * extractor.weights.meta.stack_size).shape)
    if isinstance(extractor, WindowExtractor):  # what window_input makes of a window (SlowFast keeps 32 of 60)
        size = extractor.config[STACK_SIZE]
        return tuple(extractor.window_input(list(range(size)), [], [torch.empty(frame)] * size).shape)
    return frame


def batch_size(extractor) -> int:
    """The inputs of one forward pass in a default run: MMAction2's clips of a video go through together."""
    if isinstance(extractor, MMActionExtractor):
        return min(extractor.inputs_per_batch, extractor.config[VIEWS])
    return extractor.inputs_per_batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", default=str(ROOT / "sample" / "v_GGSY1Qvo990.mp4"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", nargs="+", choices=feature_types(), default=list(DEFAULT_TYPES), metavar="TYPE")
    parser.add_argument("--timm", nargs="+", default=[], metavar="NAME", help="timm models to add")
    parser.add_argument("--open_clip", nargs="+", default=[], metavar="NAME:TAG", help="open_clip pairs to add")
    args = parser.parse_args()
    # (row label, feature type, its model options)
    runs = [(name, name, {}) for name in args.only]
    runs += [(f"timm {name}", "timm", {"model_name": name}) for name in args.timm]
    runs += [(f"open_clip {pair}", "open_clip", dict(zip(("model_name", "pretrained"), pair.split(":"))))
             for pair in args.open_clip]
    device = torch.device(args.device)
    device_options = {"cpu": True} if device.type == "cpu" else {"device_ids": [device.index or 0]}
    print(f"{platform.node()} | torch {torch.__version__} | {torch.get_num_threads()} threads | {device} | "
          f"{Path(args.video).name}")
    print("| model | model-only ms per input | inputs (batch) | end-to-end s | inputs | inputs/s |")
    print("| --- | ---: | --- | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as folder:
        for label, feature_type, options in runs:
            write_random_weights(feature_type, Path(folder), **options)
            family = extractor_class(feature_type)
            per_input = {"pool": "none"} if issubclass(family, MMActionExtractor) else {}
            extractor = family(dict(feature_type=feature_type, **options, weights_dir=folder, **device_options,
                                    **per_input))  # a row per clip
            batch, shape = batch_size(extractor), input_shape(extractor)
            inputs = torch.randn(batch, *shape, device=device)
            with torch.inference_mode():
                seconds = median_seconds(lambda: extractor.forward(inputs), args.repeats, device)
            start = time.perf_counter()
            count = len(extractor.extract(args.video)["timestamps_ms"])
            total = time.perf_counter() - start
            print(f"| {label} | {1000 * seconds / batch:.0f} | {shape} ({batch}) | {total:.1f} | {count} | "
                  f"{count / total:.1f} |")


if __name__ == "__main__":
    main()
