"""Where the time goes on a GPU, per model (random weights in the official formats), on a generated 720p clip:

- decode: the decoding thread alone (decode, RGB, preprocessing, the copy to the device), inputs per second;
- model fp32 / fp16: the model alone on batches of random inputs (fp16 under autocast), inputs per second;
- end-to-end: ``extract()`` with the two overlapped, inputs per second; during it, the GPU's busy fraction (NVML,
  sampled every 0.1 s) and the CPU cores the process used (its CPU time over the wall time);
- the same end-to-end with ``--preprocess_on_device``, for the models that have it;
- then the HowTo100M pair (resnet152 at 1 fps, resnext101_3d at 24 fps) end to end: each alone, and both from one
  decode (``--feature_type resnet152 resnext101_3d``), seconds, GPU busy and CPU cores.

One prepared script for a lent GPU machine: ``python bench/gpu.py`` (about 5 minutes on one GPU). Without CUDA it
says so and exits, unless ``--device cpu`` asks for a dry run of the same measurements (no GPU column).

    python bench/gpu.py --only CLIP-ViT-B/32 resnet50 r21d --minutes 1
    python bench/gpu.py --device cpu --only CLIP-ViT-B/32 --minutes 0.1 --repeats 1
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.flow import median_seconds  # noqa: E402
from bench.inputs import DATA, make_typical_clip  # noqa: E402
from bench.models import batch_size, input_shape  # noqa: E402
from extractors import JointExtractor, extractor_class, feature_types  # noqa: E402
from extractors.catalog import write_random_weights  # noqa: E402
from extractors.prefetch import Prefetcher  # noqa: E402
from extractors.registry import declared_options  # noqa: E402

DEFAULT_TYPES = ("CLIP-ViT-B/32", "CLIP-ViT-L/14", "resnet50", "r21d", "s3d", "resnext101_3d", "slowonly")
SHARED_DECODE_PAIR = ("resnet152", "resnext101_3d")


class BusySampler:
    """The GPU's utilisation (NVML through torch, else nvidia-smi), sampled every 0.1 s while in use."""

    def __init__(self, device: torch.device):
        self._device, self._samples, self._stop = device, [], threading.Event()

    def _read(self) -> float | None:
        try:
            return float(torch.cuda.utilization(self._device))
        except Exception:  # no pynvml: ask the driver's tool
            result = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                     "-i", str(self._device.index or 0)], capture_output=True, text=True)
            return float(result.stdout.strip()) if result.returncode == 0 else None

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            sample = self._read()
            if sample is not None:
                self._samples.append(sample)

    @contextmanager
    def sampling(self) -> Iterator[None]:
        thread = threading.Thread(target=self._run, daemon=True)
        thread.start()
        try:
            yield
        finally:
            self._stop.set()
            thread.join()

    def busy(self) -> str:
        return f"{sum(self._samples) / len(self._samples):.0f}%" if self._samples else "-"


def decode_rate(extractor, video: str) -> float:
    """Inputs per second of the decoding thread alone (what it hands the model, made ready on the device)."""
    job = extractor.video_job(video)
    prefetch = Prefetcher(extractor.batched_inputs, [job], lambda item: item,
                          lambda item: extractor.open_reader(item.path), extractor._prepared)
    start, count = time.perf_counter(), 0
    with torch.inference_mode():
        for kind, _, payload in prefetch:
            if kind == "batch":
                count += len(payload[1])
            elif kind == "error":
                raise payload
    prefetch.close()
    return count / (time.perf_counter() - start)


def model_rate(extractor, device: torch.device, repeats: int, half: bool) -> float:
    batch = batch_size(extractor)
    inputs = torch.randn(batch, *input_shape(extractor), device=device)
    autocast = torch.autocast(device.type, dtype=torch.float16, enabled=half)
    with torch.inference_mode(), autocast:
        seconds = median_seconds(lambda: extractor.forward(inputs), repeats, device)
    return batch / seconds


