"""Two-stream I3D: official checkpoint formats, "same" padding, windows, computed and precomputed flow."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from extractors.models.i3d import I3D_WEIGHTS, ExtractI3D, InceptionI3d, resize_flow, same_padding
from extractors.models.optical_flow import RAFT_WEIGHTS
from extractors.windows import read_frames, sliding_windows
from io_utils.errors import UsageError, VideoError
from io_utils.video import VideoReader
from tests.checkpoints import official_keys
from tests.clips import write_clip
from tests.conftest import SAMPLE_19FPS

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """Random I3D checkpoints in piergiaj's format and a random raft_small, under their official names."""
    folder = tmp_path_factory.mktemp("i3d_weights")
    I3D_WEIGHTS["rgb"].write_random(folder, seed=1)
    I3D_WEIGHTS["flow"].write_random(folder, seed=2)
    RAFT_WEIGHTS["small"]["C_T_V2"].write_random(folder)
    return folder


def i3d_args(weights: Path, **extra) -> dict:
    """Small windows at 2 fps; RAFT-small with 2 iterations where the flow stream computes RAFT flow."""
    options = {**dict(feature_type="i3d", cpu=True, weights_dir=str(weights), stack_size=10, step_size=10,
                      extraction_fps=2), **extra}
    if "flow" in options.get("streams", ["flow"]) and options.get("flow_type", "raft") == "raft":
        options.update(raft_model="small", raft_iters=2)
    return options


def test_checkpoints_in_the_official_formats_load_strictly(weights, tmp_path):
    extractor = ExtractI3D(i3d_args(weights))
    for stream in ("rgb", "flow"):
        loaded = {key: list(value.shape) for key, value in extractor.model[stream].state_dict().items()}
        assert loaded == official_keys(f"i3d_{stream}")
    state_dict = torch.load(weights / "rgb_imagenet.pt")
    state_dict["Mixed_5c.b0.conv3d.bias"] = torch.zeros(384)  # an unexpected key
    torch.save(state_dict, tmp_path / "rgb_imagenet.pt")
    with pytest.raises(UsageError, match="not a piergiaj I3D rgb checkpoint"):
        ExtractI3D(i3d_args(tmp_path, streams=["rgb"]))


def test_same_padding_is_tensorflows():
    # TF "same": output = ceil(input / stride); the extra padding pixel goes at the end.
    assert same_padding((64, 224, 224), (7, 7, 7), (2, 2, 2)) == (2, 3, 2, 3, 2, 3)
    assert same_padding((9, 113, 113), (3, 3, 3), (2, 2, 2)) == (1, 1, 1, 1, 1, 1)
    assert same_padding((8, 28, 28), (2, 2, 2), (2, 2, 2)) == (0, 0, 0, 0, 0, 0)
    assert same_padding((5, 7, 7), (3, 3, 3), (1, 1, 1)) == (1, 1, 1, 1, 1, 1)
    network = InceptionI3d(3).eval()
    with torch.inference_mode():
        assert network.features(torch.zeros(2, 3, 10, 224, 224)).shape == (2, 1024)
        assert network.classify(torch.zeros(2, 1024)).shape == (2, 400)


def test_features_equal_the_network_on_the_same_preprocessed_windows(weights):
    extractor = ExtractI3D(i3d_args(weights, streams=["rgb"]))
    features = extractor.extract(SAMPLE_19FPS)
    with VideoReader(SAMPLE_19FPS) as video:
        frames = [extractor.preprocess(frame.rgb) for frame in read_frames(video, 2)]
    assert frames[0].shape == (3, 256, 341)
    window = torch.stack(frames[10:21])[:-1, :, 16:240, 58:282].float() / 127.5 - 1.0  # second window, crop 224
    with torch.inference_mode():
        expected = extractor.model["rgb"].features(window.transpose(0, 1)[None])
    np.testing.assert_allclose(features["rgb"][1], expected[0].numpy(), rtol=1e-4, atol=1e-5)


def test_window_count_timestamps_and_shapes_on_the_sample(weights):
    with VideoReader(SAMPLE_19FPS) as video:
        times = [frame.time_ms for frame in read_frames(video, 2)]
    features = ExtractI3D(i3d_args(weights)).extract(SAMPLE_19FPS)
    taken = len(times)  # 18.1 s at 2 fps: 37 frames
    windows = (taken - 11) // 10 + 1  # 11 frames per window (10 + the one the last flow needs), every 10
    assert taken == 37 and windows == 3
    assert features["rgb"].shape == features["flow"].shape == (windows, 1024)
    assert list(features) == ["rgb", "flow", "fps", "timestamps_ms"]
    np.testing.assert_allclose(features["timestamps_ms"], [(times[s] + times[s + 10]) / 2 for s in (0, 10, 20)])
    assert abs(float(features["fps"]) - 19.62) < 0.01


def test_sliding_windows_never_pass_the_end_and_pad_on_request():
    assert [w for w, _ in sliding_windows(range(7), 3, 2)] == [[0, 1, 2], [2, 3, 4], [4, 5, 6]]
    assert [w for w, _ in sliding_windows(range(8), 3, 2)] == [[0, 1, 2], [2, 3, 4], [4, 5, 6]]
    assert list(sliding_windows(range(8), 3, 2, pad_last=True))[-1] == ([6, 7, 7], 2)
    assert [w for w, _ in sliding_windows(range(10), 2, 4)] == [[0, 1], [4, 5], [8, 9]]
    assert list(sliding_windows(range(2), 3, 3)) == []
    assert list(sliding_windows(range(2), 3, 3, pad_last=True)) == [([0, 1, 1], 2)]


