"""--views, --crops, --pool mean, --l2_normalize, --dtype float16, and the HowTo100M-style CSV run."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from torchvision.models import resnet18
from torchvision.models.video import r2plus1d_18

import main
from extractors.base import read_frames, uniform_window_starts, windows_at
from extractors.cli import complete_args
from extractors.registry import extractor_class
from extractors.r21d import R21D_MODELS, ExtractR21D
from extractors.resnet import ExtractResNet
from extractors.resnext3d import ExtractResNeXt3D
from io_utils.errors import UsageError
from io_utils.video import VideoReader
from tests.checkpoints import write_random_resnext101, write_random_torchvision
from tests.clips import write_clip
from tests.conftest import SAMPLE_19FPS


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("weights")
    write_random_torchvision(folder, resnet18, "resnet18-f37072fd.pth", seed=10)
    write_random_torchvision(folder, r2plus1d_18, R21D_MODELS["r2plus1d_18_16_kinetics"].checkpoint.file_name, seed=11)
    write_random_resnext101(folder, seed=12)
    return folder


def test_uniform_window_starts_and_windows_at():
    assert uniform_window_starts(100, 16, 4) == [10, 31, 53, 74]  # centres of 4 slices of the 85 possible starts
    assert uniform_window_starts(37, 16, 1) == [11]
    assert uniform_window_starts(10, 16, 3) == [0, 0, 0]  # shorter than a window: padded, all at the start
    items = [(index, f"frame{index}") for index in (2, 3, 4, 5, 6, 8, 9)]  # only what the windows need
    windows = list(windows_at(items, [2, 4, 8], 3))
    assert windows == [([(2, "frame2"), (3, "frame3"), (4, "frame4")], 3),
                       ([(4, "frame4"), (5, "frame5"), (6, "frame6")], 3),
                       ([(8, "frame8"), (9, "frame9"), (9, "frame9")], 2)]  # runs past the end: padded


def test_views_decode_only_their_windows_and_equal_a_sequential_decode(weights, monkeypatch):
    extractor = ExtractR21D(dict(feature_type="r21d", cpu=True, weights_dir=str(weights), extraction_fps=2, views=3))
    requested: list[int] = []
    read_at = VideoReader.read_at
    monkeypatch.setattr(VideoReader, "read_at", lambda self, targets: requested.append(len(targets)) or read_at(self, targets))
    with VideoReader(SAMPLE_19FPS) as video:
        windows = list(extractor.model_inputs(video))
    with VideoReader(SAMPLE_19FPS) as video:
        everything = [extractor.preprocess(frame.rgb) for frame in read_frames(video, 2)]  # 37 frames
    assert requested == [31, 37]  # the 3 windows cover frames 3..33: 31 of the 37
    for (window, time_ms), start in zip(windows, uniform_window_starts(37, 16, 3)):  # starts 3, 10, 17
        assert window.shape == (16, 3, 112, 112)
        np.testing.assert_array_equal(window.numpy(), np.stack(everything[start : start + 16]))


def test_pool_mean_then_l2_normalize_then_float16(weights):
    common = dict(feature_type="resnet18", cpu=True, weights_dir=str(weights), views=4, crops=3)
    rows = ExtractResNet(common).extract(SAMPLE_19FPS)
    pooled = ExtractResNet({**common, "pool": "mean", "l2_normalize": True, "dtype": "float16"}).extract(SAMPLE_19FPS)
    assert rows["resnet"].shape == (4, 3, 512)
    assert pooled["resnet"].shape == (1, 512) and pooled["resnet"].dtype == np.float16
    mean = rows["resnet"].reshape(12, 512).mean(axis=0)
    np.testing.assert_allclose(pooled["resnet"][0], mean / np.linalg.norm(mean), rtol=2e-3, atol=2e-4)
    np.testing.assert_allclose(pooled["timestamps_ms"], [rows["timestamps_ms"].mean()])


def test_howto100m_csv_run_writes_normalised_float16_features_to_feature_path(weights, tmp_path):
    """resnext101_3d defaults: 24 fps, 16-frame windows, so 1.5 features per second; a 3 s clip gives 4
    (72 frames, the last 8 dropped)."""
    video = write_clip(tmp_path / "howto.mp4", num_frames=90, rate=30, size=(160, 120))
    feature_path = tmp_path / "features" / "howto_3d.npy"
    csv_file = tmp_path / "list.csv"
    csv_file.write_text(f"video_path,feature_path\n{video},{feature_path}\n")
    assert main.main(["--feature_type", "resnext101_3d", "--cpu", "--file_with_video_paths", str(csv_file),
                      "--weights_dir", str(weights), "--l2_normalize", "--dtype", "float16",
                      "--on_extraction", "save_numpy", "--output_path", str(tmp_path / "out")]) == 0
    saved = np.load(feature_path)
    assert saved.shape == (4, 2048) and saved.dtype == np.float16
    np.testing.assert_allclose(np.linalg.norm(saved.astype(np.float32), axis=1), 1.0, atol=2e-3)
    times = np.load(feature_path.with_name("howto_3d_timestamps_ms.npy"))
    shown_ms = [np.floor(k * 30 / 24) / 30 * 1000 for k in range(72)]  # the 30 fps frame on screen at k/24 s
    np.testing.assert_allclose(times, [(shown_ms[16 * k] + shown_ms[16 * k + 15]) / 2 for k in range(4)], atol=1e-6)
    api = ExtractResNeXt3D(dict(feature_type="resnext101_3d", cpu=True, weights_dir=str(weights))).extract(video)
    expected = api["resnext101_3d"] / np.linalg.norm(api["resnext101_3d"], axis=1, keepdims=True)
    np.testing.assert_allclose(saved, expected.astype(np.float16), rtol=2e-3, atol=2e-4)


@pytest.mark.parametrize("options, message", [
    (dict(feature_type="raft", pool="mean"), "--pool does not apply to optical flow"),
    (dict(feature_type="i3d", crops=3), "--crops 3 is not available for i3d"),
    (dict(feature_type="CLIP-ViT-B/32", checkpoint="x.pt"), "--checkpoint is not used by CLIP-ViT-B/32"),
    (dict(feature_type="s3d", weights="IMAGENET1K_V2"), "--weights is not used by s3d"),
    (dict(feature_type="resnet50", model_name="r2plus1d_18_16_kinetics"), "--model_name is not used by resnet50"),
    (dict(feature_type="timm", model_name="test_vit", show_pred=True), "--show_pred is not available for timm"),
])
def test_options_that_do_not_apply_are_refused(options, message):
    args = complete_args(options)
    with pytest.raises(UsageError, match=message):
        extractor_class(args.feature_type).validate_args(args)
