"""Optical flow: RAFT against torchvision's own model, PWC-Net's pieces against plain definitions, flow outputs."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from torchvision.models.optical_flow import raft_large, raft_small

from extractors.models.optical_flow import PWC_WEIGHTS, RAFT_WEIGHTS, ExtractFlow, ExtractRAFT, flow_weights
from flow import load_flow_network
from flow.pwc import PWCNet, backward_warp, cost_volume
from flow.raft import convert_princeton_state_dict
from io_utils.errors import UsageError, VideoError
from io_utils.flow_images import flow_to_color, flow_to_gray, gray_to_flow, read_flow_jpegs, write_flow_jpegs
from tests.checkpoints import official_keys, princeton_raft_keys
from tests.clips import sequential_decode, write_clip

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def raft_weights(tmp_path_factory) -> Path:
    """A weights folder with a random raft_small checkpoint under torchvision's file name."""
    folder = tmp_path_factory.mktemp("raft_weights")
    RAFT_WEIGHTS["small"]["C_T_V2"].write_random(folder)
    return folder


RAFT_SMALL_FILE = RAFT_WEIGHTS["small"]["C_T_V2"].file_name


def random_raft_state_dict(model: str) -> dict[str, torch.Tensor]:
    """torchvision's RAFT state dict layout, random weights."""
    return (raft_small if model == "small" else raft_large)().state_dict()


@pytest.fixture(scope="module")
def moving_clip(tmp_path_factory) -> Path:
    return write_clip(tmp_path_factory.mktemp("flow") / "moving.mp4", num_frames=7, size=(192, 144), noise=False)


def frame_times_ms(path: Path) -> np.ndarray:
    """Each frame's presentation time after the first, in ms, from a plain sequential decode."""
    pts, _ = sequential_decode(path)
    with av.open(str(path)) as container:
        time_base = container.streams.video[0].time_base
    return np.asarray([float((p - pts[0]) * time_base * 1000) for p in pts])


def raft_args(weights: Path, **extra) -> dict:
    options = dict(feature_type="raft", cpu=True, raft_model="small", raft_iters=3, weights_dir=str(weights),
                   flow_batch_size=4)
    return {**options, **extra}


def test_raft_equals_torchvision_raft_on_the_same_frame_pairs(raft_weights, moving_clip):
    flow = ExtractRAFT(raft_args(raft_weights)).extract(moving_clip)
    _, frames = sequential_decode(moving_clip)
    model = raft_small()
    model.load_state_dict(torch.load(raft_weights / RAFT_SMALL_FILE))
    model.eval()
    images = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # 192x144: no padding
    with torch.inference_mode():
        expected = model(images[:-1], images[1:], num_flow_updates=3)[-1].numpy()
    assert flow["flow"].shape == (6, 2, 144, 192) and flow["flow"].dtype == np.float32
    np.testing.assert_allclose(flow["flow"], expected, atol=1e-4, rtol=1e-4)
    assert np.abs(expected).max() > 0.01  # a flow that is not trivially zero
    np.testing.assert_allclose(flow["timestamps_ms"], frame_times_ms(moving_clip)[1:])


def test_princeton_checkpoint_keys_convert_onto_torchvision_raft(tmp_path, raft_weights, moving_clip):
    """The key list is written out from princeton-vl's module layout, independently of the conversion."""
    for model in ("small", "large"):
        expected = set(random_raft_state_dict(model))
        assert set(convert_princeton_state_dict(dict.fromkeys(princeton_raft_keys(model)))) == expected
    torchvision_format = torch.load(raft_weights / RAFT_SMALL_FILE)
    source_of = convert_princeton_state_dict({key: key for key in princeton_raft_keys("small")})
    princeton_format = {source_of[key]: value for key, value in torchvision_format.items()}
    torch.save(princeton_format, tmp_path / "raft-small.pth")
    converted_flow = ExtractRAFT(raft_args(raft_weights, flow_checkpoint=str(tmp_path / "raft-small.pth"))).extract(moving_clip)
    reference_flow = ExtractRAFT(raft_args(raft_weights)).extract(moving_clip)
    np.testing.assert_array_equal(converted_flow["flow"], reference_flow["flow"])


