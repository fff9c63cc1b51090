"""Frame preprocessing shared by the image and video models: resize, crop (one, three, five or ten), normalise.

Every model here preprocesses the same way, with its own constants: resize (the short side to a length, to a
fixed size, or keeping the aspect ratio to fit a box), crop (padding where the image is smaller), scale the
0..255 values, subtract a mean, divide by a standard deviation. Written once as :class:`FramePreprocessing`,
applied frame by frame as frames are decoded, with the same torchvision functional calls that the publishers'
transforms make, so that the results are the same tensors. Publishers differ in what they resize: torchvision's
weight transforms resize tensors, while OpenAI's CLIP, open_clip and timm resize PIL images, whose filters round
differently (up to a few grey levels); ``pil=True`` resizes a PIL image as they do.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF  # what torchvision's weight transforms call
from torchvision.transforms.v2 import functional as TF2  # what transformers' image processors call

from extractors.options import Option, Section, positive_int

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)  # torchvision's video models
KINETICS_STD = (0.22803, 0.22145, 0.216989)
CROP_CHOICES = (1, 3, 5, 10)  # see crop_views

CROPS = Option("crops", 1, "1: centre crop; 3: three crops along the long side; 5: four corners and centre; 10: "
               "those five and their mirror images (outputs get a crop axis, in the order of torchvision's TenCrop)",
               3, convert=int, choices=CROP_CHOICES, section=Section.OUTPUTS)
FAST_RESIZE = Option("fast_resize", False, "resize frames as tensors (antialiased), not as PIL images as the "
                     "publisher does: the inputs differ by up to about 10 grey levels, and it is no faster on the "
                     "CPU (bench/preprocess.py); off by default", True, section=Section.OUTPUTS)
PREPROCESS_ON_DEVICE = Option(
    "preprocess_on_device", False, "send the decoded uint8 frames to the model's device and resize, crop and "
    "normalise them there, in batches (on CUDA: pinned memory, a copy stream of its own, overlapping the model), "
    "leaving the CPU to decode; it resizes tensors, so for models whose publisher resizes PIL images it is "
    "--fast_resize's preprocessing (the inputs differ by up to about 10 grey levels); off by default", True,
    section=Section.OUTPUTS)
SIDE_SIZE = Option("side_size", None, "feed the whole frame resized to this short side, uncropped (default: the "
                   "model's own preprocessing; for flow, the frames' own size)", 128, convert=positive_int,
                   metavar="N")


@dataclass(frozen=True)
class FramePreprocessing:
    """One (H, W, 3) uint8 RGB frame -> (3, h, w) float32, or (crops, 3, h, w) for several crops.

    ``resize``: the short side's length (aspect ratio kept), or (height, width). With ``keep_ratio`` set,
    ``resize`` is a box (height, width) and the frame is scaled, aspect ratio kept, by a ratio between the one
    that fits its short side to the box (0.0) and the one that fits its long side (1.0), as timm's and
    open_clip's ``ResizeKeepRatio``. ``crop``: (height, width), or None for the whole resized frame; a crop
    larger than the resized frame pads it, centred, with ``fill`` (0..255, per channel or one value). Values
    become ``(pixel / divisor - mean) / std``. ``pil``: resize a PIL image (the reference pipelines of CLIP,
    open_clip and timm) instead of a tensor (torchvision's weight transforms). ``v2``: resize the tensor with
    ``torchvision.transforms.v2``, as transformers' image processors do; on uint8 frames it rounds differently
    from the v1 function that torchvision's weight transforms call (by a grey level or more).
    """

    resize: int | tuple[int, int]
    crop: tuple[int, int] | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    divisor: float = 255.0
    interpolation: InterpolationMode = InterpolationMode.BILINEAR
    antialias: bool = True
    keep_ratio: float | None = None
    fill: int | tuple[int, ...] = 0
    pil: bool = False
    v2: bool = False

    @classmethod
    def from_torchvision(cls, transforms: Any) -> FramePreprocessing:
        """The constants of a torchvision weight enum's transforms (``ImageClassification`` or
        ``VideoClassification``); video transforms resize without antialiasing, as the weights were trained."""
        resize = transforms.resize_size
        crop = transforms.crop_size
        return cls(resize=resize[0] if len(resize) == 1 else tuple(resize),
                   crop=(crop[0], crop[0]) if len(crop) == 1 else tuple(crop),
                   mean=tuple(transforms.mean), std=tuple(transforms.std), interpolation=transforms.interpolation,
                   antialias=getattr(transforms, "antialias", False) is not False)

    def __call__(self, rgb: np.ndarray | torch.Tensor, crops: int = 1) -> torch.Tensor:
        image = self.resized(rgb)
        if self.crop is None:
            return self._normalize(image)
        views = crop_views(self._padded(image), self.crop, crops)
        return self._normalize(views[0]) if crops == 1 else torch.stack([self._normalize(view) for view in views])

    def batch(self, frames: torch.Tensor, crops: int = 1) -> torch.Tensor:
        """(B, H, W, 3) uint8 RGB frames, on any device -> (B, 3, h, w) float32, or (B, crops, 3, h, w), on that
        device: the tensor path applied to the whole batch at once (``pil`` is not followed: PIL runs on the CPU
        only). Frame by frame on the CPU with ``pil`` off, it gives the same tensors as :meth:`__call__`."""
        images = frames.permute(0, 3, 1, 2)
        resize = TF2.resize if self.v2 else TF.resize
        images = resize(images, self._size(*images.shape[-2:]), interpolation=self.interpolation,
                        antialias=self.antialias)
        if self.crop is None:
            return self._normalize(images)
        views = crop_views(self._padded(images), self.crop, crops)
        return self._normalize(views[0]) if crops == 1 else torch.stack([self._normalize(view) for view in views], 1)

    def resized(self, rgb: np.ndarray | torch.Tensor) -> torch.Tensor:
        """The frame resized, as a (3, h, w) uint8 tensor."""
        if self.pil:
            array = rgb.permute(1, 2, 0).numpy() if isinstance(rgb, torch.Tensor) else rgb
            image = Image.fromarray(np.ascontiguousarray(array))
            return TF.pil_to_tensor(TF.resize(image, self._size(image.height, image.width),
                                              interpolation=self.interpolation))
        image = torch.from_numpy(rgb).permute(2, 0, 1) if isinstance(rgb, np.ndarray) else rgb
        resize = TF2.resize if self.v2 else TF.resize
        return resize(image, self._size(*image.shape[-2:]), interpolation=self.interpolation, antialias=self.antialias)

    def _size(self, height: int, width: int) -> list[int]:
        """``size`` for torchvision's ``resize``: one length for the short side, or (height, width)."""
        if self.keep_ratio is None:
            return [self.resize] if isinstance(self.resize, int) else list(self.resize)
        box_height, box_width = self.resize
        ratios = (height / box_height, width / box_width)
        ratio = max(ratios) * self.keep_ratio + min(ratios) * (1.0 - self.keep_ratio)
        return [round(height / ratio), round(width / ratio)]

    def _padded(self, image: torch.Tensor) -> torch.Tensor:
        """``image`` padded, centred, to at least the crop (left and top get the smaller half, as torchvision's
        ``center_crop`` pads)."""
        (height, width), (crop_height, crop_width) = image.shape[-2:], self.crop
        if height >= crop_height and width >= crop_width:
            return image
        out_height, out_width = max(height, crop_height), max(width, crop_width)
        canvas = torch.empty((*image.shape[:-2], out_height, out_width), dtype=image.dtype, device=image.device)
        canvas[:] = torch.tensor(self.fill, dtype=image.dtype, device=image.device).reshape(-1, 1, 1)
        top, left = (out_height - height) // 2, (out_width - width) // 2
        canvas[..., top : top + height, left : left + width] = image
        return canvas

    def _normalize(self, image: torch.Tensor) -> torch.Tensor:
        return TF.normalize(image.float() / self.divisor, list(self.mean), list(self.std))


