"""What preprocessing one frame costs, exact (a PIL image resized, as OpenAI's CLIP, open_clip and timm do) against
``--fast_resize`` (an antialiased tensor resize), and how far apart the two are.

Preprocessing runs in the decoding thread, beside the model: it slows a run only where decoding plus
preprocessing take longer than the model's forward pass. Frames come from the samples and from synthetic 720p and
1080p clips (made here with PyAV), one row per model input size and frame size.

    python bench/preprocess.py
"""
from __future__ import annotations

import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from extractors.models.clip import clip_preprocessing  # noqa: E402
from extractors.models.image_text import open_clip_preprocessing  # noqa: E402
from extractors.models.timm_models import timm_preprocessing  # noqa: E402
from extractors.transforms import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from io_utils.video import VideoReader  # noqa: E402
from tests.clips import write_clip  # noqa: E402

PREPROCESSING = {
    "CLIP ViT-B/32 (224, bicubic, short side)": clip_preprocessing(224),
    "SigLIP 2 B/16 (224, bicubic, squash)": open_clip_preprocessing(dict(size=224, mean=(0.5,) * 3, std=(0.5,) * 3,
                                                                         interpolation="bicubic", resize_mode="squash")),
    "DINOv2 (518, bicubic, crop_pct 1.0)": timm_preprocessing(dict(input_size=(3, 518, 518), crop_pct=1.0,
                                                                   interpolation="bicubic", mean=IMAGENET_MEAN,
                                                                   std=IMAGENET_STD)),
}


def frames(folder: Path) -> dict[str, list[np.ndarray]]:
    """Eight decoded frames of each frame size."""
    videos = {"320x240 sample": ROOT / "sample" / "v_GGSY1Qvo990.mp4", "480x360 sample": ROOT / "sample" / "v_ZNVhz7ctTq0.mp4",
              "1280x720": write_clip(folder / "720p.mp4", num_frames=8, size=(1280, 720), noise=False),
              "1920x1080": write_clip(folder / "1080p.mp4", num_frames=8, size=(1920, 1080), noise=False)}
    decoded = {}
    for label, path in videos.items():
        with VideoReader(path) as video:
            decoded[label] = [frame.rgb for _, frame in zip(range(8), video.read_all())]
    return decoded


def ms_per_frame(preprocess, images: list[np.ndarray], repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for image in images:
            preprocess(image)
        times.append((time.perf_counter() - start) / len(images))
    return 1000 * sorted(times)[len(times) // 2]


def main() -> None:
    torch.set_num_threads(1)  # the decoding thread's share
    print(f"{platform.node()} | torch {torch.__version__} | 1 thread")
    print("| preprocessing | frame | exact ms | fast ms | max abs difference (normalised) |")
    print("| --- | --- | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as folder:
        for frame_label, images in frames(Path(folder)).items():
            for label, exact in PREPROCESSING.items():
                fast = replace(exact, pil=False)
                difference = max(float((exact(image) - fast(image)).abs().max()) for image in images)
                print(f"| {label} | {frame_label} | {ms_per_frame(exact, images):.2f} | "
                      f"{ms_per_frame(fast, images):.2f} | {difference:.3f} |")


if __name__ == "__main__":
    main()
