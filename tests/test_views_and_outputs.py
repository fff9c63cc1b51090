"""--views, --crops, --pool mean, --l2_normalize, --dtype float16, and the HowTo100M-style CSV run."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

import main
from extractors.catalog import write_random_weights
from extractors.models.r21d import ExtractR21D
from extractors.models.resnet import ExtractResNet
from extractors.models.resnext3d import ExtractResNeXt3D
from extractors.windows import read_frames, uniform_window_starts, windows_at
from io_utils.claims import outputs_complete
from io_utils.outputs import FinishingSink, MemorySink
from io_utils.video import VideoReader
from tests.clips import write_clip
from tests.conftest import SAMPLE_19FPS


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("weights")
    for seed, feature_type in enumerate(("resnet18", "r21d", "resnext101_3d"), start=10):
        write_random_weights(feature_type, folder, seed)
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
        windows = list(extractor.model_inputs(video, extractor.video_job(SAMPLE_19FPS)))
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


class _Payload:
    """Unpickling this touches a file: what a hostile pickle in a shared output folder could do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def test_completeness_is_decided_without_running_what_a_pickle_holds(tmp_path):
    marker = tmp_path / "ran"
    hostile = tmp_path / "video_clip.pkl"
    hostile.write_bytes(pickle.dumps(_Payload(marker)))
    assert outputs_complete([hostile]) and not marker.exists()
    whole = pickle.dumps(np.arange(1000.0), protocol=pickle.HIGHEST_PROTOCOL)
    for cut in (len(whole) - 1, len(whole) // 2, 3):
        hostile.write_bytes(whole[:cut])
        assert not outputs_complete([hostile]), cut
    hostile.write_bytes(whole + b"\x00")  # something after the end of the pickle
    assert not outputs_complete([hostile])


def test_pooling_counts_crops_as_rows_only_when_there_are_crops():
    rows = np.arange(24, dtype=np.float32).reshape(2, 3, 4)  # (rows, ...) of a model whose features are 2-d
    for crops, expected in ((1, rows.mean(axis=0)), (3, rows.reshape(6, 4).mean(axis=0))):
        sink = FinishingSink(MemorySink(), "mean", l2_normalize=False, dtype="float32", crops=crops)
        sink.add({"features": rows}, [0.0, 100.0])
        pooled = sink.close(25.0)
        np.testing.assert_allclose(pooled["features"][0], expected)
        np.testing.assert_allclose(pooled["timestamps_ms"], [50.0])
