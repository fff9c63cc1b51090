"""The manifest of every run, --from_manifest, presets, packing into HDF5, and folders of frames as videos."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch
from torchvision.transforms import functional as TF

import main
from bench.pack import write_videos
from extractors.catalog import write_random_weights
from extractors.config import resolve_config
from extractors.models.r21d import ExtractR21D
from extractors.models.resnet import RESNET_WEIGHTS, ExtractResNet
from extractors.presets import PRESETS
from io_utils.errors import UsageError, VideoError
from io_utils.frames import FrameFolderReader, natural_key
from io_utils.manifest import Manifest, existing_manifest
from io_utils.pack import packed_videos, read_packed
from tests.conftest import SAMPLE_19FPS

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("repro_weights")
    write_random_weights("resnet18", folder, 21)
    write_random_weights("r21d", folder, 22)
    return folder


def run(weights: Path, out: Path, *options: str) -> int:
    return main.main(["--feature_type", "resnet18", "--cpu", "--weights_dir", str(weights), "--video_paths",
                      str(SAMPLE_19FPS), "--on_extraction", "save_numpy", "--output_path", str(out), *options])


def test_manifest_records_the_run_and_each_video(weights, tmp_path):
    assert run(weights, tmp_path, "--views", "2") == 0
    manifest = json.loads((tmp_path / "resnet18" / "manifest.json").read_text())
    checkpoint = weights / RESNET_WEIGHTS["resnet18"]["IMAGENET1K_V1"].file_name
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert manifest["configuration"]["views"] == 2 and manifest["configuration"]["feature_type"] == "resnet18"
    assert manifest["configuration"]["checkpoint_sha256"] == {checkpoint.name: digest}
    assert manifest["checkpoints"][checkpoint.name]["preprocessing"].startswith("FramePreprocessing(resize=256")
    assert checkpoint.with_name(checkpoint.name + ".sha256").read_text().startswith(digest)  # computed once
    assert len(manifest["tool"]["commit"]) == 40
    assert {"torch", "torchvision", "av", "ffmpeg (libavcodec)", "open_clip_torch", "timm", "numpy"} <= set(manifest["libraries"])
    assert manifest["device"] == {"type": "cpu", "saved_dtype": "float32"}
    video = manifest["videos"][SAMPLE_19FPS.stem]
    assert video["source"] == str(SAMPLE_19FPS.resolve()) and video["size"] == SAMPLE_19FPS.stat().st_size
    assert video["stream"]["codec"] == "h264" and video["stream"]["frames"] == 355 and video["stream"]["rotation"] == 0
    assert video["outputs"]["resnet"] == [2, 512] and video["seconds"] > 0


def test_video_records_survive_a_crash_through_the_journal(tmp_path):
    configuration = {"feature_type": "resnet18", "views": 2}
    crashed = Manifest.open(tmp_path, existing_manifest(tmp_path), configuration, {}, overwrite=False)
    crashed.add_video("a", {"seconds": 1.0})
    crashed.add_video("sub/b", {"seconds": 2.0})  # then the process dies: manifest.json was written at the start only
    assert json.loads((tmp_path / "manifest.json").read_text())["videos"] == {}
    with open(tmp_path / "manifest.videos.jsonl", "a") as journal:
        journal.write('{"video": "torn", "secon')  # the line being written when it died
    resumed = Manifest.open(tmp_path, existing_manifest(tmp_path), configuration, {}, overwrite=False)
    assert json.loads((tmp_path / "manifest.json").read_text())["videos"] == {"a": {"seconds": 1.0},
                                                                            "sub/b": {"seconds": 2.0}}
    assert not (tmp_path / "manifest.videos.jsonl").exists()
    resumed.add_video("c", {"seconds": 3.0})
    resumed.save()
    assert set(json.loads((tmp_path / "manifest.json").read_text())["videos"]) == {"a", "sub/b", "c"}
    Manifest.open(tmp_path, existing_manifest(tmp_path), {**configuration, "views": 3}, {}, overwrite=True)  # afresh
    assert json.loads((tmp_path / "manifest.json").read_text())["videos"] == {}


def test_outputs_found_complete_without_a_record_get_one_saying_so(weights, tmp_path):
    """A worker that stops after writing a video's outputs but before reporting them leaves no record; the run
    that finds those outputs complete records what it can, and a recorded video's record is kept as it was."""
    assert run(weights, tmp_path, "--views", "2") == 0
    path = tmp_path / "resnet18" / "manifest.json"
    recorded = json.loads(path.read_text())["videos"][SAMPLE_19FPS.stem]
    assert run(weights, tmp_path, "--views", "2") == 0  # skipped: its record stays
    manifest = json.loads(path.read_text())
    assert manifest["videos"][SAMPLE_19FPS.stem] == recorded and "stream" in recorded
    del manifest["videos"][SAMPLE_19FPS.stem]
    path.write_text(json.dumps(manifest))
    assert run(weights, tmp_path, "--views", "2") == 0
    found = json.loads(path.read_text())["videos"][SAMPLE_19FPS.stem]
    assert found == {"source": recorded["source"], "size": recorded["size"], "mtime": recorded["mtime"],
                     "outputs": recorded["outputs"], "found_complete": True}


