"""Throughput of the frame-wise and clip-level models (ResNet, R(2+1)D, S3D, 3D ResNeXt-101), random weights.

For each model: the model alone (median of ``--repeats`` passes after one warm-up, on random input of the
model's input size: a batch of 32 frames, or one window), and ``extract()`` end to end on a sample video with
the model's default sampling (decoding, preprocessing and the model overlapped), with its count of inputs.

    python bench/models.py                      # CPU, the 19.62 fps sample
    python bench/models.py --device cuda:0
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
from extractors import extractor_class  # noqa: E402
from tests.checkpoints import write_random_checkpoint  # noqa: E402

CASES = {  # feature type -> (options, model input shape for one input)
    "resnet50": ({"extract_method": "fix_1"}, (3, 224, 224)),
    "resnet152": ({"extract_method": "fix_1"}, (3, 224, 224)),
    "r21d": ({}, (16, 3, 112, 112)),
    "s3d": ({}, (64, 3, 224, 224)),
    "resnext101_3d": ({}, (16, 3, 112, 112)),
}


def write_weights(folder: Path) -> None:
    """Random weights under the official file names, where ``--weights_dir`` finds them."""
    for kind, name in (("resnet", "resnet50"), ("resnet", "resnet152"), ("r21d", "r2plus1d_18_16_kinetics"),
                       ("s3d", "kinetics"), ("resnext101_3d", "howto100m")):
        write_random_checkpoint(kind, name, folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", default=str(ROOT / "sample" / "v_GGSY1Qvo990.mp4"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", nargs="+", choices=CASES, default=list(CASES))
    args = parser.parse_args()
    device = torch.device(args.device)
    device_options = {"cpu": True} if device.type == "cpu" else {"device_ids": [device.index or 0]}
    print(f"{platform.node()} | torch {torch.__version__} | {torch.get_num_threads()} threads | {device} | "
          f"{Path(args.video).name}")
    print("| model | model-only ms per input | inputs (batch) | end-to-end s | inputs | inputs/s |")
    print("| --- | ---: | --- | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as folder:
        write_weights(Path(folder))
        for feature_type in args.only:
            options, shape = CASES[feature_type]
            extractor = extractor_class(feature_type)(
                dict(feature_type=feature_type, weights_dir=folder, **device_options, **options))
            batch = extractor.inputs_per_batch
            inputs = torch.randn(batch, *shape, device=device)
            with torch.inference_mode():
                seconds = median_seconds(lambda: extractor.forward(inputs), args.repeats, device)
            start = time.perf_counter()
            count = len(extractor.extract(args.video)["timestamps_ms"])
            total = time.perf_counter() - start
            print(f"| {feature_type} | {1000 * seconds / batch:.0f} | {shape} ({batch}) | {total:.1f} | {count} | "
                  f"{count / total:.1f} |")


if __name__ == "__main__":
    main()
