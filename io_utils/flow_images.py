"""Flow fields as images: the grayscale JPEG pairs that two-stream models read, and colour-wheel pictures.

JPEG layout (the one denseflow and the TSN/I3D tool chains use): for the k-th pair of frames (1-based),
``flow_x_0000k.jpg`` and ``flow_y_0000k.jpg``, each pixel ``round(128 + 255 / (2 * bound) * clip(flow))``.
JPEGs are written at quality 100, so reading back is within about one grey level (``bound / 127.5``) of
the clipped flow.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from io_utils.errors import VideoError

DEFAULT_BOUND = 20.0
JPEG_QUALITY = 100


def flow_image_names(index: int) -> tuple[str, str]:
    """File names of the ``index``-th pair (1-based)."""
    return f"flow_x_{index:05d}.jpg", f"flow_y_{index:05d}.jpg"


def flow_to_gray(flow: np.ndarray, bound: float) -> tuple[np.ndarray, np.ndarray]:
    """(2, H, W) float flow -> x and y images, (H, W) uint8 each."""
    scaled = np.clip(flow, -bound, bound) * (255.0 / (2.0 * bound)) + 128.0
    gray = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return gray[0], gray[1]


def gray_to_flow(x: np.ndarray, y: np.ndarray, bound: float) -> np.ndarray:
    """Inverse of :func:`flow_to_gray`: (2, H, W) float32."""
    gray = np.stack([x, y]).astype(np.float32)
    return (gray - 128.0) * np.float32(2.0 * bound / 255.0)


def write_flow_jpegs(folder: Path, index: int, flow: np.ndarray, bound: float) -> None:
    for name, image in zip(flow_image_names(index), flow_to_gray(flow, bound)):
        _write_image(folder / name, image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])


def read_flow_jpegs(folder: Path, index: int, bound: float) -> np.ndarray:
    """The ``index``-th flow field of a folder in the JPEG layout, (2, H, W) float32."""
    images = []
    for name in flow_image_names(index):
        image = cv2.imread(str(folder / name), cv2.IMREAD_GRAYSCALE)
        if image is None:
            raise VideoError(f"precomputed flow: {folder / name} is missing or unreadable")
        images.append(image)
    if images[0].shape != images[1].shape:
        raise VideoError(f"precomputed flow: {flow_image_names(index)} in {folder} differ in size")
    return gray_to_flow(*images, bound)


def count_flow_pairs(folder: Path) -> int:
    return len(list(folder.glob("flow_x_*.jpg")))


def write_flow_png(folder: Path, index: int, flow: np.ndarray) -> None:
    """A colour-wheel picture of one flow field, ``flow_0000k.png``."""
    _write_image(folder / f"flow_{index:05d}.png", flow_to_color(flow)[..., ::-1], [])


def flow_to_color(flow: np.ndarray, max_magnitude: float | None = None) -> np.ndarray:
    """(2, H, W) flow -> (H, W, 3) uint8 RGB: hue is the direction, saturation the magnitude.

    The Middlebury colour wheel (Baker et al., 2011): 55 hues in six ramps, red (motion to the right) through
    yellow, green, cyan, blue and magenta. Magnitudes are divided by ``max_magnitude`` (default: the largest
    in the field), so the fastest motion is fully saturated and no motion is white.
    """
    u, v = flow[0].astype(np.float64), flow[1].astype(np.float64)
    magnitude = np.hypot(u, v)
    scale = max_magnitude or max(float(magnitude.max()), 1e-9)
    wheel = _color_wheel()
    angle = np.arctan2(-v, -u) / np.pi  # in [-1, 1]
    position = (angle + 1) / 2 * (len(wheel) - 1)
    low = np.floor(position).astype(int)
    high = (low + 1) % len(wheel)
    weight = (position - low)[..., None]
    color = (1 - weight) * wheel[low] + weight * wheel[high]  # in [0, 1]
    radius = np.minimum(magnitude / scale, 1.0)[..., None]
    color = 1 - radius * (1 - color)
    return np.rint(color * 255).astype(np.uint8)


def _color_wheel() -> np.ndarray:
    """(55, 3) RGB in [0, 1]: ramps of 15, 6, 4, 11, 13 and 6 steps between the six primary hues."""
    ramps = [(15, (1, 0, 0), (1, 1, 0)), (6, (1, 1, 0), (0, 1, 0)), (4, (0, 1, 0), (0, 1, 1)),
             (11, (0, 1, 1), (0, 0, 1)), (13, (0, 0, 1), (1, 0, 1)), (6, (1, 0, 1), (1, 0, 0))]
    rows = [np.outer(1 - np.arange(steps) / steps, start) + np.outer(np.arange(steps) / steps, end)
            for steps, start, end in ramps]
    return np.concatenate(rows)


def _write_image(path: Path, image: np.ndarray, params: list[int]) -> None:
    ok, encoded = cv2.imencode(path.suffix, image, params)
    if not ok:
        raise OSError(f"could not encode {path.name}")
    path.write_bytes(encoded.tobytes())
