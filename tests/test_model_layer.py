"""The model layer: a family with an option of its own is one module plus its import line; what the tool can
extract is listed from the registry; the generated reference equals the registry; every reader is a Reader."""
from __future__ import annotations

import importlib
import inspect
import json
import sys

import av
import cv2
import numpy as np
import pytest
import torch

import main
from extractors import describe, list_models, registry
from extractors.catalog import MODEL_TABLES, reference_pages, with_model_table
from extractors.cli import build_parser
from extractors.config import resolve_config
from extractors.models.clip import ExtractCLIP
from io_utils.audio import AudioReader
from io_utils.errors import UsageError, VideoError
from io_utils.frames import FrameFolderReader
from io_utils.readers import FrameReader, Reader
from io_utils.video import VideoReader
from tests.checkpoints import write_tiny_clip
from tests.clips import sequential_decode, write_clip, write_with_audio
from tests.conftest import REPO, SAMPLE_19FPS


@pytest.fixture
def toy(monkeypatch):
    """The toy family (tests/toy_family.py) registered for one test: the registry is restored afterwards."""
    monkeypatch.setattr(registry, "_FEATURE_TYPES", dict(registry._FEATURE_TYPES))
    sys.modules.pop("tests.toy_family", None)
    yield importlib.import_module("tests.toy_family")
    sys.modules.pop("tests.toy_family", None)


def test_a_family_declared_in_its_own_module_reaches_help_refusals_and_the_model_list(toy, capsys):
    help_text = " ".join(build_parser().format_help().split())
    assert "toy: --toy_gain TOY_GAIN multiply the mean colour by this (default: 1.0) [read by: toy]" in help_text
    with pytest.raises(UsageError, match=r"^--toy_gain is not read by resnet18; it reads "):
        resolve_config(dict(feature_type="resnet18", toy_gain=2))
    with pytest.raises(UsageError, match=r"^--crops is not read by toy; it reads --batch_size, --dtype, "
                                         r"--extract_method, --l2_normalize, --pool, --toy_gain, --views$"):
        resolve_config(dict(feature_type="toy", crops=3))
    assert list_models("to*") == ["toy"]
    info = describe("toy")
    assert (info.family, info.outputs, info.weights) == ("tests.toy_family", ("toy", "fps", "timestamps_ms"), ())
    assert "--toy_gain" in info.options
    with pytest.raises(SystemExit):
        main.main(["--list_models"])
    assert info.text() in capsys.readouterr().out


def test_a_run_of_the_family_records_its_option_and_gives_its_features(toy, tmp_path):
    """Through the command line's worker processes, which import the family's module themselves."""
    out = tmp_path / "out"
    assert main.main(["--feature_type", "toy", "--toy_gain", "2", "--cpu", "--extract_method", "uni_3",
                      "--video_paths", str(SAMPLE_19FPS), "--on_extraction", "save_numpy", "--output_path",
                      str(out)]) == 0
    manifest = json.loads((out / "toy" / "manifest.json").read_text())
    assert manifest["configuration"]["toy_gain"] == 2.0
    assert manifest["videos"]["v_GGSY1Qvo990"]["outputs"]["toy"] == [3, 3]
    features = np.load(out / "toy" / "v_GGSY1Qvo990_toy.npy")
    times = np.load(out / "toy" / "v_GGSY1Qvo990_timestamps_ms.npy")
    with av.open(str(SAMPLE_19FPS)) as container:
        time_base = container.streams.video[0].time_base
    pts, frames = sequential_decode(SAMPLE_19FPS)  # a plain decode: the frames by their time in ms
    by_time = {round(float((tick - min(pts)) * time_base * 1000), 6): frame for tick, frame in zip(pts, frames)}
    expected = [2.0 * by_time[round(time, 6)].reshape(-1, 3).astype(np.float64).mean(axis=0) for time in times]
    np.testing.assert_allclose(features, expected, rtol=1e-6)
    assert main.main(["--feature_type", "toy", "--toy_gain", "3", "--cpu", "--extract_method", "uni_3",
                      "--video_paths", str(SAMPLE_19FPS), "--on_extraction", "save_numpy", "--output_path",
                      str(out)]) == 1  # a folder holds one configuration: refused, naming the difference


def test_a_family_may_not_declare_an_option_of_every_run(toy):
    from extractors.options import Option

    class Clash(toy.ExtractToy):
        options = (*toy.ExtractToy.options, Option("output_path", None, "where", "out"))

    with pytest.raises(ValueError, match="clash: --output_path is an option of every run"):
        registry.register(registry.FeatureType("clash", Clash))


