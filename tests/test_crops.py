"""--crops 5 and 10: each view's pixel region and mirroring, mirrored flow, the centre view, pooling over crops."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from extractors.catalog import write_random_weights
from extractors.models.i3d import I3D_WEIGHTS, ExtractI3D, crop_windows
from extractors.models.optical_flow import RAFT_WEIGHTS
from extractors.models.r21d import ExtractR21D
from extractors.models.resnet import ExtractResNet
from extractors.transforms import crop_views
from tests.clips import write_clip
from tests.conftest import SAMPLE_19FPS

HEIGHT, WIDTH, CROP_H, CROP_W = 9, 12, 4, 5


def marked_image() -> torch.Tensor:
    """(1, 9, 12) distinct values, with markers 1001..1004 in the top-left, top-right, bottom-left, bottom-right
    corners."""
    image = torch.arange(HEIGHT * WIDTH, dtype=torch.float32).view(1, HEIGHT, WIDTH)
    for marker, (row, column) in enumerate(((0, 0), (0, -1), (-1, 0), (-1, -1)), start=1001):
        image[0, row, column] = marker
    return image


def regions(image: torch.Tensor) -> list[torch.Tensor]:
    """Top-left, top-right, bottom-left, bottom-right and centre (torchvision rounds the centre's margins)."""
    top, left = int(round((HEIGHT - CROP_H) / 2)), int(round((WIDTH - CROP_W) / 2))
    return [image[..., :CROP_H, :CROP_W], image[..., :CROP_H, -CROP_W:], image[..., -CROP_H:, :CROP_W],
            image[..., -CROP_H:, -CROP_W:], image[..., top : top + CROP_H, left : left + CROP_W]]


def test_five_crops_are_the_corners_then_the_centre():
    image = marked_image()
    views = crop_views(image, (CROP_H, CROP_W), 5)
    for view, region in zip(views, regions(image)):
        assert torch.equal(view, region)
    assert [views[0][0, 0, 0], views[1][0, 0, -1], views[2][0, -1, 0], views[3][0, -1, -1]] == [1001, 1002, 1003, 1004]
    assert torch.equal(views[4], crop_views(image, (CROP_H, CROP_W), 1)[0])  # the centre is --crops 1


def test_ten_crops_add_the_same_five_of_the_mirrored_image():
    image = marked_image()
    views = crop_views(image, (CROP_H, CROP_W), 10)
    mirrored = image.flip(-1)
    for view, region in zip(views[5:], regions(mirrored)):
        assert torch.equal(view, region)
    assert torch.equal(views[5], views[1].flip(-1)) and torch.equal(views[6], views[0].flip(-1))  # corners swap
    assert views[5][0, 0, 0] == 1002 and views[6][0, 0, -1] == 1001
    assert torch.equal(views[7], views[3].flip(-1)) and torch.equal(views[8], views[2].flip(-1))


def test_mirrored_flow_views_have_negated_x():
    flow = torch.randn(2, 3, 2, 240, 300)  # (windows, time, x/y, H, W)
    views = crop_windows(flow, 10, flow=True).unflatten(0, (2, 10))
    rgb_like = crop_windows(flow, 10).unflatten(0, (2, 10))
    top_right = flow[..., :224, -224:]
    assert torch.equal(views[:, 1], top_right)  # unmirrored views are unchanged
    assert torch.equal(views[:, 5, :, 0], -top_right[:, :, 0].flip(-1))  # x negated
    assert torch.equal(views[:, 5, :, 1], top_right[:, :, 1].flip(-1))  # y kept
    assert torch.equal(rgb_like[:, 5], top_right.flip(-1))  # images are only mirrored
    assert torch.equal(views[:, :5], rgb_like[:, :5])


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("crop_weights")
    write_random_weights("resnet18", folder, 5)
    write_random_weights("r21d", folder, 6)
    I3D_WEIGHTS["rgb"].write_random(folder, seed=7)
    I3D_WEIGHTS["flow"].write_random(folder, seed=8)
    RAFT_WEIGHTS["small"]["C_T_V2"].write_random(folder)
    return folder


@pytest.mark.parametrize("crops", [5, 10])
def test_frame_model_centre_view_equals_one_crop_and_pool_averages_every_row(weights, crops):
    common = dict(feature_type="resnet18", cpu=True, weights_dir=str(weights), views=3)
    one = ExtractResNet(common).extract(SAMPLE_19FPS)["resnet"]
    many = ExtractResNet({**common, "crops": crops}).extract(SAMPLE_19FPS)["resnet"]
    pooled = ExtractResNet({**common, "crops": crops, "pool": "mean"}).extract(SAMPLE_19FPS)["resnet"]
    assert many.shape == (3, crops, 512)
    np.testing.assert_allclose(many[:, 4], one, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(pooled[0], many.reshape(-1, 512).mean(axis=0), rtol=1e-5, atol=1e-6)
    assert not np.allclose(many[:, 0], many[:, 4])  # the views differ


def test_clip_model_ten_crops(weights):
    common = dict(feature_type="r21d", cpu=True, weights_dir=str(weights), extraction_fps=4, views=1, stack_size=8)
    one = ExtractR21D(common).extract(SAMPLE_19FPS)["r21d"]
    ten = ExtractR21D({**common, "crops": 10}).extract(SAMPLE_19FPS)["r21d"]
    assert ten.shape == (1, 10, 512)
    np.testing.assert_allclose(ten[:, 4], one, rtol=1e-5, atol=1e-5)


def test_i3d_both_streams_ten_crops(weights, tmp_path):
    """Each stream's centre view equals --crops 1 (flow is computed on whole frames, then cropped)."""
    video = write_clip(tmp_path / "moving.mp4", num_frames=48, rate=16, size=(340, 256), noise=False)
    common = dict(feature_type="i3d", cpu=True, weights_dir=str(weights), stack_size=10, step_size=10,
                  extraction_fps=4, raft_model="small", raft_iters=2)
    one = ExtractI3D(common).extract(video)
    ten = ExtractI3D({**common, "crops": 10}).extract(video)
    for stream in ("rgb", "flow"):
        assert ten[stream].shape == (1, 10, 1024)
        np.testing.assert_allclose(ten[stream][:, 4], one[stream], rtol=1e-4, atol=1e-5)
