"""MMAction2's TSN and SlowOnly: the checkpoint format, the test-mode sampling, the preprocessing and the
networks, checked against an independent implementation of MMAction2's published pipeline; --collect_pickle."""
from __future__ import annotations

import pickle
import re
import subprocess
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.models import resnet50

from extractors.models.mmaction import SLOWONLY_WEIGHTS, TSN_WEIGHTS, ExtractSlowOnly, ExtractTSN, mmaction_clip_indices
from io_utils.errors import UsageError
from io_utils.outputs import collect_pickle
from tests.checkpoints import official_keys
from tests.clips import sequential_decode, write_clip

ROOT = Path(__file__).resolve().parents[1]
MEAN = np.array([123.675, 116.28, 103.53], np.float64)
STD = np.array([58.395, 57.12, 57.375], np.float64)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("mmaction_weights")
    TSN_WEIGHTS["kinetics400"].write_random(folder, seed=3)
    SLOWONLY_WEIGHTS["kinetics400"].write_random(folder, seed=4)
    return folder


@pytest.fixture(scope="module")
def clip_70(tmp_path_factory) -> Path:
    """70 frames of 122 x 98: the resized width (319) makes mmcv's centre crop differ from a rounded one."""
    return write_clip(tmp_path_factory.mktemp("mmaction") / "clip70.mp4", num_frames=70, size=(122, 98), b_frames=3)


def reference_indices(num_frames: int, clip_len: int, interval: int, num_clips: int) -> list[list[int]]:
    """``SampleFrames._get_test_clips`` and the 'loop' out-of-bound rule, one clip at a time."""
    span = clip_len * interval
    average = (num_frames - span + 1) / float(num_clips)
    clips = []
    for clip in range(num_clips):
        offset = int(clip * average + average / 2.0) if num_frames > span - 1 else 0
        clips.append([(offset + k * interval) % num_frames for k in range(clip_len)])
    return clips


def reference_preprocess(rgb: np.ndarray) -> np.ndarray:
    """mmcv.rescale_size((w, h), (inf, 256)) + cv2 bilinear, mmaction's CenterCrop(256), mmcv.imnormalize."""
    height, width = rgb.shape[:2]
    factor = min(np.inf / max(height, width), 256 / min(height, width))
    new_width, new_height = int(width * float(factor) + 0.5), int(height * float(factor) + 0.5)
    image = cv2.resize(rgb, (new_width, new_height), interpolation=cv2.INTER_LINEAR)
    left, top = (new_width - 256) // 2, (new_height - 256) // 2
    image = image[top : top + 256, left : left + 256].astype(np.float32)
    return ((image - MEAN) * (1 / STD)).astype(np.float32).transpose(2, 0, 1)


def state_dict_of(path: Path) -> dict[str, torch.Tensor]:
    checkpoint = torch.load(path, weights_only=True)
    assert set(checkpoint) == {"meta", "state_dict"}
    return checkpoint["state_dict"]


def reference_tsn(state_dict: dict[str, torch.Tensor]) -> torch.nn.Module:
    """torchvision's ResNet-50 given the file's ConvModule-named tensors; output: the pooled 2048-d feature."""
    renamed = {}
    for key, value in state_dict.items():
        if key.startswith("cls_head."):
            continue
        key = key.removeprefix("backbone.").replace("downsample.conv", "downsample.0").replace("downsample.bn", "downsample.1")
        key = re.sub(r"conv(\d)\.bn\.", r"bn\1.", re.sub(r"conv(\d)\.conv\.", r"conv\1.", key))
        renamed[key] = value
    network = resnet50()
    network.fc = torch.nn.Identity()
    network.load_state_dict(renamed, strict=True)
    return network.eval()