def test_another_configuration_into_the_folder_is_refused_naming_the_options(weights, tmp_path, capsys):
    assert run(weights, tmp_path, "--views", "2") == 0
    capsys.readouterr()
    assert run(weights, tmp_path, "--views", "3", "--l2_normalize") == 1
    error = capsys.readouterr().err
    assert "holds features made with another configuration (--l2_normalize False -> True; --views 2 -> 3)" in error
    empty = tmp_path / "no_weights"
    empty.mkdir()
    assert run(empty, tmp_path, "--views", "3") == 1  # refused before looking for (or downloading) a checkpoint
    assert "holds features made with another configuration (--views 2 -> 3)" in capsys.readouterr().err
    assert run(weights, tmp_path, "--views", "2", "--batch_size", "7") == 0  # speed settings are not the recipe
    assert run(weights, tmp_path, "--views", "3", "--overwrite") == 0
    manifest = json.loads((tmp_path / "resnet18" / "manifest.json").read_text())
    assert manifest["configuration"]["views"] == 3
    assert np.load(tmp_path / "resnet18" / f"{SAMPLE_19FPS.stem}_resnet.npy").shape == (3, 512)


def test_from_manifest_reproduces_bit_identical_features(weights, tmp_path):
    assert run(weights, tmp_path / "first", "--extract_method", "uni_3", "--crops", "3", "--l2_normalize") == 0
    manifest = tmp_path / "first" / "resnet18" / "manifest.json"
    assert main.main(["--from_manifest", str(manifest), "--cpu", "--weights_dir", str(weights), "--video_paths",
                      str(SAMPLE_19FPS), "--on_extraction", "save_numpy", "--output_path", str(tmp_path / "again")]) == 0
    for key in ("resnet", "timestamps_ms", "fps"):
        name = f"{SAMPLE_19FPS.stem}_{key}.npy"
        assert (tmp_path / "first" / "resnet18" / name).read_bytes() == (tmp_path / "again" / "resnet18" / name).read_bytes()


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_resolves_and_explicit_options_override_it(name):
    config = resolve_config({"preset": name})
    explicit = resolve_config(dict(PRESETS[name].options))
    assert config.recorded() == explicit.recorded() and config.model_options == explicit.model_options
    assert resolve_config({"preset": name, "dtype": "float16"}).model_options["dtype"] == "float16"


def test_a_run_without_feature_type_preset_or_manifest_is_one_line(capsys):
    assert main.main(["--video_paths", str(SAMPLE_19FPS)]) == 1
    assert "error: --feature_type is required (or --preset NAME, or --from_manifest FILE)" in capsys.readouterr().err


def test_preset_contents_and_listing():
    assert resolve_config({"preset": "howto100m_2d"}).given() == {
        "preset": "howto100m_2d", "feature_type": "resnet152", "extract_method": resolve_config(
            {"feature_type": "resnet152", "extract_method": "fix_1"}).model_options["extract_method"],
        "side_size": 224, "l2_normalize": True, "dtype": "float16", "weights": "IMAGENET1K_V1"}
    three_d = resolve_config({"preset": "howto100m_3d"})
    assert {name: three_d.model_options[name] for name in ("extraction_fps", "stack_size", "step_size")} == dict(
        extraction_fps=24.0, stack_size=16, step_size=16)
    ten_crop = resolve_config({"preset": "i3d_rgb_ten_crop"})
    names = ("streams", "crops", "stack_size", "extraction_fps")
    assert {name: ten_crop.model_options[name] for name in names} == dict(
        streams=("rgb",), crops=10, stack_size=16, extraction_fps=25.0)
    listing = subprocess.run([sys.executable, "main.py", "--list_presets"], cwd=ROOT, capture_output=True, text=True)
    assert listing.returncode == 0
    for name in PRESETS:
        assert f"\n{name}\n" in f"\n{listing.stdout}"
    assert "resolved: --feature_type resnet152 --extract_method fix_1 --l2_normalize --dtype float16" in listing.stdout
    with pytest.raises(UsageError, match="--preset nope: unknown; choose one of howto100m_2d"):
        resolve_config({"preset": "nope"})


