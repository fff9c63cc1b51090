"""CLIP: features equal open_clip's own pipeline; every checkpoint format loads the same tensors."""
from __future__ import annotations

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from extractors.models.clip import CLIP_WEIGHTS, ExtractCLIP, load_openai_state_dict
from extractors.registry import extractor_class
from io_utils.errors import UsageError
from io_utils.sampling import parse_extract_method
from io_utils.video import VideoReader
from tests.conftest import SAMPLE_19FPS


def test_features_equal_open_clip_on_pil_frames(clip_extractor, clip_checkpoint):
    """Same frames through open_clip's own loader and official PIL transform: the same features to float
    tolerance, also in their input-dependent part (each frame's minus the mean over frames)."""
    features = clip_extractor.extract(SAMPLE_19FPS)
    with VideoReader(SAMPLE_19FPS) as video:
        targets = parse_extract_method("uni_4").target_pts(video.start_pts, video.end_pts, video.time_base)
        images = [Image.fromarray(frame.rgb) for frame in video.read_at(targets)]
    reference_model = open_clip.load_openai_model(str(clip_checkpoint), precision="fp32", device="cpu").eval()
    transform = open_clip.image_transform(reference_model.visual.image_size, is_train=False)
    with torch.inference_mode():
        reference = reference_model.encode_image(torch.stack([transform(image) for image in images])).numpy()
    ours = features["clip"]
    assert ours.shape == (4, 512) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-5 * np.abs(reference).max())
    ours_part, reference_part = (ours - ours.mean(0)).ravel(), (reference - reference.mean(0)).ravel()
    cosine = ours_part @ reference_part / np.linalg.norm(ours_part) / np.linalg.norm(reference_part)
    assert cosine >= 0.9999, cosine
    assert features["timestamps_ms"].shape == (4,) and float(features["fps"]) == pytest.approx(19.62)


def test_state_dict_formats_load_the_same_tensors(tmp_path, clip_checkpoint):
    """TorchScript archive, plain state dict, DataParallel-wrapped and CLIP4Clip-prefixed files agree."""
    official = load_openai_state_dict(clip_checkpoint)
    plain = dict(official)
    variants = {
        "plain.pt": plain,
        "wrapped.pt": {"state_dict": {f"module.{key}": value for key, value in plain.items()}},
        "clip4clip.bin": {**{f"clip.{key}": value for key, value in plain.items()}, "loose_type.weight": torch.ones(2)},
    }
    for name, content in variants.items():
        torch.save(content, tmp_path / name)
        loaded = load_openai_state_dict(tmp_path / name)
        assert loaded.keys() == official.keys(), name
        assert all(torch.equal(loaded[key], official[key]) for key in official), name


def test_unreadable_checkpoint_is_one_clear_line(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(UsageError, match=r"garbage.pt: cannot be read"):
        load_openai_state_dict(garbage)
    with pytest.raises(UsageError, match="no such file"):
        load_openai_state_dict(tmp_path / "absent.pt")


def test_every_openai_variant_is_registered_with_its_official_file():
    """The file names and digests as OpenAI's own loader lists them (clip/clip.py, ``_MODELS``), written out."""
    expected = {"RN50": "RN50.pt", "RN101": "RN101.pt", "RN50x4": "RN50x4.pt", "RN50x16": "RN50x16.pt",
                "RN50x64": "RN50x64.pt", "ViT-B/32": "ViT-B-32.pt", "ViT-B/16": "ViT-B-16.pt",
                "ViT-L/14": "ViT-L-14.pt", "ViT-L/14@336px": "ViT-L-14-336px.pt"}
    assert {name: weights.file_name for name, weights in CLIP_WEIGHTS.items()} == {
        f"CLIP-{name}": file_name for name, file_name in expected.items()}
    assert CLIP_WEIGHTS["CLIP-ViT-B/32"].url == ("https://openaipublic.azureedge.net/clip/models/40d365715913c9da9857"
                                                 "9312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt")
    assert CLIP_WEIGHTS["CLIP-RN50x64"].sha256 == "be1cfb55d75a9666199fb2206c106743da0f6468c9d327f3e0d0a543a9919d9c"
    assert len({weights.sha256 for weights in CLIP_WEIGHTS.values()}) == 9
    assert all(extractor_class(name) is ExtractCLIP for name in CLIP_WEIGHTS)


def test_show_pred_prints_top5_over_given_texts(clip_checkpoint, capsys):
    texts = ["a dog", "a cat", "a car", "a tree", "a house", "a river"]
    extractor = ExtractCLIP(dict(feature_type="CLIP-ViT-B/32", cpu=True, checkpoint=str(clip_checkpoint),
                                 extract_method="uni_4", show_pred=True, pred_texts=texts))
    features = extractor.extract(SAMPLE_19FPS)
    lines = [line for line in capsys.readouterr().out.splitlines() if " ms: " in line]
    assert len(lines) == len(features["timestamps_ms"])
    ranked = lines[0].split(" ms: ")[1].split(", ")
    assert len(ranked) == 5 and all(entry.rsplit(" (", 1)[0] in texts for entry in ranked)
    scores = [float(entry.rsplit("(", 1)[1].rstrip(")")) for entry in ranked]
    assert scores == sorted(scores, reverse=True)