def test_the_generated_reference_equals_the_registry():
    pages = reference_pages()
    folder = REPO / "docs" / "reference"
    for name, text in pages.items():
        assert (folder / name).read_text() == text, f"docs/reference/{name} is out of date: run " \
                                                    "`python main.py reference docs/reference`"
    for name, links in MODEL_TABLES.items():
        text = (REPO / name).read_text()
        assert with_model_table(text, links) == text, f"the model table of {name} is out of date: run " \
                                                      "`python main.py reference docs/reference`"
    assert "| `timesformer` | TimeSformer (Kinetics-400)" in (REPO / "README.md").read_text()
    options = pages["options.md"]
    for name in ("--stack_size", "--raft_weights", "--weights_dir"):
        assert f"### `{name}" in options
    assert "formerly `--clip_checkpoint` for CLIP-*" in options
    assert "`C_T_SKHT_V2` (`sintel`) (default)" in pages["weights.md"]


def test_every_family_is_exported_and_listed_in_the_contributors_layout():
    import extractors

    families = {registry.extractor_class(name) for name in registry.feature_types()}
    missing = sorted(family.__name__ for family in families if getattr(extractors, family.__name__, None) is not family)
    assert not missing, f"extractors/__init__.py does not export {missing}"
    assert all(family.__name__ in extractors.__all__ for family in families)
    assert [family.__name__ for family in families if inspect.isabstract(family)] == []  # every hook is given
    layout = (REPO / "docs" / "contributing" / "index.md").read_text()
    modules = sorted(path.name for path in (REPO / "extractors" / "models").glob("*.py") if path.name != "__init__.py")
    assert [name for name in modules if f"`{name}`" not in layout] == []


def test_list_models_describes_every_feature_type_with_its_defaults():
    assert list_models("CLIP-*") == [name for name in list_models() if name.startswith("CLIP-")]
    i3d = describe("i3d")
    assert i3d.outputs == ("rgb", "flow", "fps", "timestamps_ms") and i3d.weights == ("rgb", "flow")  # both loaded
    assert i3d.sampling == "windows of 64 frames every 64 among every frame"
    raft = describe("raft")
    assert raft.weights[0] == "C_T_SKHT_V2 (default)" and "--weights (--raft_weights)" in raft.options
    assert describe("timm").weights == ()


def test_every_reader_is_a_reader_and_the_visual_ones_read_frames(tmp_path):
    audio_file = write_with_audio(tmp_path / "talk.mp4", seconds=1.0)
    frames = tmp_path / "frames"
    frames.mkdir()
    cv2.imwrite(str(frames / "1.png"), np.zeros((8, 8, 3), np.uint8))
    with VideoReader(SAMPLE_19FPS) as video, FrameFolderReader(frames, 25) as folder, AudioReader(audio_file) as audio:
        assert isinstance(video, FrameReader) and isinstance(folder, FrameReader)
        assert isinstance(audio, Reader) and not isinstance(audio, FrameReader)


def out_of_memory_above(extractor, inputs: int, sizes: list[int]) -> None:
    """Make ``extractor``'s forward pass fail as CUDA does when out of memory on batches of more than ``inputs``;
    ``sizes`` receives the size of every batch tried."""
    forward = extractor.forward

    def forward_or_fail(batch):
        sizes.append(len(batch))
        if len(batch) > inputs:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return forward(batch)

    extractor.forward = forward_or_fail


def test_out_of_memory_halves_the_batch_and_the_features_equal_a_run_at_the_size_that_fits(tmp_path):
    checkpoint = write_tiny_clip(tmp_path / "tiny.pt")
    clips = [write_clip(tmp_path / f"clip{i}.mp4", num_frames=50, size=(96, 64)) for i in range(2)]
    options = dict(feature_type="CLIP-ViT-B/32", cpu=True, checkpoint=str(checkpoint), extract_method="fix_10")
    extractor, sizes = ExtractCLIP({**options, "batch_size": 16}, external_call=True), []
    out_of_memory_above(extractor, 4, sizes)
    reference = ExtractCLIP({**options, "batch_size": 4}, external_call=True)
    for clip in clips:  # 20 inputs each: a batch of 16, then one of 4
        sizes.clear()
        features, expected = extractor.extract(clip), reference.extract(clip)
        assert np.array_equal(features["clip"], expected["clip"]) and features["clip"].shape[0] == 20
        assert sizes == [16, 8, 4, 4, 4, 4, 4]  # each video starts from --batch_size; its later batches keep 4
    out_of_memory_above(extractor, 0, [])
    with pytest.raises(VideoError, match=r"^out of memory on cpu even with one input per batch \(CUDA out of memory"):
        extractor.extract(clips[0])