def test_side_size_feeds_resnet_the_whole_frame(weights):
    features = ExtractResNet(dict(feature_type="resnet18", cpu=True, weights_dir=str(weights), views=1,
                                  side_size=224)).extract(SAMPLE_19FPS)
    with av.open(str(SAMPLE_19FPS)) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    rgb = torch.from_numpy(frames[177]).permute(2, 0, 1)  # uni_1: the middle of 355 frames
    image = TF.resize(rgb, [224], antialias=True).float() / 255  # 320x240 -> 298x224, uncropped
    image = TF.normalize(image, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    network = RESNET_WEIGHTS["resnet18"]["IMAGENET1K_V1"].build()
    network.load_state_dict(torch.load(weights / RESNET_WEIGHTS["resnet18"]["IMAGENET1K_V1"].file_name))
    network.fc = torch.nn.Identity()
    with torch.inference_mode():
        expected = network.eval()(image[None])[0].numpy()
    np.testing.assert_allclose(features["resnet"][0], expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(UsageError, match="--side_size feeds the whole frame"):
        ExtractResNet(dict(feature_type="resnet18", cpu=True, weights_dir=str(weights), side_size=224, crops=3))


def test_pack_round_trip_equals_the_npy_files_and_a_rerun_adds_only_new_videos(tmp_path):
    folder = tmp_path / "out" / "resnet18"
    write_videos(folder, 0, 40)  # as a resnet18 run leaves them, half in a sub-folder
    packed = tmp_path / "features.h5"
    command = [sys.executable, "main.py", "pack", str(folder), "--to", str(packed), "--feature_type", "resnet18"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0 and "40 videos added, 0 already there" in result.stdout, result.stderr
    names = packed_videos(packed)
    assert len(names) == 40 and "sub/video000001" in names and "video000000" in names
    for name in names:
        arrays = read_packed(packed, name)
        for key in ("resnet", "timestamps_ms", "fps"):
            saved = np.load(folder / f"{name}_{key}.npy")
            assert arrays[key].dtype == saved.dtype and np.array_equal(arrays[key], saved)
    np.save(folder / "late_resnet.npy", np.ones((2, 512), np.float32))
    np.save(folder / "late_timestamps_ms.npy", np.zeros(2))
    np.save(folder / "late_fps.npy", np.asarray(30.0))
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert "1 videos added, 40 already there" in result.stdout
    assert len(packed_videos(packed)) == 41
    assert sorted(path.name for path in tmp_path.iterdir()) == ["features.h5", "out"]  # no temporary left


def test_open_features_reads_npy_pkl_and_packed_outputs_as_the_python_api_returns_them(weights, tmp_path):
    """The reader against the Python API on the same video: every key, dtype and value, from the .npy folder, the
    .pkl folder and the packed file, looked up by name or by the video's path."""
    from extractors import open_features

    expected = ExtractResNet(dict(feature_type="resnet18", cpu=True, weights_dir=str(weights), views=2),
                             external_call=True).extract(SAMPLE_19FPS)
    assert run(weights, tmp_path / "npy", "--views", "2") == 0
    assert run(weights, tmp_path / "pkl", "--views", "2", "--on_extraction", "save_pickle") == 0
    assert main.main(["pack", str(tmp_path / "npy" / "resnet18"), "--to", str(tmp_path / "all.h5")]) == 0
    for where in (tmp_path / "npy" / "resnet18", tmp_path / "pkl" / "resnet18", tmp_path / "all.h5"):
        features = open_features(where)
        assert list(features) == [SAMPLE_19FPS.stem] and len(features) == 1 and str(SAMPLE_19FPS) in features
        arrays = features[str(SAMPLE_19FPS)]
        assert list(arrays) == list(expected), where
        for key, value in expected.items():
            assert arrays[key].dtype == value.dtype and np.array_equal(arrays[key], value), (where, key)
    with pytest.raises(KeyError, match="other.mp4: not among the 1 videos of"):
        open_features(tmp_path / "all.h5")["other.mp4"]
    with pytest.raises(UsageError, match="neither an output folder nor a packed file"):
        open_features(tmp_path / "missing")
    with pytest.raises(UsageError, match=r"no manifest.json; give the feature type that made it"):
        open_features(tmp_path)


def test_pack_takes_the_keys_and_records_from_the_manifest(weights, tmp_path):
    assert run(weights, tmp_path, "--views", "2") == 0
    assert main.main(["pack", str(tmp_path / "resnet18"), "--to", str(tmp_path / "all.h5")]) == 0
    arrays = read_packed(tmp_path / "all.h5", SAMPLE_19FPS.stem)
    assert arrays["resnet"].shape == (2, 512) and arrays["manifest"]["stream"]["frames"] == 355
    assert main.main(["pack", str(tmp_path / "nothing"), "--to", str(tmp_path / "x.h5")]) == 1


def write_frames(folder: Path, frames: list[np.ndarray], names: list[str]) -> Path:
    folder.mkdir(parents=True)
    for frame, name in zip(frames, names):
        cv2.imwrite(str(folder / name), frame[:, :, ::-1])
    return folder


def write_ffv1(path: Path, frames: list[np.ndarray], fps: int) -> Path:
    """The same frames as a lossless video (FFV1, 8-bit RGB)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "bgr0"
        for index, frame in enumerate(frames):
            video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
            video_frame.pts = index
            container.mux(stream.encode(video_frame))
        container.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def frames_and_video(tmp_path_factory):
    """40 frames of the sample as PNG files named out of lexical order (img_2 before img_10), and as FFV1."""
    folder = tmp_path_factory.mktemp("frames")
    with av.open(str(SAMPLE_19FPS)) as container:
        frames = [frame.to_ndarray(format="rgb24") for _, frame in zip(range(40), container.decode(video=0))]
    images = write_frames(folder / "dataset" / "clip", frames, [f"img_{index + 1}.png" for index in range(40)])
    return images, write_ffv1(folder / "clip.mkv", frames, 20), frames


def test_frame_folders_give_the_features_of_the_same_frames_as_a_lossless_video(weights, frames_and_video):
    images, video, _ = frames_and_video
    common = dict(cpu=True, weights_dir=str(weights))
    for extractor, options in ((ExtractResNet, dict(feature_type="resnet18", extract_method="fix_3")),
                               (ExtractR21D, dict(feature_type="r21d", stack_size=8, step_size=4, extraction_fps=10))):
        from_video = extractor({**common, **options}).extract(video)
        from_frames = extractor({**common, **options, "frames_dir": str(images.parent), "frames_fps": 20}).extract(images)
        key = extractor.key
        assert from_frames[key].shape == from_video[key].shape and len(from_frames[key]) > 1
        np.testing.assert_allclose(from_frames[key], from_video[key], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(from_frames["timestamps_ms"], from_video["timestamps_ms"])


def test_frame_folder_order_times_and_errors(frames_and_video, tmp_path):
    images, _, frames = frames_and_video
    assert sorted(["img_10.png", "img_2.png", "img_1.png"], key=natural_key) == ["img_1.png", "img_2.png", "img_10.png"]
    with FrameFolderReader(images, 20) as reader:
        assert (reader.num_frames, reader.duration_s) == (40, 2.0)
        taken = list(reader.read_at([0, 19, 39]))
        assert [frame.time_ms for frame in taken] == [0.0, 950.0, 1950.0]
        assert np.array_equal(taken[1].rgb, frames[19])  # img_20.png, not img_19 of a lexical sort
    (tmp_path / "empty").mkdir()
    with pytest.raises(VideoError, match="no images"):
        FrameFolderReader(tmp_path / "empty", 20)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "img_1.jpg").write_bytes(b"not an image")
    with pytest.raises(VideoError, match="img_1.jpg: not a readable image"):
        list(FrameFolderReader(broken, 20).read_all())
    with pytest.raises(UsageError, match="--frames_dir and --frames_fps go together"):
        resolve_config({"feature_type": "resnet18", "frames_dir": str(tmp_path)})
    with pytest.raises(UsageError, match="folders of frames have no audio"):
        resolve_config({"feature_type": "vggish", "frames_dir": str(tmp_path), "frames_fps": 25})
