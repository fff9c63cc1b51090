"""Clip-level models (r21d, s3d, resnext101_3d): official checkpoint formats, windows, features, kylemin's S3D."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models.video import R2Plus1D_18_Weights, S3D_Weights, r2plus1d_18, s3d

from extractors.models.r21d import R21D_WEIGHTS, ExtractR21D
from extractors.models.resnext3d import RESNEXT101_WEIGHTS, ExtractResNeXt3D, ResNeXt3D
from extractors.models.s3d import S3D_WEIGHTS, ExtractS3D
from extractors.windows import STACK_SIZE, STEP_SIZE, read_frames
from io_utils.errors import UsageError, VideoError
from io_utils.video import VideoReader
from tests.checkpoints import official_keys
from tests.clips import write_clip
from tests.conftest import SAMPLE_19FPS

R21D_FILE = R21D_WEIGHTS["r2plus1d_18_16_kinetics"].file_name
S3D_FILE = "s3d-d76dad2f.pth"


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("video_weights")
    R21D_WEIGHTS["r2plus1d_18_16_kinetics"].write_random(folder, seed=5)
    assert S3D_WEIGHTS["KINETICS400_V1"].write_random(folder, seed=6).name == S3D_FILE
    RESNEXT101_WEIGHTS["howto100m"].write_random(folder, seed=7)
    return folder


@pytest.fixture(scope="module")
def frames_at_2fps() -> list[np.ndarray]:
    """The 37 frames on screen at k/2 s of the 18.1 s sample, from a full sequential decode."""
    with VideoReader(SAMPLE_19FPS) as video:
        all_frames = list(video.read_all())
    times = [frame.time_ms for frame in all_frames]
    return [all_frames[int(np.searchsorted(times, k * 500.0, side="right")) - 1] for k in range(37)]


def clip_input(transforms, frames) -> torch.Tensor:
    """(1, C, T, H, W): the weight enum's own transform on the window's frames."""
    return transforms(torch.from_numpy(np.stack([frame.rgb for frame in frames])).permute(0, 3, 1, 2))[None]


def test_r21d_windows_timestamps_and_features_equal_torchvision(weights, frames_at_2fps, capsys):
    extractor = ExtractR21D(dict(feature_type="r21d", cpu=True, weights_dir=str(weights), extraction_fps=2,
                                 show_pred=True))
    assert (extractor.config[STACK_SIZE], extractor.config[STEP_SIZE]) == (16, 16)
    features = extractor.extract(SAMPLE_19FPS)
    assert features["r21d"].shape == (2, 512)  # 37 frames: windows 0-15 and 16-31, the tail of 5 dropped
    times = [frame.time_ms for frame in frames_at_2fps]
    np.testing.assert_allclose(features["timestamps_ms"], [(times[0] + times[15]) / 2, (times[16] + times[31]) / 2])
    network = r2plus1d_18()
    network.load_state_dict(torch.load(weights / R21D_FILE))
    network.eval()
    window = clip_input(R2Plus1D_18_Weights.KINETICS400_V1.transforms(), frames_at_2fps[16:32])
    with torch.inference_mode():
        logits = network(window)
        network.fc = nn.Identity()
        expected = network(window)
    np.testing.assert_allclose(features["r21d"][1], expected[0].numpy(), rtol=1e-4, atol=1e-5)
    lines = [line for line in capsys.readouterr().out.splitlines() if " ms: " in line]
    top = R2Plus1D_18_Weights.KINETICS400_V1.meta["categories"][int(logits.argmax())]
    assert lines[1].split(": ", 1)[1].startswith(f"{top} (")


def test_ig65m_checkpoints_load_strictly_with_caffe2_widths(tmp_path):
    """The publisher's layout (middle widths 288/576/1152, eps 1e-3); 8-frame windows; from-scratch heads have
    no class names, so --show_pred is refused for them."""
    name = "r2plus1d_34_8_ig65m_from_scratch"
    R21D_WEIGHTS[name].write_random(tmp_path, seed=8)
    extractor = ExtractR21D(dict(feature_type="r21d", model_name=name, cpu=True, weights_dir=str(tmp_path), views=1))
    assert extractor.config[STACK_SIZE] == 8
    backbone = extractor.model["backbone"]
    assert backbone.layer3[0].conv2[0][0].weight.shape == (576, 256, 1, 3, 3)
    assert extractor.model["head"].out_features == 359
    assert all(m.eps == 1e-3 for m in backbone.modules() if isinstance(m, nn.BatchNorm3d))
    features = extractor.extract(SAMPLE_19FPS)
    assert features["r21d"].shape == (1, 512) and np.isfinite(features["r21d"]).all()
    with pytest.raises(UsageError, match=f"--show_pred: the classes of r21d {name} have no published names"):
        ExtractR21D(dict(feature_type="r21d", model_name=name, cpu=True, weights_dir=str(tmp_path), show_pred=True))
    with pytest.raises(UsageError, match="--weights r2plus1d_50: not available for r21d; choose one of"):
        ExtractR21D(dict(feature_type="r21d", model_name="r2plus1d_50", cpu=True))


def test_s3d_logits_equal_torchvisions_forward(weights, frames_at_2fps):
    extractor = ExtractS3D(dict(feature_type="s3d", cpu=True, weights_dir=str(weights), extraction_fps=2, stack_size=16))
    features = extractor.extract(SAMPLE_19FPS)
    assert features["s3d"].shape == (2, 1024)
    network = s3d()
    network.load_state_dict(torch.load(weights / S3D_FILE))
    network.eval()
    window = clip_input(S3D_Weights.KINETICS400_V1.transforms(), frames_at_2fps[:16])
    with torch.inference_mode():
        expected = network(window)
        ours = extractor.model["head"](torch.from_numpy(features["s3d"][:1]))
    np.testing.assert_allclose(ours.numpy(), expected.numpy(), rtol=1e-4, atol=1e-4)
    with pytest.raises(UsageError, match="--stack_size 8: s3d needs at least 14 frames per window"):
        ExtractS3D(dict(feature_type="s3d", cpu=True, weights_dir=str(weights), stack_size=8))


class _KyleminUnit(nn.Module):  # kylemin/S3D's BasicConv3d: conv, bn (eps 1e-3), ReLU
    def __init__(self, cin: int, cout: int, kernel, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv3d(cin, cout, kernel, stride, padding, bias=False)
        self.bn = nn.BatchNorm3d(cout, eps=1e-3)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


class _KyleminSep(nn.Module):  # kylemin/S3D's SepConv3d: spatial (1, k, k) then temporal (k, 1, 1)
    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, padding: int = 0):
        super().__init__()
        self.conv_s = nn.Conv3d(cin, cout, (1, k, k), (1, stride, stride), (0, padding, padding), bias=False)
        self.bn_s = nn.BatchNorm3d(cout, eps=1e-3)
        self.conv_t = nn.Conv3d(cout, cout, (k, 1, 1), (stride, 1, 1), (padding, 0, 0), bias=False)
        self.bn_t = nn.BatchNorm3d(cout, eps=1e-3)

    def forward(self, x):
        return torch.relu(self.bn_t(self.conv_t(torch.relu(self.bn_s(self.conv_s(x))))))


class _KyleminMixed(nn.Module):
    def __init__(self, cin: int, b0: int, b1: tuple[int, int], b2: tuple[int, int], b3: int):
        super().__init__()
        self.branch0 = nn.Sequential(_KyleminUnit(cin, b0, 1))
        self.branch1 = nn.Sequential(_KyleminUnit(cin, b1[0], 1), _KyleminSep(b1[0], b1[1], 3, padding=1))
        self.branch2 = nn.Sequential(_KyleminUnit(cin, b2[0], 1), _KyleminSep(b2[0], b2[1], 3, padding=1))
        self.branch3 = nn.Sequential(nn.MaxPool3d(3, 1, 1), _KyleminUnit(cin, b3, 1))

    def forward(self, x):
        return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)], 1)


class KyleminS3D(nn.Module):
    """kylemin/S3D's module layout and forward (``base``, ``fc``; pool [2, H, W], head, mean over time), written
    from that repository's description as the reference its checkpoint is run with."""

    def __init__(self):
        super().__init__()
        pool = nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1))
        mixed = [(192, 64, (96, 128), (16, 32), 32), (256, 128, (128, 192), (32, 96), 64),
                 (480, 192, (96, 208), (16, 48), 64), (512, 160, (112, 224), (24, 64), 64),
                 (512, 128, (128, 256), (24, 64), 64), (512, 112, (144, 288), (32, 64), 64),
                 (528, 256, (160, 320), (32, 128), 128), (832, 256, (160, 320), (32, 128), 128),
                 (832, 384, (192, 384), (48, 128), 128)]
        blocks = [_KyleminMixed(*widths) for widths in mixed]
        self.base = nn.Sequential(
            _KyleminSep(3, 64, 7, 2, 3), pool, _KyleminUnit(64, 64, 1), _KyleminSep(64, 192, 3, 1, 1), pool,
            *blocks[:2], nn.MaxPool3d(3, 2, 1), *blocks[2:7], nn.MaxPool3d(2, 2, 0), *blocks[7:])
        self.fc = nn.Sequential(nn.Conv3d(1024, 400, 1, bias=True))

    def forward(self, x):
        y = self.base(x)
        y = nn.functional.avg_pool3d(y, (2, y.size(3), y.size(4)), stride=1)
        return self.fc(y).flatten(2).mean(2)


