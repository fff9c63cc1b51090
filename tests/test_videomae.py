"""VideoMAE against transformers' own processor and model, on windows whose frames a sequential decode picks.

Random weights are written as the authors' hub repositories are published (``config.json``, safetensors with
``q_bias`` / ``v_bias``, ``preprocessor_config.json``) and read through the path a downloaded one takes.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from extractors.catalog import write_random_weights
from extractors.models.hub_repository import read_processor
from extractors.models.hub_video import processor_preprocessing
from extractors.models.videomae import ExtractVideoMAE
from io_utils.errors import UsageError
from tests.clips import frames_on_screen
from tests.conftest import SAMPLE_19FPS


@pytest.fixture(autouse=True)
def _offline_hub(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def test_kinetics_videomae_equals_transformers_processor_and_model(tmp_path):
    from transformers import VideoMAEForVideoClassification, VideoMAEImageProcessor

    weights = _safetensors(write_random_weights("videomae", tmp_path))
    extractor = ExtractVideoMAE(dict(feature_type="videomae", cpu=True, weights_dir=str(tmp_path)))
    features = extractor.extract(SAMPLE_19FPS)
    frames = frames_on_screen(SAMPLE_19FPS, 7.5)
    windows = [frames[start : start + 16] for start in range(0, len(frames) - 15, 16)][:2]
    processor = VideoMAEImageProcessor.from_pretrained(weights.parent)
    reference = VideoMAEForVideoClassification.from_pretrained(weights.parent).eval()
    published = load_file(str(weights))
    q_bias = published["videomae.encoder.layer.0.attention.attention.q_bias"]
    assert q_bias.abs().max() > 0
    ours_q = extractor.model["backbone"].encoder.encoder.layer[0].attention.attention.query.bias
    assert torch.equal(ours_q, q_bias)  # loaded, not left at zero
    theirs = processor([list(window) for window in windows], return_tensors="pt").pixel_values  # (2, 16, 3, 224, 224)
    ours = torch.stack([torch.stack([extractor.preprocess(frame) for frame in window]) for window in windows])
    difference = float((ours - theirs).abs().max())
    assert difference <= 1e-5, difference
    with torch.inference_mode():
        hidden = reference.videomae(pixel_values=theirs).last_hidden_state
        expected = reference.fc_norm(hidden.mean(dim=1)).numpy()
    assert features["videomae"].shape[1] == 768 and len(features["videomae"]) >= 2
    np.testing.assert_allclose(features["videomae"][:2], expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    centred = features["videomae"][:2] - features["videomae"][:2].mean(0)
    assert np.abs(centred).max() > 1e-3 * np.abs(expected).max()  # the windows are told apart
    torch.testing.assert_close(reference.videomae.encoder.layer[0].attention.attention.query.bias, q_bias)


def test_a_pretraining_checkpoint_gives_the_mean_of_its_encoders_last_hidden_states(tmp_path):
    from transformers import VideoMAEImageProcessor, VideoMAEModel

    weights = _safetensors(write_random_weights("videomae", tmp_path, weights="pretrained_base"))
    extractor = ExtractVideoMAE(dict(feature_type="videomae", weights="pretrained_base", cpu=True,
                                     weights_dir=str(tmp_path), views=1))
    features = extractor.extract(SAMPLE_19FPS)["videomae"]
    assert "head" not in extractor.model
    reference = VideoMAEModel.from_pretrained(weights.parent).eval()
    frames = frames_on_screen(SAMPLE_19FPS, 7.5)
    start = (len(frames) - 16) // 2  # --views 1: the middle window
    inputs = VideoMAEImageProcessor.from_pretrained(weights.parent)([frames[start : start + 16]], return_tensors="pt")
    with torch.inference_mode():
        expected = reference(**inputs).last_hidden_state.mean(dim=1).numpy()
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_videomae_refusals_are_one_line(tmp_path):
    with pytest.raises(UsageError, match="--show_pred: the classes of videomae pretrained_base have no published"):
        ExtractVideoMAE(dict(feature_type="videomae", weights="pretrained_base", cpu=True, show_pred=True))
    with pytest.raises(UsageError, match="not a repository in the hub's format .*preprocessor_config.json"):
        ExtractVideoMAE(dict(feature_type="videomae", cpu=True, checkpoint=str(tmp_path)))
    with pytest.raises(UsageError, match="^videomae kinetics400_base: .*MCG-NJU/videomae-base-finetuned-kinetics is not in the Hugging Face cache"):
        ExtractVideoMAE(dict(feature_type="videomae", cpu=True))


def test_a_processor_file_of_2022_loads_with_the_values_transformers_gives_it(tmp_path):
    """MCG-NJU's repositories hold the preprocessor_config.json a VideoMAEFeatureExtractor wrote in 2022: "size": 224,
    no crop_size, no rescale keys. transformers reads it as a 224 short side, a 224 x 224 crop and 1/255; so does
    the tool, through --checkpoint FOLDER as through the hub cache."""
    import json

    weights = _safetensors(write_random_weights("videomae", tmp_path / "cache"))
    folder = tmp_path / "folder"
    folder.mkdir()
    for path in weights.parent.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "do_center_crop": True, "do_normalize": True, "do_resize": True,
        "feature_extractor_type": "VideoMAEFeatureExtractor", "image_mean": [0.485, 0.456, 0.406],
        "image_std": [0.229, 0.224, 0.225], "resample": 2, "size": 224}))
    older = ExtractVideoMAE(dict(feature_type="videomae", cpu=True, checkpoint=str(folder)))
    published = processor_preprocessing(read_processor(weights.parent, "AutoImageProcessor"))
    assert older.transform == published  # the same resize, crop, rescale and normalisation: the same features


def _safetensors(files):
    return next(path for path in files if path.suffix == ".safetensors")