def test_raft_checkpoint_for_another_model_is_a_clear_error(tmp_path, raft_weights):
    torch.save(random_raft_state_dict("small"), tmp_path / "small.pth")
    with pytest.raises(UsageError, match="not a RAFT checkpoint"):
        ExtractRAFT(raft_args(raft_weights, raft_model="large", flow_checkpoint=str(tmp_path / "small.pth")))
    with pytest.raises(UsageError, match="--raft_weights kitti: not available for raft_small"):
        flow_weights("raft", "small", "kitti", "raft_weights")
    assert flow_weights("raft", "large", "sintel", "raft_weights").url.endswith("raft_large_C_T_SKHT_V2-ff5fadd5.pth")


def test_pwc_loads_a_checkpoint_in_the_official_format_strictly(tmp_path):
    path = PWC_WEIGHTS["default"].write_random(tmp_path)
    network = load_flow_network("pwc", path)
    assert {key: list(value.shape) for key, value in network.pwc.state_dict().items()} == official_keys("pwc")
    state_dict = torch.load(tmp_path / "network-default.pytorch")
    del state_dict["moduleRefiner.moduleMain.12.bias"]
    torch.save(state_dict, tmp_path / "broken.pytorch")
    with pytest.raises(UsageError, match="not a PWC-Net checkpoint"):
        load_flow_network("pwc", tmp_path / "broken.pytorch")


def test_pwc_runs_at_any_size_and_rescales_flow_to_it():
    torch.manual_seed(0)
    network = PWCNet().eval()
    first, second = torch.rand(2, 1, 3, 50, 70)
    with torch.inference_mode():
        flow = network(first, second)
        raw = network.network_flow(*(torch.nn.functional.interpolate(x, size=(64, 128), mode="bilinear") for x in (first, second)))
    assert flow.shape == (1, 2, 50, 70)
    resized = torch.nn.functional.interpolate(raw, size=(50, 70), mode="bilinear")
    torch.testing.assert_close(flow[:, 0], 20.0 * resized[:, 0] * 70 / 128)
    torch.testing.assert_close(flow[:, 1], 20.0 * resized[:, 1] * 50 / 64)


def test_cost_volume_equals_a_naive_loop():
    torch.manual_seed(0)
    first, second = torch.randn(2, 2, 5, 7, 9)
    volume = cost_volume(first, second)
    expected = torch.zeros(2, 81, 7, 9)
    for b in range(2):
        for y in range(7):
            for x in range(9):
                for dy in range(-4, 5):
                    for dx in range(-4, 5):
                        if 0 <= y + dy < 7 and 0 <= x + dx < 9:
                            value = (first[b, :, y, x] * second[b, :, y + dy, x + dx]).sum() / 5
                            expected[b, (dy + 4) * 9 + dx + 4, y, x] = value
    torch.testing.assert_close(volume, expected)


def test_backward_warp_is_identity_for_zero_flow_and_a_shift_for_integer_flow():
    torch.manual_seed(0)
    image = torch.rand(1, 3, 10, 12)
    torch.testing.assert_close(backward_warp(image, torch.zeros(1, 2, 10, 12)), image)
    flow = torch.zeros(1, 2, 10, 12)
    flow[:, 0], flow[:, 1] = 2.0, -1.0  # output (y, x) samples input (y - 1, x + 2)
    warped = backward_warp(image, flow)
    torch.testing.assert_close(warped[:, :, 1:, :-2], image[:, :, :-1, 2:])
    assert warped[:, :, 0].abs().max() == 0 and warped[:, :, :, -2:].abs().max() == 0  # sampled from outside


