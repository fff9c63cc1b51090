"""Several feature types from one decode (``--feature_type A B ...``, ``JointExtractor``): each type's features
equal a run of that type alone, bit for bit; each type keeps its own folder, manifest and resume; a type that
cannot read a video fails alone; the video is decoded once, and frames are held only until every type has them."""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

import main
from extractors.catalog import write_random_weights
from extractors.cli import parse_options
from extractors.config import joint_configs
from extractors.joint import JointExtractor, _SharedFrames
from extractors.registry import extractor_class, feature_types
from extractors.windows import WindowExtractor
from io_utils.errors import UsageError, VideoError
from io_utils.video import VideoReader
from tests.clips import write_clip, write_with_audio
from tests.conftest import SAMPLE_19FPS, SAMPLE_30FPS

HOWTO100M_PAIR = ("resnet152", "resnext101_3d")


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """Random checkpoints in the official formats of every type these tests run, under their official names."""
    folder = tmp_path_factory.mktemp("joint_weights")
    for seed, name in enumerate((*HOWTO100M_PAIR, "slowonly", "i3d", "vggish", "resnet18")):
        write_random_weights(name, folder, seed, **({"flow_type": "pwc"} if name == "i3d" else {}))
    return folder


def run_cli(*argv: str) -> int:
    return main.main(["--cpu", "--on_extraction", "save_numpy", *argv])


