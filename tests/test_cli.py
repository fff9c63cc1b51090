"""The command line: argument errors, the main job, CLI == Python API, npy == pkl, bad inputs."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

import main
from extractors import registry
from extractors.models.clip import CLIP_WEIGHTS, ExtractCLIP
from extractors.pool import LocalPoolExecutor
from extractors.registry import FeatureType
from extractors.weights import WeightsTable
from io_utils.files import atomic_write
from io_utils.sampling import parse_extract_method
from tests.clips import write_audio_only, write_clip
from tests.conftest import REPO, SAMPLE_19FPS


@pytest.fixture(scope="module")
def weights_dir(clip_checkpoint, tmp_path_factory):
    """The random checkpoint under its official file name, as a user would place a downloaded one."""
    folder = tmp_path_factory.mktemp("weights_dir")
    os.link(clip_checkpoint, folder / "ViT-B-32.pt")
    return folder


def run_main(*argv: str) -> int:
    return main.main(["--feature_type", "CLIP-ViT-B/32", "--cpu", *argv])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--video_paths", "a.mp4", "--video_dir", "d"], "not allowed with argument"),
        ([], "one of the arguments --video_paths --video_dir --file_with_video_paths --frames_dir --shards is required"),
        (["--video_paths", "a.mp4", "--extract_method", "uni_0"], "must be positive; accepted forms: uni_N"),
        (["--video_paths", "a.mp4", "--extract_method", "fix_0"], "must be positive"),
        (["--video_paths", "a.mp4", "--extract_method", "fix_-2"], "must be positive"),
        (["--video_paths", "a.mp4", "--extract_method", "uni_abc"], "is not a number"),
        (["--video_paths", "a.mp4", "--extract_method", "uni_2.5"], "whole number"),
        (["--video_paths", "a.mp4", "--extract_method", "every_3"], "unknown extraction method"),
    ],
)
def test_argument_errors_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as caught:
        run_main(*argv)
    assert caught.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_equals_python_api_and_npy_equals_pkl(clip_extractor, weights_dir, tmp_path):
    common = ["--extract_method", "uni_4", "--video_paths", str(SAMPLE_19FPS), "--weights_dir", str(weights_dir)]
    assert run_main(*common, "--on_extraction", "save_numpy", "--output_path", str(tmp_path / "npy")) == 0
    assert run_main(*common, "--on_extraction", "save_pickle", "--output_path", str(tmp_path / "pkl"),
                    "--output_direct") == 0
    api = clip_extractor.extract(SAMPLE_19FPS)
    for key in ("clip", "fps", "timestamps_ms"):
        from_npy = np.load(tmp_path / "npy" / "CLIP-ViT-B_32" / f"v_GGSY1Qvo990_{key}.npy")
        with open(tmp_path / "pkl" / f"v_GGSY1Qvo990_{key}.pkl", "rb") as handle:
            from_pkl = pickle.load(handle)
        np.testing.assert_array_equal(from_npy, from_pkl)
        np.testing.assert_allclose(from_npy, api[key], rtol=1e-5, atol=1e-6)
    assert np.load(tmp_path / "npy" / "CLIP-ViT-B_32" / "v_GGSY1Qvo990_clip.npy").dtype == np.float32


def test_csv_list_and_mirrored_video_dir(weights_dir, tmp_path):
    videos = tmp_path / "videos"
    write_clip(videos / "a" / "clip.mp4", num_frames=8)
    write_clip(videos / "b" / "clip.mp4", num_frames=8)
    out = tmp_path / "out"
    assert run_main("--video_dir", str(videos), "--recursive", "--extract_method", "uni_2", "--weights_dir",
                    str(weights_dir), "--on_extraction", "save_numpy", "--output_path", str(out), "--output_direct") == 0
    assert np.load(out / "a" / "clip_clip.npy").shape == (2, 512)
    assert np.load(out / "b" / "clip_clip.npy").shape == (2, 512)

    csv_file = tmp_path / "list.csv"
    csv_file.write_text(f"video_path,feature_path\n{videos / 'a' / 'clip.mp4'},{tmp_path / 'feats' / 'first.npy'}\n")
    assert run_main("--file_with_video_paths", str(csv_file), "--extract_method", "uni_2", "--weights_dir",
                    str(weights_dir), "--on_extraction", "save_numpy", "--output_path", str(tmp_path / "csv")) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "feats" / "first.npy"), np.load(out / "a" / "clip_clip.npy"))
    assert (tmp_path / "feats" / "first_timestamps_ms.npy").is_file()


def test_bad_inputs_each_get_one_line_and_the_rest_go_on(weights_dir, tmp_path):
    """Run as a user does (a subprocess): exit 1, one line per bad file, a summary, only good outputs."""
    good = write_clip(tmp_path / "good.mp4", num_frames=12)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "text.mp4"
    text.write_text("this is not a video\n" * 50)
    audio = write_audio_only(tmp_path / "audio.m4a")
    short = write_clip(tmp_path / "short.mp4", num_frames=2)
    cut_moov = write_clip(tmp_path / "cut_moov.mp4", num_frames=30)
    cut_moov.write_bytes(cut_moov.read_bytes()[: cut_moov.stat().st_size // 2])
    cut_data = write_clip(tmp_path / "cut_data.mp4", num_frames=30, container_options={"movflags": "faststart"})
    cut_data.write_bytes(cut_data.read_bytes()[: cut_data.stat().st_size // 2])
    missing = tmp_path / "missing.mp4"
    videos = [good, empty, text, audio, short, cut_moov, cut_data, missing]
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "main.py", "--feature_type", "CLIP-ViT-B/32", "--cpu", "--extract_method", "uni_4",
         "--weights_dir", str(weights_dir), "--on_extraction", "save_numpy", "--output_path", str(out),
         "--video_paths", *map(str, videos)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    reasons = {
        empty: "empty file (0 bytes)",
        text: "not a readable video",
        audio: "no video stream (only audio)",
        short: "too short: 2 frames, fewer than the 4 that uni_4 asks for",
        cut_moov: "a truncated or corrupt MP4/MOV file",
        cut_data: "truncated:",
    }
    for path, reason in reasons.items():
        lines = [line for line in result.stderr.splitlines() if str(path) in line]
        assert len(lines) == 1 and reason in lines[0], (path, result.stderr)
    assert f"1 input path(s) do not exist: {missing}" in result.stderr
    assert result.stdout.strip().splitlines()[-1] == "done: 1, skipped: 0, failed: 7"
    written = sorted(path.name for path in (out / "CLIP-ViT-B_32").iterdir())
    assert written == ["failures.tsv", "good_clip.npy", "good_fps.npy", "good_timestamps_ms.npy", "manifest.json"]
    failures = (out / "CLIP-ViT-B_32" / "failures.tsv").read_text().splitlines()
    assert failures[0] == "path\treason"
    assert sorted(line.split("\t")[0] for line in failures[1:]) == sorted(map(str, videos[1:]))


def test_missing_checkpoint_offline_is_one_line(tmp_path, capsys, monkeypatch):
    offline = replace(CLIP_WEIGHTS["CLIP-ViT-B/32"], url="http://127.0.0.1:9/clip/models/ViT-B-32.pt", sha256="0" * 64)
    monkeypatch.setitem(registry._FEATURE_TYPES, "CLIP-ViT-B/32",
                        FeatureType("CLIP-ViT-B/32", ExtractCLIP, WeightsTable([offline], default="openai")))
    video = write_clip(tmp_path / "v.mp4", num_frames=4)
    assert run_main("--video_paths", str(video)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: checkpoint ViT-B-32.pt is not available locally")


def test_interrupted_write_leaves_no_file(tmp_path):
    target = tmp_path / "features.npy"

    def failing_write(handle):
        handle.write(b"half of the bytes")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, failing_write)
    assert list(tmp_path.iterdir()) == []


def test_the_default_print_mode_prints_each_video(weights_dir, capfd):
    """Without --on_extraction (print) and with it given: the workers print each video's arrays."""
    common = ["--extract_method", "uni_2", "--weights_dir", str(weights_dir), "--video_paths", str(SAMPLE_19FPS)]
    for extra in ([], ["--on_extraction", "print"]):
        assert run_main(*common, *extra) == 0
        out = capfd.readouterr().out
        assert f"{SAMPLE_19FPS}:\n  clip: shape (2, 512), dtype float32" in out
        assert "  timestamps_ms: shape (2,)" in out and out.strip().splitlines()[-1] == "done: 1, skipped: 0, failed: 0"


