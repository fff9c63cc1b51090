"""Random-initialised checkpoints in the official file formats, for tests and benchmarks.

They go through exactly the loading path of a downloaded checkpoint; their features mean nothing.
``python -m tests.checkpoints clip ViT-B-32 OUT.pt`` writes one (e.g. for a smoke run of main.py);
``python -m tests.checkpoints i3d rgb OUT_DIR`` (or ``flow``, or ``pwc default``, ``raft small``,
``resnet resnet18``, ``r21d r2plus1d_18_16_kinetics``, ``s3d kinetics``, ``resnext101_3d howto100m``) others.
"""
from __future__ import annotations

import json
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


FORMATS_DIR = Path(__file__).resolve().parent / "checkpoint_formats"  # copies of ../shared/checkpoint_formats
FORMAT_FILES = {"i3d_rgb": "i3d_rgb_imagenet.json", "i3d_flow": "i3d_flow_imagenet.json", "pwc": "pwc_sniklaus_default.json",
                "resnext101_3d": "resnext101_3d_howto100m.json"}


def official_keys(name: str) -> dict[str, list[int]]:
    """Key -> shape of an official checkpoint, from ``../shared/checkpoint_formats``."""
    return json.loads((FORMATS_DIR / FORMAT_FILES[name]).read_text())


def random_state_dict_from_format(name: str, seed: int = 0, scale: float = 0.05) -> dict[str, torch.Tensor]:
    """Random tensors under exactly the official keys and shapes; batch-norm statistics kept plausible so that
    activations neither vanish nor explode through deep networks."""
    generator = torch.Generator().manual_seed(seed)
    state_dict = {}
    for key, shape in official_keys(name).items():
        if key.endswith("num_batches_tracked"):
            state_dict[key] = torch.tensor(0)
        elif key.endswith("running_var"):
            state_dict[key] = 1.0 + torch.rand(shape, generator=generator)
        elif key.endswith(("bn.weight", "bn1.weight", "bn2.weight", "bn3.weight", "downsample.1.weight")):
            state_dict[key] = 1.0 + 0.1 * torch.randn(shape, generator=generator)
        elif key.endswith(("bn.bias", "bn1.bias", "bn2.bias", "bn3.bias", "downsample.1.bias", "running_mean")):
            state_dict[key] = 0.1 * torch.randn(shape, generator=generator)
        else:
            fan_in = max(1, int(torch.tensor(shape[1:]).prod())) if len(shape) > 1 else 1
            state_dict[key] = torch.randn(shape, generator=generator) * (scale if len(shape) == 1 else (2.0 / fan_in) ** 0.5)
    return state_dict


def write_random_i3d(folder: Path, stream: str, seed: int = 0) -> Path:
    """``rgb_imagenet.pt`` or ``flow_imagenet.pt``: a plain state dict, as piergiaj publishes them."""
    return _save(random_state_dict_from_format(f"i3d_{stream}", seed), folder / f"{stream}_imagenet.pt")


def write_random_pwc(folder: Path, seed: int = 0) -> Path:
    return _save(random_state_dict_from_format("pwc", seed), folder / "network-default.pytorch")


def write_random_resnext101(folder: Path, seed: int = 0) -> Path:
    """``resnext101.pth``: a plain state dict (the HowTo100M release), keys from the checkpoint format file."""
    return _save(random_state_dict_from_format("resnext101_3d", seed), folder / "resnext101.pth")


def write_random_torchvision(folder: Path, builder, file_name: str, seed: int = 0, **kwargs) -> Path:
    """A torchvision model's own state dict (random weights) under the weight enum's file name."""
    torch.manual_seed(seed)
    return _save(builder(**kwargs).state_dict(), folder / file_name)


def ig65m_state_dict(num_classes: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """ig65m-pytorch's R(2+1)D-34 layout: torchvision's VideoResNet keys for [3, 4, 6, 3] basic blocks, where
    the first block of layers 2-4 has Caffe2's middle widths in its second (2+1)D convolution, 288, 576 and
    1152 (torchvision would give 230, 460, 921), and a ``num_classes`` head."""
    from torchvision.models.video.resnet import BasicBlock, Conv2Plus1D, R2Plus1dStem, VideoResNet

    torch.manual_seed(seed)
    state_dict = VideoResNet(BasicBlock, [Conv2Plus1D] * 4, [3, 4, 6, 3], R2Plus1dStem, num_classes=num_classes).state_dict()
    for layer, width, middle in ((2, 128, 288), (3, 256, 576), (4, 512, 1152)):
        prefix = f"layer{layer}.0.conv2.0"
        state_dict[f"{prefix}.0.weight"] = torch.randn(middle, width, 1, 3, 3) * (2 / (width * 9)) ** 0.5
        for name in ("weight", "bias", "running_mean", "running_var"):
            state_dict[f"{prefix}.1.{name}"] = torch.rand(middle) + 0.5 if name in ("weight", "running_var") else torch.zeros(middle)
        state_dict[f"{prefix}.3.weight"] = torch.randn(width, middle, 3, 1, 1) * (2 / (middle * 3)) ** 0.5
    return state_dict


def random_raft_state_dict(model: str = "small", seed: int = 0) -> dict[str, torch.Tensor]:
    """torchvision's RAFT state dict layout, random weights."""
    from torchvision.models.optical_flow import raft_large, raft_small

    torch.manual_seed(seed)
    return (raft_small if model == "small" else raft_large)().state_dict()


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


def _save(state_dict: dict[str, torch.Tensor], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state_dict, path)
    return path


def write_random_checkpoint(kind: str, name: str, folder: Path) -> Path:
    """A random checkpoint for ``kind`` (i3d, pwc, raft, resnet, r21d, s3d, resnext101_3d) and ``name`` (the
    stream, variant or model), under its official file name in ``folder``, where ``--weights_dir`` finds it."""
    if kind == "i3d":
        return write_random_i3d(folder, name)
    if kind == "pwc":
        return write_random_pwc(folder)
    if kind == "raft":
        from flow.raft import raft_checkpoint
        return _save(random_raft_state_dict(name), folder / raft_checkpoint(name, None).file_name)
    if kind == "resnet":
        from extractors.resnet import RESNETS, resnet_weights
        from io_utils.weights import torchvision_checkpoint
        file_name = torchvision_checkpoint(resnet_weights(name, None)).file_name
        return write_random_torchvision(folder, RESNETS[name][0], file_name)
    if kind == "r21d":
        from torchvision.models.video import r2plus1d_18

        from extractors.r21d import R21D_MODELS
        model = R21D_MODELS[name]
        state_dict = r2plus1d_18().state_dict() if model.depth == 18 else ig65m_state_dict(model.num_classes)
        return _save(state_dict, folder / model.checkpoint.file_name)
    if kind == "s3d":
        from torchvision.models.video import s3d

        from extractors.s3d import ExtractS3D
        return write_random_torchvision(folder, s3d, ExtractS3D.published_checkpoint(None).file_name)
    if kind == "resnext101_3d":
        return write_random_resnext101(folder)
    raise ValueError(f"unknown checkpoint kind {kind!r}")


if __name__ == "__main__":
    kind, name, out = sys.argv[1:4]
    try:
        print(write_random_clip(Path(out), name) if kind == "clip" else write_random_checkpoint(kind, name, Path(out)))
    except ValueError as error:
        sys.exit(str(error))
