"""What the tests know about official checkpoint formats, independently of the package: the key manifests of
``../shared/checkpoint_formats`` (copied into ``tests/checkpoint_formats``), princeton-vl's RAFT key names, and a
tiny CLIP in OpenAI's release format. Random checkpoints of the real models come from the package
(``extractors.catalog.write_random_weights``), through the :class:`~extractors.weights.Weights` entries."""
from __future__ import annotations

import json
from pathlib import Path

import open_clip
import torch

from extractors.models.clip import save_openai_archive

FORMATS_DIR = Path(__file__).resolve().parent / "checkpoint_formats"
FORMAT_FILES = {"i3d_rgb": "i3d_rgb_imagenet.json", "i3d_flow": "i3d_flow_imagenet.json", "pwc": "pwc_sniklaus_default.json",
                "resnext101_3d": "resnext101_3d_howto100m.json", "vggish": "vggish_harritaylor.json",
                "vggish_pca": "vggish_pca_params.json", "tsn": "mmaction_tsn_r50_kinetics400.json",
                "slowonly": "mmaction_slowonly_r50_kinetics400.json"}


def official_keys(name: str) -> dict[str, list[int]]:
    """Key -> shape of an official checkpoint, from ``../shared/checkpoint_formats``."""
    return json.loads((FORMATS_DIR / FORMAT_FILES[name]).read_text())


def write_tiny_clip(path: Path, seed: int = 0) -> Path:
    """A 2-layer, 64-wide ViT in OpenAI's release format, for tests where the model's size is irrelevant (the
    pool, resume, crashes): it loads in well under a second."""
    torch.manual_seed(seed)
    vision = open_clip.model.CLIPVisionCfg(layers=2, width=64, patch_size=32, image_size=224)
    text = open_clip.model.CLIPTextCfg(context_length=77, vocab_size=49408, width=64, heads=1, layers=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_openai_archive(open_clip.model.CLIP(32, vision, text, quick_gelu=True), path)
    return path


def princeton_raft_keys(model: str = "small") -> list[str]:
    """Every key of a princeton-vl RAFT checkpoint (``raft-small.pth`` / ``raft-sintel.pth``), written out from
    that repository's module layout: encoders ``fnet`` (instance norm, no parameters) and ``cnet`` (batch norm
    in the large model, none in the small one), residual blocks (bottleneck in the small model) whose stride-2
    shortcut norm is registered twice (``normK`` and ``downsample.1``), and the update block."""
    params, batch_norm = ("weight", "bias"), ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    convs_per_block = 3 if model == "small" else 2
    keys: list[str] = []
    for encoder in ("fnet", "cnet"):
        normed = encoder == "cnet" and model == "large"
        keys += [f"{encoder}.conv1.{p}" for p in params] + ([f"{encoder}.norm1.{p}" for p in batch_norm] if normed else [])
        for layer in (1, 2, 3):
            for block in (0, 1):
                prefix = f"{encoder}.layer{layer}.{block}"
                shortcut = layer > 1 and block == 0
                for k in range(1, convs_per_block + 1):
                    keys += [f"{prefix}.conv{k}.{p}" for p in params]
                    keys += [f"{prefix}.norm{k}.{p}" for p in batch_norm] if normed else []
                if shortcut:
                    keys += [f"{prefix}.downsample.0.{p}" for p in params]
                    if normed:
                        keys += [f"{prefix}.norm{convs_per_block + 1}.{p}" for p in batch_norm]
                        keys += [f"{prefix}.downsample.1.{p}" for p in batch_norm]
        keys += [f"{encoder}.conv2.{p}" for p in params]
    motion = ["convc1", "convf1", "convf2", "conv"] if model == "small" else ["convc1", "convc2", "convf1", "convf2", "conv"]
    gru = ["convz", "convr", "convq"] if model == "small" else [f"conv{g}{i}" for i in (1, 2) for g in "zrq"]
    heads = ["flow_head.conv1", "flow_head.conv2"] + ([] if model == "small" else ["mask.0", "mask.2"])
    for name in [f"encoder.{m}" for m in motion] + [f"gru.{g}" for g in gru] + heads:
        keys += [f"update_block.{name}.{p}" for p in params]
    return [f"module.{key}" for key in keys]
