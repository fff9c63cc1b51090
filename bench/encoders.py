"""Model-only time per input of the transformers encoders that ``--feature_type transformers`` runs, at the sizes
of their published base models (transformers' default configurations, random weights): one window, frame or
audio example through the tool's own forward (the documented embedding), batch 1, median of ``--repeats`` passes
after one warm-up.

    python bench/encoders.py                    # CPU; about 5 minutes on 2 cores
    python bench/encoders.py --only dinov3 ast
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

from extractors.models.transformers_models import ExtractTransformers  # noqa: E402
from tests.conftest import SAMPLE_19FPS  # noqa: E402

# name -> (architecture, its configuration's non-default values, processor class and values, what it is)
MODELS = {
    "videoprism": ("VideoPrismClipModel", {}, ("LlavaOnevisionVideoProcessor", dict(size={"height": 288, "width": 288})),
                   "VideoPrism LvT base, 16 x 288 px"),
    "xclip": ("XCLIPModel", {}, ("CLIPImageProcessor", {}), "X-CLIP base/32, 8 x 224 px"),
    "timesformer": ("TimesformerModel", {}, ("VideoMAEImageProcessor", {}), "TimeSformer base, 8 x 224 px"),
    "vivit": ("VivitModel", {}, ("VivitImageProcessor", {}), "ViViT base, 32 x 224 px"),
    "dinov3": ("DINOv3ViTModel", {}, ("DINOv3ViTImageProcessorFast", {}), "DINOv3 ViT-S/16, 224 px"),
    "siglip2": ("Siglip2Model", {}, ("Siglip2ImageProcessor", {}), "SigLIP 2 base/16, 256 patches"),
    "ast": ("ASTModel", {}, ("ASTFeatureExtractor", {}), "AST base, 10.24 s"),
    "whisper": ("WhisperModel", dict(d_model=384, encoder_layers=4, decoder_layers=4, encoder_attention_heads=6,
                                     decoder_attention_heads=6, encoder_ffn_dim=1536, decoder_ffn_dim=1536),
                ("WhisperFeatureExtractor", {}), "Whisper tiny encoder, 30 s"),
    "wav2vec2": ("Wav2Vec2Model", {}, ("Wav2Vec2FeatureExtractor", {}), "Wav2Vec2 base, 10 s"),
    "hubert": ("HubertModel", {}, ("Wav2Vec2FeatureExtractor", {}), "HuBERT base, 10 s"),
    "pe_video": ("PeVideoModel", {}, ("PeVideoVideoProcessor", dict(do_resize=True, size={"height": 336, "width": 336})),
                 "Perception Encoder video, default configuration, 8 frames"),
    "pe_audio": ("PeAudioModel", {}, ("PeAudioFeatureExtractor", {}), "Perception Encoder audio, default configuration"),
}
# Options for models whose files give no frame count (Perception Encoder video takes any).
OPTIONS = {"pe_video": dict(stack_size=8)}


def repository(name: str, folder: Path) -> Path:
    import transformers

    architecture, values, (processor, processor_values), _ = MODELS[name]
    network_class = getattr(transformers, architecture)
    configuration = network_class.config_class(**values)
    network_class(configuration).save_pretrained(folder)
    getattr(transformers, processor)(**processor_values).save_pretrained(folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=sorted(MODELS))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print("| model | what | input | ms per input |\n| --- | --- | --- | --- |")
    for name in args.only or MODELS:
        with tempfile.TemporaryDirectory() as scratch:
            folder = repository(name, Path(scratch))
            extractor = ExtractTransformers(dict(feature_type="transformers", model_name=str(folder), cpu=True,
                                                 batch_size=1, views=1, **OPTIONS.get(name, {})))
            with extractor.open_reader(SAMPLE_19FPS) as reader:
                item, _ = next(iter(extractor.model_inputs(reader, extractor.video_job(SAMPLE_19FPS))))
            batch = {key: value[None] for key, value in item.items()}
            shape = "x".join(map(str, next(iter(batch.values())).shape[1:]))
            seconds = []
            with torch.inference_mode():
                for _ in range(args.repeats + 1):
                    started = time.perf_counter()
                    extractor.forward(batch)
                    seconds.append(time.perf_counter() - started)
            what = MODELS[name][3]
            unit = {"video": "window", "image": "frame", "audio": "example"}[extractor.modality]
            print(f"| {name} | {what} | {unit} {shape} | {1000 * float(np.median(seconds[1:])):.0f} |", flush=True)


if __name__ == "__main__":
    main()