@pytest.mark.parametrize("available, count, message", [
    (False, 0, "error: CUDA is not available on this machine; pass --cpu to run on the CPU"),
    (True, 2, "error: --device_ids 2 3: this machine has 2 CUDA device(s), numbered 0 to 1"),
])
def test_the_device_list_is_checked_before_any_worker_or_checkpoint(available, count, message, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(LocalPoolExecutor, "run", lambda *args: pytest.fail("workers were started"))
    monkeypatch.setattr(ExtractCLIP, "prepare", lambda *args: pytest.fail("a checkpoint was looked for"))
    code = main.main(["--feature_type", "CLIP-ViT-B/32", "--device_ids", "0", "1", "2", "3", "--extract_method",
                      "uni_12", "--video_dir", str(REPO / "sample"), "--on_extraction", "save_numpy"])
    assert code == 1 and capsys.readouterr().err.strip().splitlines() == [message]


def test_extract_method_all_takes_every_frame(clip_extractor, tmp_path):
    video = write_clip(tmp_path / "vfr.mp4", num_frames=7, times_ms=[0, 40, 120, 130, 300, 310, 500])
    every = clip_extractor.config.with_options(extract_method=parse_extract_method("all"))
    features = type(clip_extractor)(every).extract(video)
    np.testing.assert_allclose(features["timestamps_ms"], [0, 40, 120, 130, 300, 310, 500])
    assert features["clip"].shape == (7, 512)


def test_the_random_checkpoint_writer_prints_its_usage_and_refuses_what_has_no_checkpoint(tmp_path):
    command = [sys.executable, "main.py", "random_weights"]
    result = subprocess.run([*command, "--help"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("usage: main.py random_weights")
    result = subprocess.run([*command, str(tmp_path), "--feature_type", "timm", "--model_name",
                             "flexivit_base.300ep_in1k"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 1 and result.stderr.startswith("error: timm model flexivit_base.300ep_in1k: its "
                                                               "weights are not a hub checkpoint")
    assert list(tmp_path.iterdir()) == []
    result = subprocess.run([*command, str(tmp_path), "--feature_type", "i3d", "--flow_type", "pwc"], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["flow_imagenet.pt", "network-default.pytorch",
                                                                 "rgb_imagenet.pt"]
    result = subprocess.run([*command, str(tmp_path / "clip"), "--feature_type", "CLIP-ViT-B/32"], cwd=REPO,
                            capture_output=True, text=True)
    assert (result.returncode, result.stdout, result.stderr) == (0, f"{tmp_path / 'clip' / 'ViT-B-32.pt'}\n", ""), \
        result.stderr  # open_clip's "initialized randomly" warning, read as a failure, is not printed