def crop_views(image: torch.Tensor, size: Sequence[int], crops: int) -> list[torch.Tensor]:
    """The ``crops`` views of ``image`` (``(..., H, W)``), each of ``size`` (height, width).

    1: the centre. 3: :func:`three_crops`. 5: torchvision's ``FiveCrop`` order, top-left, top-right,
    bottom-left, bottom-right, centre. 10: torchvision's ``TenCrop``, those five and then the same five taken
    from the horizontally mirrored image (so view 5 is the mirror image of view 1's region, 6 of 0's, 7 of 3's,
    8 of 2's, 9 of 4's); :func:`mirrored_views` says which views are mirrored.
    """
    size = list(size)
    if crops == 1:
        return [TF.center_crop(image, size)]
    if crops == 3:
        return three_crops(image, size)
    if crops == 5:
        return list(TF.five_crop(image, size))
    if crops == 10:
        return list(TF.ten_crop(image, size))
    raise ValueError(f"{crops} crops: expected 1, 3, 5 or 10")


def mirrored_views(crops: int) -> range:
    """Which of :func:`crop_views`' views are mirror images (a flow field there must have its x negated)."""
    return range(5, 10) if crops == 10 else range(0)


def three_crops(image: torch.Tensor, size: Sequence[int]) -> list[torch.Tensor]:
    """Crops of ``size`` at the start, centre and end of the long side (MMAction2's ``ThreeCrop``), centred
    on the short side."""
    height, width = image.shape[-2:]
    crop_height, crop_width = size
    if width >= height:
        top = (height - crop_height) // 2
        lefts = [0, (width - crop_width) // 2, width - crop_width]
        return [image[..., top : top + crop_height, left : left + crop_width] for left in lefts]
    left = (width - crop_width) // 2
    tops = [0, (height - crop_height) // 2, height - crop_height]
    return [image[..., top : top + crop_height, left : left + crop_width] for top in tops]
