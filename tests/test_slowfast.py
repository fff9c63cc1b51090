"""SlowFast-R50 against an independent forward written here from the checkpoint's tensors (PySlowFast's
structure, functionally), on the frames HERO's extractor takes, which a sequential decode picks here.

The random checkpoint is written in the model zoo's Caffe2 format (``{"blobs": ...}`` with its blob names and
optimiser blobs) and read through the path the published ``SLOWFAST_8x8_R50.pkl`` takes.
"""
from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from extractors.catalog import write_random_weights
from extractors.models.slowfast import ExtractSlowFast, caffe2_to_module_name
from io_utils.errors import UsageError
from tests.clips import frames_on_screen
from tests.conftest import SAMPLE_19FPS

STAGE_BLOCKS = {2: 3, 3: 4, 4: 6, 5: 3}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_random_weights("slowfast", tmp_path_factory.mktemp("slowfast"))[0]


def blobs_of(path: Path) -> dict[str, torch.Tensor]:
    with open(path, "rb") as file:
        return {name: torch.as_tensor(array) for name, array in pickle.load(file, encoding="latin1")["blobs"].items()}


def bn(x, blobs, name):
    return F.batch_norm(x, blobs[f"{name}_rm"], blobs[f"{name}_riv"], blobs[f"{name}_s"], blobs[f"{name}_b"],
                        False, 0.0, 1e-5)