def outputs(folder: Path) -> dict[str, bytes]:
    """Every output file's bytes; manifests are compared apart (they record how long each video took)."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*.npy"))}


def configuration(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())["configuration"]


def test_the_howto100m_pair_from_one_decode_equals_the_two_runs_alone(weights, tmp_path, capsys):
    inputs = ["--video_paths", str(SAMPLE_30FPS), "--weights_dir", str(weights)]
    assert run_cli("--feature_type", *HOWTO100M_PAIR, *inputs, "--output_path", str(tmp_path / "joint")) == 0
    assert capsys.readouterr().out.splitlines()[-2:] == [f"{name}: done: 1, skipped: 0, failed: 0"
                                                         for name in HOWTO100M_PAIR]
    for name in HOWTO100M_PAIR:
        assert run_cli("--feature_type", name, *inputs, "--output_path", str(tmp_path / "alone")) == 0
        joint, alone = tmp_path / "joint" / name, tmp_path / "alone" / name
        assert len(outputs(joint)) == 3 and outputs(joint) == outputs(alone)
        assert configuration(joint) == configuration(alone)
    features = np.load(tmp_path / "joint" / "resnext101_3d" / "v_ZNVhz7ctTq0_resnext101_3d.npy")
    assert features.shape == (21, 2048) and np.isfinite(features).all()  # 24 fps windows of 16 over 14 s


def test_clip_and_slowonly_windows_from_one_decode_equal_each_alone(weights, clip_checkpoint):
    """The Python API: one dict per type."""
    options = {"cpu": True, "weights_dir": str(weights), "CLIP-ViT-B/32:checkpoint": str(clip_checkpoint),
               "extract_method": "uni_8"}
    joint = JointExtractor({**options, "feature_type": ["CLIP-ViT-B/32", "slowonly"]}, external_call=True)
    features = joint.extract(SAMPLE_30FPS)
    clip = extractor_class("CLIP-ViT-B/32")(
        {"feature_type": "CLIP-ViT-B/32", "cpu": True, "checkpoint": str(clip_checkpoint), "extract_method": "uni_8"},
        external_call=True)
    slowonly = extractor_class("slowonly")({"feature_type": "slowonly", "cpu": True, "weights_dir": str(weights)},
                                          external_call=True)
    for name, alone in (("CLIP-ViT-B/32", clip.extract(SAMPLE_30FPS)), ("slowonly", slowonly.extract(SAMPLE_30FPS))):
        assert features[name].keys() == alone.keys()
        for key in alone:
            np.testing.assert_array_equal(features[name][key], alone[key], err_msg=f"{name} {key}")
    assert features["CLIP-ViT-B/32"]["clip"].shape == (8, 512) and features["slowonly"]["slowonly"].shape == (1, 2048)


def test_two_stream_i3d_and_vggish_from_one_run_equal_each_alone(weights, tmp_path):
    """A visual type shares the decode (I3D's RGB and flow streams, the flow by PWC-Net); the audio type reads the
    audio of the same file."""
    video = write_with_audio(tmp_path / "talk.mp4", seconds=2.0)
    i3d = ["--feature_type", "i3d", "--flow_type", "pwc", "--stack_size", "16", "--step_size", "16"]
    common = ["--video_paths", str(video), "--weights_dir", str(weights)]
    assert run_cli(*i3d[:2], "vggish", *i3d[2:], *common, "--output_path", str(tmp_path / "joint")) == 0
    assert run_cli(*i3d, *common, "--output_path", str(tmp_path / "alone")) == 0
    assert run_cli("--feature_type", "vggish", *common, "--output_path", str(tmp_path / "alone")) == 0
    for name, main_key, rows in (("i3d", "rgb", 3), ("i3d", "flow", 3), ("vggish", "vggish", 2)):
        assert outputs(tmp_path / "joint" / name) == outputs(tmp_path / "alone" / name)
        assert np.load(tmp_path / "joint" / name / f"talk_{main_key}.npy").shape[0] == rows


def test_a_type_that_cannot_read_a_video_fails_alone_and_a_rerun_extracts_only_what_is_missing(weights, tmp_path,
                                                                                                capsys):
    short = write_clip(tmp_path / "short.mp4", num_frames=12, rate=25, size=(128, 96))  # 0.48 s, no audio stream
    out = tmp_path / "out"
    kinds = ["resnet18", "resnext101_3d", "vggish"]
    inputs = ["--feature_type", *kinds, "--weights_dir", str(weights), "--output_path", str(out)]
    assert run_cli(*inputs, "--video_paths", str(short), str(SAMPLE_19FPS)) == 1
    printed = capsys.readouterr()
    assert printed.out.splitlines()[-3:] == ["resnet18: done: 2, skipped: 0, failed: 0",
                                             "resnext101_3d: done: 1, skipped: 0, failed: 1",
                                             "vggish: done: 1, skipped: 0, failed: 1"]
    assert f"FAILED {short} (resnext101_3d): too short: fewer than the 16 frames of one window" in printed.err
    assert f"FAILED {short} (vggish): no audio stream (only video)" in printed.err
    assert np.load(out / "resnet18" / "short_resnet.npy").shape == (1, 512)
    assert not (out / "resnet18" / "failures.tsv").exists()
    assert not (out / "resnext101_3d" / "short_resnext101_3d.npy").exists()
    assert (out / "vggish" / "failures.tsv").read_text().splitlines()[1].startswith(f"{short}\t")

    (out / "resnet18" / "v_GGSY1Qvo990_resnet.npy").unlink()
    kept = (out / "vggish" / "v_GGSY1Qvo990_vggish.npy").stat().st_mtime_ns
    assert run_cli(*inputs, "--video_paths", str(SAMPLE_19FPS)) == 0
    assert capsys.readouterr().out.splitlines()[-3:] == ["resnet18: done: 1, skipped: 0, failed: 0",
                                                         "resnext101_3d: done: 0, skipped: 1, failed: 0",
                                                         "vggish: done: 0, skipped: 1, failed: 0"]
    assert (out / "vggish" / "v_GGSY1Qvo990_vggish.npy").stat().st_mtime_ns == kept  # not extracted again


def test_the_video_is_decoded_once_and_a_decoded_frame_waits_only_for_the_type_behind(weights, monkeypatch):
    reads, held = [], []
    read_at, take = VideoReader.read_at, _SharedFrames._take

    def counted_read_at(self, targets):
        reads.append(len(targets))
        return read_at(self, targets)

    def measured_take(self, spot):
        frame = take(self, spot)
        held.append(len(self._held))
        return frame

    monkeypatch.setattr(VideoReader, "read_at", counted_read_at)
    monkeypatch.setattr(_SharedFrames, "_take", measured_take)
    joint = JointExtractor({"feature_type": list(HOWTO100M_PAIR), "cpu": True, "weights_dir": str(weights),
                            "batch_size": 4}, external_call=True)
    features = joint.extract(SAMPLE_30FPS)
    assert features["resnet152"]["resnet"].shape == (14, 2048)
    # one pass over the union of the 14 times at 1 fps and the 336 at 24 fps, which hold them (k s = 24k / 24 s)
    assert reads == [336]
    # the type whose next frame comes first goes next, so a decoded frame waits for the other type only until it
    # catches up: here one frame at most (the 1 fps frame, while the 3D model takes its window's other frames)
    assert max(held) <= 1


def test_frames_are_not_kept_for_a_type_that_failed_midway(weights, monkeypatch):
    """A type that fails after a few inputs takes no more frames: the others go on, and the frames it would have
    taken are not held for it."""
    held, take, window_input = [], _SharedFrames._take, WindowExtractor.window_input

    def measured_take(self, spot):
        frame = take(self, spot)
        held.append(len(self._held))
        return frame

    def fails_at_the_third_window(self, indices, frames, inputs):
        if indices[0] >= 2 * self.window_size:
            raise VideoError("a window the model cannot take")
        return window_input(self, indices, frames, inputs)

    monkeypatch.setattr(_SharedFrames, "_take", measured_take)
    monkeypatch.setattr(WindowExtractor, "window_input", fails_at_the_third_window)
    joint = JointExtractor({"feature_type": ["resnet18", "resnext101_3d"], "cpu": True, "weights_dir": str(weights)},
                           external_call=True)
    [(_, outcomes)] = joint.extract_many([joint.members[0].video_job(SAMPLE_30FPS)])
    assert outcomes["resnet18"]["resnet"].shape == (14, 512)
    assert str(outcomes["resnext101_3d"]) == "a window the model cannot take"
    assert max(held) <= 1  # the 3D model's 288 remaining frames are decoded (resnet18's are among them), not kept


@pytest.mark.parametrize("options, message", [
    ({"feature_type": ["resnet18", "resnet18"]}, "--feature_type names resnet18 twice"),
    ({"feature_type": ["resnet18", "vggish"], "stack_size": 8}, "--stack_size is not read by any of resnet18, vggish"),
    ({"feature_type": ["resnet18", "resnet50"], "checkpoint": "r.pth"},
     "--checkpoint is read by resnet18 and resnet50: give it to one, with --per_type resnet18:checkpoint=VALUE"),
    ({"feature_type": ["resnet18", "vggish"], "i3d:stack_size": 8}, "i3d:stack_size: i3d is not one of the feature"),
    ({"feature_type": ["resnet18", "vggish"], "output_direct": True}, "--output_direct is for a run of one feature"),
    ({"feature_type": ["resnet18", "vggish"], "collect_pickle": "a.pkl"}, "--collect_pickle is for a run of one"),
    ({"feature_type": ["resnet18", "slowonly"], "resnet18:stack_size": 8}, "--stack_size is not read by resnet18"),
])
def test_combinations_that_cannot_run_are_refused_up_front(options, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        joint_configs(options)


def test_an_option_goes_to_the_types_that_read_it_and_per_type_to_one():
    resnet, resnext = joint_configs({"feature_type": list(HOWTO100M_PAIR), "extract_method": "uni_5",
                                     "dtype": "float16", "resnext101_3d:step_size": 8})
    resnet_options, resnext_options = resnet.model_options, resnext.model_options
    assert str(resnet_options["extract_method"]) == "uni_5"
    assert resnet_options["dtype"] == resnext_options["dtype"] == "float16"
    assert (resnext_options["step_size"], resnext_options["stack_size"]) == (8, 16)
    assert "extract_method" not in resnext_options


def test_per_type_switches_and_lists_parse_as_on_the_command_line():
    options = parse_options(["--feature_type", "i3d", "resnet18", "--video_paths", "a.mp4", "--per_type",
                             "resnet18:l2_normalize=false", "i3d:l2_normalize=true", "i3d:streams=rgb,flow"])
    assert options["resnet18:l2_normalize"] is False and options["i3d:l2_normalize"] is True
    i3d, resnet = joint_configs(options)
    assert i3d.model_options["streams"] == ("rgb", "flow")
    assert i3d.model_options["l2_normalize"] and not resnet.model_options["l2_normalize"]


def test_the_command_line_takes_per_type_options(weights, tmp_path):
    out = tmp_path / "out"
    assert run_cli("--feature_type", "resnet18", "resnext101_3d", "--per_type", "resnext101_3d:stack_size=8",
                   "resnext101_3d:step_size=8", "--extract_method", "uni_3", "--weights_dir", str(weights),
                   "--video_paths", str(SAMPLE_19FPS), "--output_path", str(out)) == 0
    assert configuration(out / "resnext101_3d")["stack_size"] == 8
    assert np.load(out / "resnet18" / "v_GGSY1Qvo990_resnet.npy").shape == (3, 512)


def test_every_pair_of_types_resolves_or_is_refused_with_a_reason():
    """With their defaults, every pair of the tool's feature types is a joint run, or a UsageError that says why
    (a type that needs an option of its own, such as timm's --model_name)."""
    refused = {}
    for first, second in itertools.combinations(feature_types(), 2):
        try:
            configs = joint_configs({"feature_type": [first, second], "cpu": True})
        except UsageError as error:
            refused[(first, second)] = str(error)
            continue
        assert [config.feature_type for config in configs] == [first, second]
    assert refused and all("needs --model_name" in reason for reason in refused.values()), refused
