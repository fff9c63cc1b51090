"""Throughput of an audio model (VGGish, CLAP), random weights: seconds of audio per second, decode-only against
model-only.

On a generated track (44.1 kHz stereo AAC in M4A, a tone with noise) of ``--minutes``:
- decode-only: PyAV decoding, resampling to the model's rate, mono, and the examples' inputs (VGGish's log-mel,
  CLAP's feature extractor): the decoding thread's work;
- model-only: the model on as many inputs of silence, in batches of ``--batch_size``;
- end-to-end: ``extract()`` (the two overlapped), with ``--vggish_postprocess`` off.

    python bench/audio.py                 # CPU, VGGish, a 10-minute track
    python bench/audio.py --feature_type clap --batch_size 8
    python bench/audio.py --device cuda:0
"""
from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.flow import median_seconds  # noqa: E402
from bench.inputs import make_audio_track  # noqa: E402
from extractors import extractor_class  # noqa: E402
from extractors.catalog import write_random_weights  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--feature_type", default="vggish", choices=("vggish", "clap"))
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    track = make_audio_track(args.minutes)
    device_options = {"cpu": True} if device.type == "cpu" else {"device_ids": [device.index or 0]}
    with tempfile.TemporaryDirectory() as folder:
        write_random_weights(args.feature_type, Path(folder))
        extractor = extractor_class(args.feature_type)(dict(feature_type=args.feature_type, weights_dir=folder,
                                                            batch_size=args.batch_size, **device_options),
                                                       external_call=True)
        start = time.perf_counter()
        with extractor.open_reader(track) as audio:
            examples = sum(1 for _ in extractor.model_inputs(audio, extractor.video_job(track)))
        decode = time.perf_counter() - start
        silence = np.zeros(extractor.example_span, np.float32)
        example = extractor.example_input(silence, slice(0, len(silence)))
        batch = example.expand(args.batch_size, *example.shape).contiguous().to(device)
        with torch.inference_mode():
            per_batch = median_seconds(lambda: extractor.forward(batch), 3, device)
        model = per_batch * examples / args.batch_size
        start = time.perf_counter()
        rows = len(extractor.extract(track)["timestamps_ms"])
        end_to_end = time.perf_counter() - start
    seconds = args.minutes * 60
    print(f"{platform.node()} | torch {torch.__version__} | {torch.get_num_threads()} threads | {device} | "
          f"{track.name}: {seconds:.0f} s, {examples} examples")
    print("| stage | s | audio s per s |\n| --- | ---: | ---: |")
    for name, spent in (("decode-only (decode, resample, log-mel)", decode), (f"model-only ({args.feature_type})", model),
                        (f"end-to-end ({rows} rows)", end_to_end)):
        print(f"| {name} | {spent:.1f} | {seconds / spent:.0f} |")


if __name__ == "__main__":
    main()