def end_to_end(extractor, video: str, device: torch.device) -> tuple[float, str, float]:
    """Inputs per second of ``extract()``, the GPU's busy fraction meanwhile, and the CPU cores used."""
    (count, wall), busy, cores = timed(lambda: len(extractor.extract(video)["timestamps_ms"]), device)
    return count / wall, busy, cores


def timed(work, device: torch.device) -> tuple[tuple[object, float], str, float]:
    """``work()``'s result and wall seconds, the GPU's busy fraction meanwhile, and the CPU cores used."""
    sampler = BusySampler(device) if device.type == "cuda" else None
    cpu_before, start = os.times(), time.perf_counter()
    with sampler.sampling() if sampler else _nothing():
        result = work()
    wall, cpu_after = time.perf_counter() - start, os.times()
    cores = (cpu_after.user + cpu_after.system - cpu_before.user - cpu_before.system) / wall
    return (result, wall), sampler.busy() if sampler else "-", cores


def shared_decode_pair(video: str, device: torch.device, device_options: dict, folder: str) -> None:
    """The HowTo100M pair end to end: each type alone, then both from one decode of the clip."""
    print("\n| HowTo100M pair | seconds | GPU busy | CPU cores used |\n| --- | ---: | ---: | ---: |")
    for kind in SHARED_DECODE_PAIR:
        write_random_weights(kind, Path(folder))
    runs = {f"{kind} alone": extractor_class(kind)(dict(feature_type=kind, weights_dir=folder, **device_options),
                                                    external_call=True)
            for kind in SHARED_DECODE_PAIR}
    runs["both from one decode"] = JointExtractor(dict(feature_type=list(SHARED_DECODE_PAIR), weights_dir=folder,
                                                       **device_options), external_call=True)
    for label, extractor in runs.items():
        (_, wall), busy, cores = timed(lambda: extractor.extract(video), device)
        print(f"| {label} | {wall:.1f} | {busy} | {cores:.1f} |", flush=True)


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--only", nargs="+", choices=feature_types(), default=list(DEFAULT_TYPES), metavar="TYPE")
    parser.add_argument("--minutes", type=float, default=1.0, help="length of the generated 720p clip")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no_pair", action="store_true", help="leave out the shared-decode pair")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench/gpu.py: no CUDA device here; nothing measured (--device cpu runs the same steps on the CPU)")
        return
    video = str(make_typical_clip(DATA / f"typical_720p_{args.minutes:g}min.mp4", args.minutes))
    device_options = {"cpu": True} if device.type == "cpu" else {"device_ids": [device.index or 0]}
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{platform.node()} | {name} | torch {torch.__version__} | {os.cpu_count()} cores | {Path(video).name}")
    print("| model | decode inputs/s | model fp32 inputs/s | model fp16 inputs/s | end-to-end inputs/s | GPU busy | "
          "CPU cores used |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as folder:
        for feature_type in args.only:
            write_random_weights(feature_type, Path(folder))
            family = extractor_class(feature_type)
            variants = [("", {})]
            if "preprocess_on_device" in declared_options(family):
                variants.append((" --preprocess_on_device", {"preprocess_on_device": True}))
            for label, options in variants:
                extractor = family(dict(feature_type=feature_type, weights_dir=folder, **device_options, **options),
                                   external_call=True)
                decode = decode_rate(extractor, video)
                fp32 = model_rate(extractor, device, args.repeats, half=False)
                fp16 = model_rate(extractor, device, args.repeats, half=True) if device.type == "cuda" else None
                rate, busy, cores = end_to_end(extractor, video, device)
                print(f"| {feature_type}{label} | {decode:.0f} | {fp32:.0f} | {f'{fp16:.0f}' if fp16 else '-'} | "
                      f"{rate:.0f} | {busy} | {cores:.1f} |", flush=True)
        if not args.no_pair:
            shared_decode_pair(video, device, device_options, folder)


if __name__ == "__main__":
    main()
