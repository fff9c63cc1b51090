"""Random-initialised checkpoints in the official file formats, for tests and benchmarks.

They go through exactly the loading path of a downloaded checkpoint; their features mean nothing.
``python -m tests.checkpoints clip ViT-B-32 OUT.pt`` writes one (e.g. for a smoke run of main.py).
"""
from __future__ import annotations

import sys
from pathlib import Path

import open_clip
import torch

# Scalars that OpenAI's TorchScript archives carry beside the weights.
_OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")


def random_clip_state_dict(model_name: str = "ViT-B-32", seed: int = 0) -> dict[str, torch.Tensor]:
    """The state dict of an OpenAI CLIP release, random weights: same keys, shapes and fp16 casting.

    ``model_name="tiny"`` is a 2-layer, 64-wide ViT in the same format, for tests where the model's size is
    irrelevant (the pool, resume, crashes): it loads in well under a second.
    """
    torch.manual_seed(seed)
    if model_name == "tiny":
        vision = open_clip.model.CLIPVisionCfg(layers=2, width=64, patch_size=32, image_size=224)
        text = open_clip.model.CLIPTextCfg(context_length=77, vocab_size=49408, width=64, heads=1, layers=1)
        model = open_clip.model.CLIP(32, vision, text, quick_gelu=True)
    else:
        model = open_clip.create_model(model_name, pretrained=None, force_quick_gelu=True)
    open_clip.model.convert_weights_to_fp16(model)
    state_dict = {key: value for key, value in model.state_dict().items() if key != "attn_mask"}
    size = model.visual.image_size
    extras = (size[0] if isinstance(size, tuple) else size, model.context_length, model.vocab_size)
    state_dict.update({key: torch.tensor(value) for key, value in zip(_OPENAI_EXTRA_KEYS, extras)})
    return state_dict


def write_torchscript_archive(state_dict: dict[str, torch.Tensor], path: Path) -> Path:
    """A TorchScript archive whose ``state_dict()`` is ``state_dict``, as OpenAI ships CLIP."""
    root = _Holder()
    for key, tensor in state_dict.items():
        *parents, leaf = key.split(".")
        module = root
        for name in parents:
            if not hasattr(module, name):
                module.add_module(name, _Holder())
            module = getattr(module, name)
        module.register_buffer(leaf, tensor.clone())
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(torch.jit.script(root), str(path))
    return path


def write_random_clip(path: Path, model_name: str = "ViT-B-32", seed: int = 0) -> Path:
    return write_torchscript_archive(random_clip_state_dict(model_name, seed), path)


class _Holder(torch.nn.Module):
    def forward(self) -> int:
        return 0


if __name__ == "__main__":
    kind, name, out = sys.argv[1:4]
    if kind != "clip":
        sys.exit(f"unknown checkpoint kind {kind!r}")
    print(write_random_clip(Path(out), name))
