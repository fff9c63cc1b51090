"""OpenAI's CLIP (``CLIP-*``): the nine pairs OpenAI released, built by open_clip.

They are loaded from OpenAI's own release files: TorchScript archives; fine-tuned ones (CLIP4Clip and the like)
are often plain state dicts, sometimes with a ``module.`` or ``clip.`` prefix. Both load through the same path:
read a state dict, let open_clip build the matching architecture from its tensor shapes, load it. Everything
else (frames, the text tower for ``--show_pred``) is the image-text families' (``extractors/models/image_text.py``).
"""
from __future__ import annotations

import warnings
from functools import partial
from pathlib import Path

import torch

from extractors.engine_options import CHECKPOINT
from extractors.frame_wise import FrameWiseExtractor
from extractors.models.image_text import (PRED_TEXTS, ImageTextExtractor, built_without_weights,
                                          open_clip_preprocessing)
from extractors.predictions import SHOW_PRED
from extractors.registry import FeatureType, ModelDocs, register
from extractors.transforms import CROPS, FAST_RESIZE, PREPROCESS_ON_DEVICE, FramePreprocessing
from extractors.weights import Meta, Weights, WeightsTable
from io_utils.errors import UsageError

_OPENAI = "https://openaipublic.azureedge.net/clip/models"
# OpenAI's normalisation constants (open_clip.constants.OPENAI_DATASET_MEAN / _STD).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# Scalars that OpenAI's TorchScript archives carry beside the weights.
_OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")


def clip_preprocessing(size: int, pil: bool = True) -> FramePreprocessing:
    """OpenAI's CLIP transform: bicubic resize of the short side of a PIL image, centre crop, CLIP mean/std."""
    return open_clip_preprocessing(dict(size=size, mean=CLIP_MEAN, std=CLIP_STD, interpolation="bicubic",
                                        resize_mode="shortest"), pil)


def _open_clip_model(name: str) -> torch.nn.Module:
    import open_clip  # imported here: it pulls in timm and the HF hub, seconds that --help need not wait

    with built_without_weights():
        return open_clip.create_model(name, pretrained=None, force_quick_gelu=True)


def _openai(sha256: str, open_clip_name: str, image_size: int, embed_dim: int) -> Weights:
    """OpenAI publishes each checkpoint under its own SHA-256, as a TorchScript archive of fp16 weights."""
    return Weights("openai", f"{_OPENAI}/{sha256}/{open_clip_name}.pt", sha256, partial(_open_clip_model, open_clip_name),
                   clip_preprocessing(image_size), Meta(embed_dim=embed_dim, input_range="(RGB / 255 - mean) / std"),
                   save_random=lambda model, path: save_openai_archive(model, path))


CLIP_WEIGHTS: dict[str, Weights] = {
    "CLIP-RN50": _openai("afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762", "RN50", 224, 1024),
    "CLIP-RN101": _openai("8fa8567bab74a42d41c5915025a8e4538c3bdbe8804a470a72f30b0d94fab599", "RN101", 224, 512),
    "CLIP-RN50x4": _openai("7e526bd135e493cef0776de27d5f42653e6b4c8bf9e0f653bb11773263205fdd", "RN50x4", 288, 640),
    "CLIP-RN50x16": _openai("52378b407f34354e150460fe41077663dd5b39c54cd0bfd2b27167a4a06ec9aa", "RN50x16", 384, 768),
    "CLIP-RN50x64": _openai("be1cfb55d75a9666199fb2206c106743da0f6468c9d327f3e0d0a543a9919d9c", "RN50x64", 448, 1024),
    "CLIP-ViT-B/32": _openai("40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af", "ViT-B-32", 224, 512),
    "CLIP-ViT-B/16": _openai("5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f", "ViT-B-16", 224, 512),
    "CLIP-ViT-L/14": _openai("b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836", "ViT-L-14", 224, 768),
    "CLIP-ViT-L/14@336px": _openai(
        "3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02", "ViT-L-14-336px", 336, 768
    ),
}