def test_short_videos_and_small_stacks(weights, tmp_path):
    with pytest.raises(UsageError, match="--stack_size 9: i3d needs at least 10 frames per window"):
        ExtractI3D(i3d_args(weights, stack_size=9))
    clip = write_clip(tmp_path / "short.mp4", num_frames=8, size=(64, 48))
    with pytest.raises(VideoError, match="too short: fewer than the 11 frames of one window"):
        ExtractI3D(i3d_args(weights, streams=["rgb"], extraction_fps=None)).extract(clip)
    padded = ExtractI3D(i3d_args(weights, streams=["rgb"], extraction_fps=None, pad_last=True)).extract(clip)
    assert padded["rgb"].shape == (1, 1024)
    assert padded["timestamps_ms"][0] == pytest.approx(7 * 40 / 2)  # centre of the 8 real frames


def test_precomputed_flow_equals_computed_flow_from_the_same_flow(weights, tmp_path):
    """RAFT on the 256-side frames, written as JPEGs, then read back by I3D: equal within JPEG's quantisation."""
    common = ["--cpu", "--weights_dir", str(weights), "--raft_model", "small", "--raft_iters", "2",
              "--extraction_fps", "2", "--video_paths", str(SAMPLE_19FPS)]
    result = subprocess.run([sys.executable, "main.py", "--feature_type", "raft", *common, "--side_size", "256",
                             "--on_extraction", "save_flow_images", "--output_path", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    computed = ExtractI3D(i3d_args(weights)).extract(SAMPLE_19FPS)
    precomputed = ExtractI3D(i3d_args(weights, flow_type="precomputed", flow_dir=str(tmp_path / "raft"))).extract(SAMPLE_19FPS)
    np.testing.assert_array_equal(precomputed["rgb"], computed["rgb"])
    np.testing.assert_array_equal(precomputed["timestamps_ms"], computed["timestamps_ms"])
    difference = np.abs(precomputed["flow"] - computed["flow"]).max()
    assert difference < 0.01 * np.abs(computed["flow"]).max(), difference


def test_precomputed_flow_is_found_where_the_flow_run_wrote_it_for_videos_of_the_same_name(weights, tmp_path):
    """With --video_dir, sub-folders are mirrored: a/clip.mp4 and b/clip.mp4 have flow folders a/clip and b/clip,
    and each video reads its own (equal, within JPEG's quantisation, to the flow computed for that video)."""
    videos = tmp_path / "videos"
    for folder, size in (("a", (192, 144)), ("b", (176, 160))):  # different videos, one name
        write_clip(videos / folder / "clip.mp4", num_frames=150, size=size, noise=False)
    common = ["--cpu", "--weights_dir", str(weights), "--extraction_fps", "2", "--video_dir", str(videos),
              "--recursive"]
    result = subprocess.run([sys.executable, "main.py", "--feature_type", "raft", *common, "--raft_model", "small",
                             "--raft_iters", "2", "--side_size", "256", "--on_extraction", "save_flow_images",
                             "--output_path", str(tmp_path / "flow")], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert sorted(path.relative_to(tmp_path / "flow" / "raft").as_posix()
                  for path in (tmp_path / "flow" / "raft").glob("*/*")) == ["a/clip", "b/clip"]
    result = subprocess.run([sys.executable, "main.py", "--feature_type", "i3d", *common, "--flow_type",
                             "precomputed", "--flow_dir", str(tmp_path / "flow" / "raft"), "--stack_size", "10",
                             "--on_extraction", "save_numpy", "--output_path", str(tmp_path / "i3d")],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    for folder in ("a", "b"):
        computed = ExtractI3D(i3d_args(weights, video_dir=str(videos))).extract(videos / folder / "clip.mp4")
        precomputed = np.load(tmp_path / "i3d" / "i3d" / folder / "clip_flow.npy")
        assert np.abs(precomputed - computed["flow"]).max() < 0.01 * np.abs(computed["flow"]).max()


def test_precomputed_flow_pairing_errors_name_the_video(weights, tmp_path):
    flow_dir = tmp_path / "flow"
    flow_dir.mkdir()
    extractor = ExtractI3D(i3d_args(weights, flow_type="precomputed", flow_dir=str(flow_dir)))
    with pytest.raises(VideoError, match="no folder .*v_GGSY1Qvo990 for this video"):
        extractor.extract(SAMPLE_19FPS)
    (flow_dir / "v_GGSY1Qvo990").mkdir()
    for index in range(1, 30):
        for axis in "xy":
            (flow_dir / "v_GGSY1Qvo990" / f"flow_{axis}_{index:05d}.jpg").write_bytes(b"")
    with pytest.raises(VideoError, match="holds 29 pairs but the video gives 37 frames, so 36 pairs"):
        extractor.extract(SAMPLE_19FPS)
    with pytest.raises(UsageError, match="needs --flow_dir"):
        ExtractI3D(i3d_args(weights, flow_type="precomputed"))


def test_resize_flow_scales_vectors_with_the_image():
    flow = torch.ones(2, 10, 20)
    resized = resize_flow(flow, (5, 40))
    assert resized.shape == (2, 5, 40)
    torch.testing.assert_close(resized[0], torch.full((5, 40), 2.0))
    torch.testing.assert_close(resized[1], torch.full((5, 40), 0.5))


def test_show_pred_prints_top5_kinetics_classes_per_window_and_stream(weights, capsys):
    ExtractI3D(i3d_args(weights, streams=["rgb"], show_pred=True)).extract(SAMPLE_19FPS)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("rgb")]
    assert len(lines) == 3 and all(line.count("(0.") + line.count("(1.") == 5 for line in lines)