def test_kylemin_s3d_checkpoint_maps_onto_torchvision_with_identical_outputs(tmp_path, frames_at_2fps):
    torch.manual_seed(9)
    reference = KyleminS3D().eval()
    for module in reference.modules():
        if isinstance(module, nn.BatchNorm3d):
            module.running_var.uniform_(0.5, 1.5)
            module.running_mean.normal_(0, 0.1)
    # As published in 2019: DataParallel names, no batch-norm counters, pre-1.6 (not zip) serialisation.
    state_dict = {f"module.{k}": v for k, v in reference.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state_dict, tmp_path / "S3D_kinetics400.pt", _use_new_zipfile_serialization=False)
    extractor = ExtractS3D(dict(feature_type="s3d", cpu=True, checkpoint=str(tmp_path / "S3D_kinetics400.pt"),
                                extraction_fps=2, stack_size=16, views=1))
    features = extractor.extract(SAMPLE_19FPS)
    window = frames_at_2fps[11:27]  # one view over 37 frames: the middle of the 22 possible starts
    as_kylemin = torch.stack([extractor.transform(frame.rgb) for frame in window], dim=1)
    pixels = torch.stack([torch.from_numpy(frame.rgb).permute(2, 0, 1) for frame in window])
    cropped = torch.nn.functional.interpolate(pixels.float(), size=(256, 256), mode="bilinear")[..., 16:240, 16:240]
    # kylemin's scaling, (2 * pixel - 255) / 255, on torchvision's resize and crop (uint8 rounding: 1 level)
    np.testing.assert_allclose(as_kylemin.transpose(0, 1).numpy(), (cropped * 2 - 255).numpy() / 255, atol=2.5 / 255)
    with torch.inference_mode():
        expected = reference(as_kylemin[None])
        ours = extractor.model["head"](torch.from_numpy(features["s3d"]))
    np.testing.assert_allclose(ours.numpy(), expected.numpy(), rtol=1e-4, atol=1e-4)