def test_flow_jpegs_read_back_within_quantisation(tmp_path):
    y, x = np.mgrid[0:48, 0:64]
    flow = np.stack([30 * np.sin(x / 9.0), 25 * np.cos(y / 7.0)]).astype(np.float32)  # smooth, partly beyond +-20
    write_flow_jpegs(tmp_path, 3, flow, bound=20.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flow_x_00003.jpg", "flow_y_00003.jpg"]
    back = read_flow_jpegs(tmp_path, 3, bound=20.0)
    assert np.abs(back - np.clip(flow, -20, 20)).max() <= 20.0 / 255 + 1e-5
    gray = flow_to_gray(np.array([[[-20.0, 0.0, 20.0]], [[-40.0, 0.0, 40.0]]]), bound=20.0)
    assert gray[0].tolist() == [[0, 128, 255]] and gray[1].tolist() == [[0, 128, 255]]
    np.testing.assert_allclose(gray_to_flow(*gray, bound=20.0)[0, 0], [-128 * 40 / 255, 0, 127 * 40 / 255], rtol=1e-6)


def test_flow_colours_follow_the_wheel():
    right, up, still = ([[[1.0]], [[0.0]]], [[[0.0]], [[-1.0]]], [[[0.0]], [[0.0]]])
    assert flow_to_color(np.array(right)).tolist() == [[[255, 0, 0]]]  # motion to the right is red
    assert flow_to_color(np.array(still), max_magnitude=1.0).tolist() == [[[255, 255, 255]]]
    assert flow_to_color(np.array(up))[0, 0].tolist() != [255, 0, 0]


def test_flow_outputs_on_disk_equal_the_python_api(tmp_path, raft_weights, moving_clip):
    python_api = ExtractRAFT(raft_args(raft_weights, side_size=128)).extract(moving_clip)
    assert python_api["flow"].shape == (6, 2, 128, 170)
    common = ["--feature_type", "raft", "--cpu", "--raft_model", "small", "--raft_iters", "3", "--weights_dir",
              str(raft_weights), "--side_size", "128", "--video_paths", str(moving_clip), "--output_path", str(tmp_path)]
    for mode in ("save_numpy", "save_flow_images", "save_flow_viz"):
        result = subprocess.run([sys.executable, "main.py", *common, "--on_extraction", mode],
                                cwd=ROOT, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
    saved = np.load(tmp_path / "raft" / "moving_flow.npy")
    np.testing.assert_allclose(saved, python_api["flow"], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.load(tmp_path / "raft" / "moving_timestamps_ms.npy"), python_api["timestamps_ms"])
    images = tmp_path / "raft" / "moving"
    assert len(list(images.glob("flow_x_*.jpg"))) == len(list(images.glob("flow_y_*.jpg"))) == 6
    assert sorted(p.name for p in (tmp_path / "raft" / "moving_viz").iterdir()) == [f"flow_{k:05d}.png" for k in range(1, 7)]
    for index in (1, 6):
        back = read_flow_jpegs(images, index, bound=20.0)
        assert np.abs(back - np.clip(python_api["flow"][index - 1], -20, 20)).max() <= 3 * 20.0 / 255
    assert not list(tmp_path.rglob("*.tmp"))


def test_one_frame_or_tiny_video_is_a_clear_error(tmp_path, raft_weights, moving_clip):
    clip = write_clip(tmp_path / "single.mp4", num_frames=1, size=(64, 48))
    with pytest.raises(VideoError, match="optical flow needs at least 2 frames"):
        ExtractRAFT(raft_args(raft_weights)).extract(clip)
    with pytest.raises(VideoError, match="RAFT needs frames of at least 128x128 pixels, got 85x64"):
        ExtractRAFT(raft_args(raft_weights, side_size=64)).extract(moving_clip)


def test_flow_images_are_refused_for_feature_models(clip_checkpoint):
    from extractors import ExtractCLIP
    with pytest.raises(UsageError, match="writes optical flow"):
        ExtractCLIP(dict(feature_type="CLIP-ViT-B/32", cpu=True, clip_checkpoint=str(clip_checkpoint),
                         on_extraction="save_flow_images"))


def test_pwc_flow_equals_the_network_on_the_same_bgr_frames(tmp_path, moving_clip):
    PWC_WEIGHTS["default"].write_random(tmp_path)
    flow = ExtractFlow(dict(feature_type="pwc", cpu=True, weights_dir=str(tmp_path), flow_batch_size=6)).extract(moving_clip)
    network = PWCNet()
    network.load_state_dict(torch.load(tmp_path / "network-default.pytorch"))
    network.eval()
    _, frames = sequential_decode(moving_clip)
    bgr = torch.from_numpy(np.stack(frames)[..., ::-1].copy()).permute(0, 3, 1, 2).contiguous().float() / 255.0
    with torch.inference_mode():
        expected = network(bgr[:-1], bgr[1:]).numpy()
    assert flow["flow"].shape == (6, 2, 144, 192)
    np.testing.assert_allclose(flow["flow"], expected, rtol=1e-4, atol=1e-4)
    assert np.abs(expected).max() > 0.01
