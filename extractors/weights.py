"""Descriptions of published checkpoints, the way torchvision's weight enums describe theirs.

Every published checkpoint is described once, by a :class:`Weights` entry in its family's module: official URL,
SHA-256, how to build the network it fits, how to feed that network, and what else its users need to know
(:class:`Meta`). A feature type's entries form a :class:`WeightsTable`, which names its default explicitly.
Finding, downloading and verifying the files is ``io_utils.checkpoints``' work.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from extractors.options import FrozenMapping
from io_utils.checkpoints import sha256_in_file_name
from io_utils.errors import UsageError


@dataclass(frozen=True)
class Meta:
    """What a checkpoint's users need to know beyond its tensors.

    ``labels``: the head's class names (None: no head, or names never published). ``fps``, ``stack_size``,
    ``step_size``: the sampling it was trained with, the defaults of ``--extraction_fps`` (None: every frame),
    ``--stack_size`` and ``--step_size`` (None: the stack size). ``input_range`` and ``channel_order``: what the
    network is fed, for the documentation and for checking a port against its publisher.
    """

    embed_dim: int | None = None
    labels: Sequence[str] | None = None
    fps: float | None = None
    stack_size: int | None = None
    step_size: int | None = None
    min_stack_size: int = 1
    input_range: str = ""
    channel_order: str = "RGB"


@dataclass(frozen=True)
class Weights:
    """One published checkpoint: where it is, how to build the network it fits, how to feed that network.

    ``sha256`` is the full digest, or its first hex digits where the publisher only gives those (torch hub
    file names such as ``raft_large_C_T_SKHT_V2-ff5fadd5.pth``), or None where no digest is published; then
    the digest of the downloaded file is printed so that it can be checked by hand. ``build`` returns the
    network with random weights and module names equal to the checkpoint's keys (after the family's renaming,
    for files whose keys need it), so the file loads with ``strict=True``; it also writes random checkpoints in
    the official format (``save_random``, default a plain state dict of :func:`lively` weights).
    ``preprocessing`` turns one RGB frame into one network input.
    """

    name: str
    url: str
    sha256: str | None
    build: Callable[[], torch.nn.Module] = field(compare=False)
    preprocessing: Callable[..., Any] | None = field(default=None, compare=False)
    meta: Meta = field(default_factory=Meta, compare=False)
    save_random: Callable[[torch.nn.Module, Path], None] | None = field(default=None, compare=False)

    @property
    def file_name(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    def write_random(self, folder: Path, seed: int = 0) -> Path:
        """A checkpoint of random weights in the official format, under the official file name in ``folder``
        (where ``--weights_dir`` finds it): it goes through exactly the loading path of a downloaded one."""
        torch.manual_seed(seed)
        path = folder / self.file_name
        path.parent.mkdir(parents=True, exist_ok=True)
        network = self.build()
        if self.save_random is not None:
            self.save_random(network, path)
        else:
            torch.save(lively(network).state_dict(), path)
        return path


class WeightsTable(FrozenMapping):
    """The published checkpoints one feature type can load, by ``--weights`` name, in the order they are listed;
    ``default`` names the one loaded when ``--weights`` is not given, and ``aliases`` are short names for some."""

    def __init__(self, entries: Sequence[Weights], default: str, aliases: Mapping[str, str] | None = None):
        super().__init__({entry.name: entry for entry in entries})
        if default not in self:
            raise ValueError(f"default weights {default!r} are not among {', '.join(self)}")
        self.default = default
        self.aliases = {alias: name for alias, name in (aliases or {}).items() if name in self}

    def names(self) -> list[str]:
        """Every name ``--weights`` takes: the default, the other entries, then the aliases."""
        return [self.default, *(name for name in self if name != self.default), *self.aliases]

    def choose(self, name: str | None, what: str, option: str = "weights") -> Weights:
        """The entry named ``name`` (or by an alias); the default for None. An unknown name is refused with the
        choices, naming ``--<option>`` and ``what`` it is for."""
        entry = self.get(self.aliases.get(name, name) if name is not None else self.default)
        if entry is None:
            raise UsageError(f"--{option} {name}: not available for {what}; choose one of {', '.join(self.names())}")
        return entry


@torch.no_grad()
def lively(network: torch.nn.Module) -> torch.nn.Module:
    """Random weights whose activations neither vanish nor explode through a deep network, as trained ones do:
    He-normal convolutions and linear layers, batch norms with statistics of their own. For networks written
    here: PyTorch's layer defaults let a deep I3D's features shrink to 1e-6 (torchvision's models initialise
    themselves, see :func:`torchvision_weights`)."""
    for module in network.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.weight.copy_(1.0 + 0.1 * torch.randn_like(module.weight))
            module.bias.copy_(0.1 * torch.randn_like(module.bias))
            module.running_mean.copy_(0.1 * torch.randn_like(module.running_mean))
            module.running_var.copy_(1.0 + torch.rand_like(module.running_var))
        elif isinstance(module, (torch.nn.modules.conv._ConvNd, torch.nn.Linear)):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            if module.bias is not None:
                module.bias.copy_(0.05 * torch.randn_like(module.bias))
    return network


def random_constants(network: torch.nn.Module) -> torch.nn.Module:
    """Parameters that a library initialises to one value (biases, norms, learnt queries) made random: in a
    random checkpoint, a loader that left one out would then change the features."""
    with torch.no_grad():
        for parameter in network.parameters():
            if parameter.numel() > 1 and bool((parameter == parameter.flatten()[0]).all()):
                parameter.add_(0.02 * torch.randn_like(parameter))
    return network


def torchvision_weights(member: Any, build: Callable[[], torch.nn.Module], preprocessing: Callable | None = None,
                        name: str | None = None, **meta: Any) -> Weights:
    """A torchvision weight enum member as a :class:`Weights` entry named ``name`` (default: the member's name);
    its file name carries the SHA-256 prefix. Its random checkpoint keeps torchvision's own initialisation."""
    return Weights(name or member.name, member.url, sha256_in_file_name(member.url), build, preprocessing, Meta(**meta),
                   save_random=save_state_dict)


def save_state_dict(network: torch.nn.Module, path: Path) -> None:
    torch.save(network.state_dict(), path)