def conv(x, weight, stride=(1, 1, 1)):
    """A bias-free convolution padded to keep the size (``same`` in time and space for odd kernels)."""
    pad = tuple(size // 2 for size in weight.shape[2:])
    return F.conv3d(x, weight, stride=stride, padding=pad)


def block(x, blobs, prefix, stride):
    """One bottleneck block from its Caffe2 blobs: 2a (T x 1 x 1), 2b (1 x 3 x 3, strided), 2c, shortcut 1."""
    out = F.relu(bn(conv(x, blobs[f"{prefix}_branch2a_w"]), blobs, f"{prefix}_branch2a_bn"))
    out = F.relu(bn(conv(out, blobs[f"{prefix}_branch2b_w"], (1, stride, stride)), blobs, f"{prefix}_branch2b_bn"))
    out = bn(conv(out, blobs[f"{prefix}_branch2c_w"]), blobs, f"{prefix}_branch2c_bn")
    if f"{prefix}_branch1_w" in blobs:
        x = bn(F.conv3d(x, blobs[f"{prefix}_branch1_w"], stride=(1, stride, stride)), blobs, f"{prefix}_branch1_bn")
    return F.relu(out + x)


def lateral(slow, fast, blobs, name):
    fused = F.relu(bn(F.conv3d(fast, blobs[f"{name}_w"], stride=(4, 1, 1), padding=(3, 0, 0)), blobs, f"{name}_bn"))
    return torch.cat([slow, fused], dim=1)


def reference_features(blobs, fast_frames: torch.Tensor) -> torch.Tensor:
    """(B, 3, 32, H, W) -> (B, 2304): stems, four stages with lateral connections after the first three,
    global average pools of both pathways."""
    slow_frames = fast_frames[:, :, torch.linspace(0, 31, 8).long()]
    slow = F.max_pool3d(F.relu(bn(conv(slow_frames, blobs["conv1_w"], (1, 2, 2)), blobs, "res_conv1_bn")),
                        (1, 3, 3), (1, 2, 2), (0, 1, 1))
    fast = F.max_pool3d(F.relu(bn(conv(fast_frames, blobs["t_conv1_w"], (1, 2, 2)), blobs, "t_res_conv1_bn")),
                        (1, 3, 3), (1, 2, 2), (0, 1, 1))
    slow = lateral(slow, fast, blobs, "t_pool1_subsample")
    for stage, count in STAGE_BLOCKS.items():
        for index in range(count):
            stride = 2 if stage > 2 and index == 0 else 1
            slow = block(slow, blobs, f"res{stage}_{index}", stride)
            fast = block(fast, blobs, f"t_res{stage}_{index}", stride)
        if stage < 5:
            slow = lateral(slow, fast, blobs, f"t_res{stage}_{count - 1}_branch2c_bn_subsample")
    return torch.cat([slow.mean(dim=(2, 3, 4)), fast.mean(dim=(2, 3, 4))], dim=1)


def hero_indices(source_fps: float) -> list[int]:
    """HERO's get_start_end_idx + temporal_sampling for one clip of 60 frames: a span of 32 x 2 frames at
    the source's rate (floored), from 0, 32 positions, clamped."""
    span = 32 * 2 * math.floor(source_fps) / 30
    return [min(int(position), 59) for position in np.linspace(0, span - 1, 32)]


def test_slowfast_equals_an_independent_forward_on_heros_frames(checkpoint):
    extractor = ExtractSlowFast(dict(feature_type="slowfast", cpu=True, checkpoint=str(checkpoint), pad_last=True))
    features = extractor.extract(SAMPLE_19FPS)
    frames = frames_on_screen(SAMPLE_19FPS, 30)  # 18.04 s: nine 2 s clips and a padded tenth
    assert features["slowfast"].shape == (10, 2304)
    clips = [frames[start : start + 60] for start in range(0, len(frames), 60)][:2]
    chosen = hero_indices(19.62)
    assert chosen[:6] == [0, 1, 2, 3, 5, 6] and chosen[-1] == 39  # 40.5 of the 60 frames, at 19 fps
    inputs = torch.stack([torch.stack([extractor.preprocess(clip[index]) for index in chosen]) for clip in clips])
    with torch.inference_mode():
        expected = reference_features(blobs_of(checkpoint), inputs.transpose(1, 2)).numpy()
    np.testing.assert_allclose(features["slowfast"][:2], expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    assert np.abs(features["slowfast"][0] - features["slowfast"][1]).max() > 1e-3 * np.abs(expected).max()
    # each clip's centre: midway between its first and last frames' own times (a frame of 19.62 fps apart at most)
    np.testing.assert_allclose(features["timestamps_ms"][:2], [59 / 60 * 1000, 179 / 60 * 1000], atol=1000 / 19.62)


def test_the_caffe2_names_follow_pyslowfasts_conversion(checkpoint):
    """Every blob of the file but the optimiser's maps to a module of the network, the way PySlowFast converts."""
    from extractors.models.slowfast import SlowFastR50

    names = {key for key in SlowFastR50().state_dict() if not key.endswith("num_batches_tracked")}
    blobs = blobs_of(checkpoint)
    weights = {caffe2_to_module_name(blob) for blob in blobs if not blob.endswith("_momentum") and blob != "iter"}
    assert weights == names and len(names) == 552
    assert caffe2_to_module_name("t_res4_5_branch2c_bn_subsample_bn_riv") == "s4_fuse.bn.running_var"
    assert caffe2_to_module_name("res3_0_branch1_bn_s") == "s3.pathway0_res0.branch1_bn.weight"
    assert caffe2_to_module_name("t_res5_2_branch2b_w") == "s5.pathway1_res2.branch2.b.weight"
    assert caffe2_to_module_name("pred_w") == "head.projection.weight"


def test_a_pytorch_checkpoint_loads_the_same_and_wrong_files_are_one_line(checkpoint, tmp_path):
    reference = ExtractSlowFast(dict(feature_type="slowfast", cpu=True, checkpoint=str(checkpoint), views=1))
    state = {name: tensor for name, tensor in reference.model["backbone"].state_dict().items()}
    state.update({f"head.projection.{key}": value for key, value in reference.model["head"].state_dict().items()})
    pyth = tmp_path / "SLOWFAST_8x8_R50.pyth"
    torch.save({"model_state": state, "epoch": 196}, pyth)
    other = ExtractSlowFast(dict(feature_type="slowfast", cpu=True, checkpoint=str(pyth), views=1))
    np.testing.assert_array_equal(other.extract(SAMPLE_19FPS)["slowfast"], reference.extract(SAMPLE_19FPS)["slowfast"])
    with open(checkpoint, "rb") as file:
        blobs = pickle.load(file, encoding="latin1")["blobs"]
    broken = tmp_path / "broken.pkl"
    with open(broken, "wb") as file:
        pickle.dump({"blobs": {name: array for name, array in blobs.items() if name != "res2_0_branch2a_w"}}, file)
    with pytest.raises(UsageError, match=r"broken.pkl: not the SlowFast-R50 \(.*s2.pathway0_res0.branch2.a.weight"):
        ExtractSlowFast(dict(feature_type="slowfast", cpu=True, checkpoint=str(broken)))
    hostile = tmp_path / "hostile.pkl"
    hostile.write_bytes(pickle.dumps({"blobs": {"x": print}}))
    with pytest.raises(UsageError, match=r"hostile.pkl: not a SlowFast checkpoint \(UnpicklingError: builtins.print"):
        ExtractSlowFast(dict(feature_type="slowfast", cpu=True, checkpoint=str(hostile)))