def reference_slowonly(state_dict: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The SlowOnly-R50 forward in functional form, temporal kernels read from the file's tensors."""
    def conv_bn(prefix: str, x: torch.Tensor, stride=(1, 1, 1), relu: bool = True) -> torch.Tensor:
        weight = state_dict[f"{prefix}.conv.weight"]
        padding = tuple(size // 2 for size in weight.shape[2:])
        x = F.conv3d(x, weight, None, stride, padding)
        bn = {name: state_dict[f"{prefix}.bn.{name}"] for name in ("weight", "bias", "running_mean", "running_var")}
        x = F.batch_norm(x, bn["running_mean"], bn["running_var"], bn["weight"], bn["bias"], False, 0.0, 1e-5)
        return F.relu(x) if relu else x

    x = F.max_pool3d(conv_bn("backbone.conv1", x, (1, 2, 2)), (1, 3, 3), (1, 2, 2), (0, 1, 1))
    for layer, blocks in enumerate((3, 4, 6, 3), start=1):
        for block in range(blocks):
            prefix = f"backbone.layer{layer}.{block}"
            stride = (1, 2, 2) if layer > 1 and block == 0 else (1, 1, 1)
            out = conv_bn(f"{prefix}.conv3", conv_bn(f"{prefix}.conv2", conv_bn(f"{prefix}.conv1", x), stride), relu=False)
            shortcut = conv_bn(f"{prefix}.downsample", x, stride, relu=False) if f"{prefix}.downsample.conv.weight" in state_dict else x
            x = F.relu(out + shortcut)
    return x.mean(dim=(2, 3, 4))


def test_random_checkpoints_have_the_official_keys_and_shapes(weights):
    for name, entry in (("tsn", TSN_WEIGHTS["kinetics400"]), ("slowonly", SLOWONLY_WEIGHTS["kinetics400"])):
        saved = {key: list(value.shape) for key, value in state_dict_of(weights / entry.file_name).items()}
        assert saved == official_keys(name)
    assert TSN_WEIGHTS["kinetics400"].url == ("https://download.openmmlab.com/mmaction/recognition/tsn/"
                                              "tsn_r50_320p_1x1x3_100e_kinetics400_rgb/"
                                              "tsn_r50_320p_1x1x3_100e_kinetics400_rgb_20200702-cc665e2a.pth")
    assert SLOWONLY_WEIGHTS["kinetics400"].sha256 == "c9cdc656"


@pytest.mark.parametrize("num_frames", [10, 63, 64, 65, 300])
@pytest.mark.parametrize("clip_len, interval, num_clips", [(1, 1, 25), (4, 16, 10)])
def test_sampled_indices_follow_mmaction_formula(num_frames, clip_len, interval, num_clips):
    got = mmaction_clip_indices(num_frames, clip_len, interval, num_clips).tolist()
    assert got == reference_indices(num_frames, clip_len, interval, num_clips)


def test_sampled_indices_worked_examples():
    assert mmaction_clip_indices(10, 4, 16, 10).tolist() == [[0, 6, 2, 8]] * 10  # short: offsets 0, indices wrap
    assert [clip[0] for clip in mmaction_clip_indices(65, 4, 16, 10).tolist()] == [0] * 5 + [1] * 5  # segments of 0.2
    assert [clip[0] for clip in mmaction_clip_indices(300, 4, 16, 10).tolist()][:3] == [11, 35, 59]  # 23.7 apart
    assert [clip[0] for clip in mmaction_clip_indices(10, 1, 1, 25).tolist()][:6] == [0, 0, 1, 1, 1, 2]  # 0.4 apart


def test_tsn_equals_mmaction_pipeline_on_the_same_video(weights, clip_70):
    pts, frames = sequential_decode(clip_70)
    clips = reference_indices(len(frames), 1, 1, 25)
    inputs = torch.from_numpy(np.stack([reference_preprocess(frames[clip[0]]) for clip in clips]))
    with torch.inference_mode():
        expected = reference_tsn(state_dict_of(weights / TSN_WEIGHTS["kinetics400"].file_name))(inputs).mean(0)
    extractor = ExtractTSN(dict(feature_type="tsn", cpu=True, weights_dir=str(weights), batch_size=8))
    features = extractor.extract(clip_70)
    assert features["tsn"].shape == (1, 2048)  # MMAction2's one row per video: the mean of 25 clips
    np.testing.assert_allclose(features["tsn"][0], expected.numpy(), rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


def test_slowonly_equals_mmaction_pipeline_per_clip(weights, clip_70):
    pts, frames = sequential_decode(clip_70)
    clips = reference_indices(len(frames), 4, 16, 4)
    inputs = torch.from_numpy(np.stack([np.stack([reference_preprocess(frames[i]) for i in clip], axis=1) for clip in clips]))
    with torch.inference_mode():
        expected = reference_slowonly(state_dict_of(weights / SLOWONLY_WEIGHTS["kinetics400"].file_name), inputs)
    extractor = ExtractSlowOnly(dict(feature_type="slowonly", cpu=True, weights_dir=str(weights), views=4, pool="none"))
    features = extractor.extract(clip_70)
    assert features["slowonly"].shape == (4, 2048)
    np.testing.assert_allclose(features["slowonly"], expected.numpy(), rtol=1e-4, atol=1e-4 * float(expected.abs().max()))
    with av.open(str(clip_70)) as container:
        tick_ms = float(container.streams.video[0].time_base) * 1000
    time_ms = [((pts[clip[0]] + pts[clip[-1]]) / 2 - pts[0]) * tick_ms for clip in clips]  # the clip's centre
    np.testing.assert_allclose(features["timestamps_ms"], time_ms)


def test_short_video_wraps_around_and_repeats_frames(weights, tmp_path):
    video = write_clip(tmp_path / "short.mp4", num_frames=20, size=(64, 48))
    pts, frames = sequential_decode(video)
    clips = reference_indices(20, 4, 16, 2)
    assert clips == [[0, 16, 12, 8]] * 2
    inputs = torch.from_numpy(np.stack([np.stack([reference_preprocess(frames[i]) for i in clip], axis=1) for clip in clips]))
    with torch.inference_mode():
        expected = reference_slowonly(state_dict_of(weights / SLOWONLY_WEIGHTS["kinetics400"].file_name), inputs).mean(0)
    features = ExtractSlowOnly(dict(feature_type="slowonly", cpu=True, weights_dir=str(weights), views=2)).extract(video)
    np.testing.assert_allclose(features["slowonly"][0], expected.numpy(), rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


def test_tsn_file_with_torchvision_names_loads_the_same(weights, clip_70, tmp_path):
    """The published TSN file predates MMAction2's rename: ``bn1``, ``downsample.0/1`` keys load too."""
    state_dict = state_dict_of(weights / TSN_WEIGHTS["kinetics400"].file_name)
    old_names = {}
    for key, value in state_dict.items():
        key = key.replace("downsample.conv", "downsample.0").replace("downsample.bn", "downsample.1")
        old_names[re.sub(r"conv(\d)\.bn\.", r"bn\1.", re.sub(r"conv(\d)\.conv\.", r"conv\1.", key))] = value
    assert "backbone.bn1.running_mean" in old_names and "backbone.layer1.0.downsample.1.weight" in old_names
    torch.save({"meta": {"mmcv_version": "1.0.0"}, "state_dict": old_names}, tmp_path / "old.pth")
    common = dict(feature_type="tsn", cpu=True, weights_dir=str(weights), views=3)
    new = ExtractTSN(common).extract(clip_70)["tsn"]
    old = ExtractTSN({**common, "checkpoint": str(tmp_path / "old.pth")}).extract(clip_70)["tsn"]
    np.testing.assert_array_equal(new, old)


def test_wrong_checkpoint_is_one_line_naming_the_file(weights, tmp_path):
    torch.save({"meta": {}, "state_dict": {"backbone.conv1.conv.weight": torch.zeros(1)}}, tmp_path / "bad.pth")
    with pytest.raises(UsageError, match=r"bad.pth: not an MMAction2 slowonly checkpoint .*Missing key"):
        ExtractSlowOnly(dict(feature_type="slowonly", cpu=True, checkpoint=str(tmp_path / "bad.pth")))


def test_show_pred_prints_kinetics_top5_per_clip(weights, clip_70, capsys):
    ExtractTSN(dict(feature_type="tsn", cpu=True, weights_dir=str(weights), views=2, show_pred=True)).extract(clip_70)
    lines = [line for line in capsys.readouterr().out.splitlines() if " ms: " in line]
    assert len(lines) == 2 and all(len(re.findall(r"\(\d\.\d{3}\)", line)) == 5 for line in lines)


def test_collect_pickle_lists_every_video_in_list_order(weights, clip_70, tmp_path):
    """One command: per-video npy files, and MMAction2's pickle (a list, None for a video without features)."""
    other = write_clip(tmp_path / "other.mp4", num_frames=30, size=(80, 64))
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    listing = tmp_path / "list.txt"
    listing.write_text(f"{other}\n{broken}\n{tmp_path / 'missing.mp4'}\n{clip_70}\n")
    out, collected = tmp_path / "out", tmp_path / "features.pkl"
    result = subprocess.run([sys.executable, "main.py", "--feature_type", "tsn", "--cpu", "--weights_dir", str(weights),
                             "--views", "2", "--file_with_video_paths", str(listing), "--on_extraction", "save_numpy",
                             "--output_path", str(out), "--collect_pickle", str(collected)],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 1, result.stderr  # two videos failed
    assert "collected 2 videos into" in result.stderr and "2 without features" in result.stderr
    with open(collected, "rb") as handle:
        gathered = pickle.load(handle)
    assert [None if item is None else item.shape for item in gathered] == [(2048,), None, None, (2048,)]
    np.testing.assert_array_equal(gathered[0], np.load(out / "tsn" / "other_tsn.npy")[0])
    np.testing.assert_array_equal(gathered[3], np.load(out / "tsn" / "clip70_tsn.npy")[0])


def test_collect_pickle_reads_pickled_outputs_as_arrays_only(tmp_path):
    good, missing, hostile = tmp_path / "a_tsn.pkl", tmp_path / "b_tsn.pkl", tmp_path / "c_tsn.pkl"
    with open(good, "wb") as handle:
        pickle.dump(np.arange(8, dtype=np.float32).reshape(1, 8), handle)
    assert [None if item is None else item.tolist() for item in _collect([good, missing], tmp_path / "all.pkl")] == \
        [list(range(8)), None]

    class Hostile:
        def __reduce__(self):
            return (print, ("this must not run",))

    with open(hostile, "wb") as handle:
        pickle.dump(Hostile(), handle)
    with pytest.raises(pickle.UnpicklingError, match="builtins.print is not part of a NumPy array"):
        collect_pickle([hostile], tmp_path / "never.pkl", squeeze_single_row=True)
    assert not (tmp_path / "never.pkl").exists()


def _collect(paths: list[Path], destination: Path) -> list:
    assert collect_pickle(paths, destination, squeeze_single_row=True) == [path for path in paths if not path.exists()]
    with open(destination, "rb") as handle:
        return pickle.load(handle)