def test_resnext101_3d_loads_the_howto100m_format_and_equals_the_network(weights, frames_at_2fps):
    extractor = ExtractResNeXt3D(dict(feature_type="resnext101_3d", cpu=True, weights_dir=str(weights),
                                      extraction_fps=2))
    assert {k: list(v.shape) for k, v in extractor.model["backbone"].state_dict().items() if not k.startswith("fc.")} \
        == {k: v for k, v in official_keys("resnext101_3d").items() if not k.startswith("fc.")}
    assert extractor.model["head"].weight.shape == (400, 2048)
    features = extractor.extract(SAMPLE_19FPS)
    assert features["resnext101_3d"].shape == (2, 2048)
    network = ResNeXt3D()
    network.load_state_dict(torch.load(weights / "resnext101.pth"))
    network.eval()
    # HowTo100M input: short side 112 (320x240 -> 149x112), centre crop 112, 0..255 minus the Kinetics mean.
    window = torch.stack([extractor.transform(frame.rgb) for frame in frames_at_2fps[:16]], dim=1)
    assert window.shape == (3, 16, 112, 112)
    mean = torch.tensor([110.6, 103.2, 96.3]).view(3, 1, 1, 1)
    assert -mean.max() <= window.min() and window.max() <= 255 - mean.min()
    with torch.inference_mode():
        expected = network(window[None])
    np.testing.assert_allclose(features["resnext101_3d"][0], expected[0].numpy(), rtol=1e-4, atol=1e-5)


def test_too_short_videos_fail_alone_or_pad(weights, tmp_path):
    video = write_clip(tmp_path / "short.mp4", num_frames=10, rate=10, size=(128, 96))
    options = dict(feature_type="r21d", cpu=True, weights_dir=str(weights))
    with pytest.raises(VideoError, match="too short: fewer than the 16 frames of one window"):
        ExtractR21D(options).extract(video)
    padded = ExtractR21D({**options, "pad_last": True}).extract(video)
    assert padded["r21d"].shape == (1, 512)
    np.testing.assert_allclose(padded["timestamps_ms"], [450.0])  # centre of the 10 real frames, 0..900 ms
    with VideoReader(video) as reader:
        assert len(list(read_frames(reader, None))) == 10
