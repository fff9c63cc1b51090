"""PWC-Net (Sun et al., 2018) in plain PyTorch, loading sniklaus' ``network-default.pytorch``.

The publisher computes the cost volume with a CuPy kernel, so it runs on CUDA only. Here the cost volume is
81 shifted products (displacements up to 4 pixels), which runs on any device. Module names follow the
checkpoint's keys (``moduleExtractor.moduleOne.0.weight``...), so it loads with ``strict=True``.

Input conventions of the publisher, kept here: BGR images in [0, 1]; the network sees them resized
(bilinear) to the next multiple of 64, and its flow (at 1/4 resolution, in units of 1/20 pixel) is resized
back to the input size and rescaled per axis.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

MAX_DISPLACEMENT = 4
_FEATURE_CHANNELS = (16, 32, 64, 96, 128, 196)  # the pyramid, levels 1 (1/2 resolution) to 6 (1/64)
_DENSE_OUTPUTS = (128, 128, 96, 64, 32)
_WARP_SCALE = {5: 0.625, 4: 1.25, 3: 2.5, 2: 5.0}  # flow in 1/20 px at level l+1 -> pixels at level l
_LEVEL_NAMES = ("One", "Two", "Thr", "Fou", "Fiv", "Six")


def _leaky() -> nn.LeakyReLU:
    return nn.LeakyReLU(negative_slope=0.1)


def _conv(in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=dilation, dilation=dilation)


class _Extractor(nn.Module):
    """Six levels of three 3x3 convolutions, the first of each with stride 2."""

    def __init__(self):
        super().__init__()
        channels = (3, *_FEATURE_CHANNELS)
        for name, (c_in, c_out) in zip(_LEVEL_NAMES, zip(channels, channels[1:])):
            self.add_module(f"module{name}", nn.Sequential(
                _conv(c_in, c_out, stride=2), _leaky(), _conv(c_out, c_out), _leaky(), _conv(c_out, c_out), _leaky()))

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        pyramid = []
        for level in self.children():
            image = level(image)
            pyramid.append(image)
        return pyramid


def _decoder_input_channels(level: int) -> int:
    """Cost volume, plus (below the top) the first image's features, the upsampled flow and features."""
    volume = (2 * MAX_DISPLACEMENT + 1) ** 2
    return volume if level == 6 else volume + _FEATURE_CHANNELS[level - 1] + 2 + 2


class _Decoder(nn.Module):
    """One pyramid level: cost volume -> densely connected convolutions -> flow at this level."""

    def __init__(self, level: int):
        super().__init__()
        self.level = level
        channels = _decoder_input_channels(level)
        if level < 6:
            previous = _decoder_input_channels(level + 1) + sum(_DENSE_OUTPUTS)
            self.moduleUpflow = nn.ConvTranspose2d(2, 2, 4, stride=2, padding=1)
            self.moduleUpfeat = nn.ConvTranspose2d(previous, 2, 4, stride=2, padding=1)
        for name, width in zip(_LEVEL_NAMES, _DENSE_OUTPUTS):
            self.add_module(f"module{name}", nn.Sequential(_conv(channels, width), _leaky()))
            channels += width
        self.moduleSix = nn.Sequential(_conv(channels, 2))

    def forward(self, first: torch.Tensor, second: torch.Tensor, previous: tuple[torch.Tensor, torch.Tensor] | None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        if previous is None:
            features = F.leaky_relu(cost_volume(first, second), 0.1)
        else:
            flow = self.moduleUpflow(previous[0])
            upsampled = self.moduleUpfeat(previous[1])
            warped = backward_warp(second, flow * _WARP_SCALE[self.level])
            features = torch.cat([F.leaky_relu(cost_volume(first, warped), 0.1), first, flow, upsampled], 1)
        for name in _LEVEL_NAMES[:5]:
            features = torch.cat([getattr(self, f"module{name}")(features), features], 1)
        return self.moduleSix(features), features


class _Refiner(nn.Module):
    """Dilated context network that adds a residual to the finest flow."""

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = []
        channels = _decoder_input_channels(2) + sum(_DENSE_OUTPUTS)
        for width, dilation in ((128, 1), (128, 2), (128, 4), (96, 8), (64, 16), (32, 1)):
            layers += [_conv(channels, width, dilation=dilation), _leaky()]
            channels = width
        layers.append(_conv(channels, 2))
        self.moduleMain = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.moduleMain(features)


class PWCNet(nn.Module):
    """``forward(first, second)``: two (B, 3, H, W) BGR images in [0, 1], any size -> (B, 2, H, W) flow in pixels."""

    def __init__(self):
        super().__init__()
        self.moduleExtractor = _Extractor()
        for level, name in zip(range(2, 7), _LEVEL_NAMES[1:]):
            self.add_module(f"module{name}", _Decoder(level))
        self.moduleRefiner = _Refiner()

    def forward(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        height, width = first.shape[-2:]
        size = (math.ceil(height / 64) * 64, math.ceil(width / 64) * 64)
        resized = [F.interpolate(image, size=size, mode="bilinear", align_corners=False) for image in (first, second)]
        flow = F.interpolate(self.network_flow(*resized), size=(height, width), mode="bilinear", align_corners=False)
        scale = flow.new_tensor([20.0 * width / size[1], 20.0 * height / size[0]]).view(1, 2, 1, 1)
        return flow * scale

    def network_flow(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """The network itself: sizes a multiple of 64 -> flow at 1/4 resolution, in units of 20 pixels."""
        pyramids = self.moduleExtractor(torch.cat([first, second]))
        estimate = None
        for level, name in zip(range(6, 1, -1), reversed(_LEVEL_NAMES[1:])):
            features_first, features_second = pyramids[level - 1].chunk(2)
            estimate = getattr(self, f"module{name}")(features_first, features_second, estimate)
        flow, features = estimate
        return flow + self.moduleRefiner(features)


def cost_volume(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Correlation of each pixel of ``first`` with the 9x9 neighbourhood of ``second`` (zero outside).

    Channel ``(dy + 4) * 9 + (dx + 4)`` holds ``mean_c first[c, y, x] * second[c, y + dy, x + dx]``, the
    layout of the publisher's kernel.
    """
    d = MAX_DISPLACEMENT
    height, width = first.shape[-2:]
    padded = F.pad(second, (d, d, d, d))
    products = [
        (first * padded[:, :, dy : dy + height, dx : dx + width]).mean(1)
        for dy in range(2 * d + 1)
        for dx in range(2 * d + 1)
    ]
    return torch.stack(products, 1)


def backward_warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample ``image`` at ``(x + u, y + v)``; pixels sampled partly from outside the image become zero.

    Coordinates are pixel centres (``align_corners=True`` on a pixel grid), so an integer flow is an exact
    shift. As the publisher does, a pixel counts as inside when more than 99.9% of its bilinear weight falls
    inside the image.
    """
    batch, _, height, width = image.shape
    ys, xs = torch.meshgrid(torch.arange(height, device=flow.device, dtype=flow.dtype),
                            torch.arange(width, device=flow.device, dtype=flow.dtype), indexing="ij")
    x = (xs + flow[:, 0]) * (2.0 / max(width - 1, 1)) - 1.0
    y = (ys + flow[:, 1]) * (2.0 / max(height - 1, 1)) - 1.0
    grid = torch.stack([x, y], dim=-1)
    ones = image.new_ones(batch, 1, height, width)
    sampled = F.grid_sample(torch.cat([image, ones], 1), grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    inside = (sampled[:, -1:] > 0.999).to(image.dtype)
    return sampled[:, :-1] * inside