class ExtractCLIP(ImageTextExtractor):
    """OpenAI's CLIP models from OpenAI's release files; fp16 weights on CUDA, fp32 on the CPU."""

    key = "clip"
    docs = ModelDocs("CLIP", "clip.md", "OpenAI CLIP image embeddings of sampled frames",
                     "frames", "`clip`, 512-1024")
    options = (*FrameWiseExtractor.options, CHECKPOINT.formerly("clip_checkpoint"), CROPS, FAST_RESIZE,
               PREPROCESS_ON_DEVICE, SHOW_PRED, PRED_TEXTS)

    def load_model(self) -> tuple[torch.nn.Module, FramePreprocessing]:
        import open_clip

        path = self.checkpoint_file()
        state_dict = load_openai_state_dict(path)
        half = self.device.type == "cuda"
        try:
            model = open_clip.model.build_model_from_openai_state_dict(state_dict, cast_dtype=torch.float16 if half else None)
        except (KeyError, RuntimeError) as error:
            raise UsageError(f"{path}: not an OpenAI-format CLIP checkpoint ({error})") from error
        size: int = model.visual.image_size[0] if isinstance(model.visual.image_size, tuple) else model.visual.image_size
        return self.image_tower(model if half else model.float()), clip_preprocessing(size, pil=not self.config[FAST_RESIZE])

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        import open_clip

        return open_clip.tokenize(texts, context_length=self.model.context_length)


def load_openai_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a TorchScript archive or a (possibly wrapped or prefixed) state dict."""
    if not path.is_file():
        raise UsageError(f"CLIP checkpoint {path}: no such file")
    try:
        with warnings.catch_warnings():  # TorchScript is deprecated, but it is the format OpenAI published
            warnings.simplefilter("ignore", FutureWarning)
            return torch.jit.load(str(path), map_location="cpu").state_dict()
    except RuntimeError:
        pass  # not TorchScript: a pickled state dict
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several unrelated types for unreadable files
        raise UsageError(f"CLIP checkpoint {path}: cannot be read ({type(error).__name__}: {error})") from error
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict):
        raise UsageError(f"CLIP checkpoint {path}: holds a {type(loaded).__name__}, not a state dict")
    return _strip_prefixes(loaded)


def _strip_prefixes(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``module.`` (DataParallel) and ``clip.`` (CLIP4Clip, whose other modules are dropped)."""
    state_dict = {key.removeprefix("module."): value for key, value in state_dict.items()}
    if any(key.startswith("clip.") for key in state_dict):
        state_dict = {key.removeprefix("clip."): value for key, value in state_dict.items() if key.startswith("clip.")}
    return state_dict


def save_openai_archive(model: torch.nn.Module, path: Path) -> None:
    """``model`` (an open_clip CLIP) as OpenAI released CLIP: a TorchScript archive of fp16 weights with the
    scalars OpenAI's loader reads."""
    import open_clip

    open_clip.model.convert_weights_to_fp16(model)
    state_dict = {key: value for key, value in model.state_dict().items() if key != "attn_mask"}
    size = model.visual.image_size
    extras = (size[0] if isinstance(size, tuple) else size, model.context_length, model.vocab_size)
    state_dict.update({key: torch.tensor(value) for key, value in zip(_OPENAI_EXTRA_KEYS, extras)})
    root = _Holder()
    for key, tensor in state_dict.items():
        *parents, leaf = key.split(".")
        module = root
        for name in parents:
            if not hasattr(module, name):
                module.add_module(name, _Holder())
            module = getattr(module, name)
        module.register_buffer(leaf, tensor.clone())
    with warnings.catch_warnings():  # TorchScript is deprecated, but it is the format OpenAI published
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(root), str(path))


class _Holder(torch.nn.Module):
    def forward(self) -> int:
        return 0


register(*(FeatureType(name, ExtractCLIP, WeightsTable([weights], default="openai"))
           for name, weights in CLIP_WEIGHTS.items()))
