"""V-JEPA 2 against transformers' own video processor and model, on windows whose frames a sequential decode picks.

A released ViT-L takes about half a minute per 16-frame window on this CPU, so the repositories here are small
configurations (the same classes, two layers) written by ``save_pretrained`` into a folder in the hub's format and
read through ``--checkpoint``, the path a downloaded repository's files take after they are found.
"""
from __future__ import annotations


import numpy as np
import pytest
import torch

from extractors.models.vjepa2 import ExtractVJEPA2, write_vjepa2_repository
from io_utils.errors import UsageError
from tests.clips import frames_on_screen
from tests.conftest import SAMPLE_19FPS


@pytest.fixture(autouse=True)
def _offline_hub(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def small_configuration(**extra):
    """A V-JEPA 2 of two layers at 64 px (crop 64, so the processor resizes the short side to 73)."""
    from transformers import VJEPA2Config

    return VJEPA2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, crop_size=64, frames_per_clip=16,
                        pred_hidden_size=32, pred_num_hidden_layers=1, pred_num_attention_heads=4,
                        num_pooler_layers=1, **extra)


def windows_at(fps: float, count: int) -> list[list[np.ndarray]]:
    frames = frames_on_screen(SAMPLE_19FPS, fps)
    return [frames[start : start + 16] for start in range(0, len(frames) - 15, 16)][:count]


def test_a_pretrained_encoder_gives_the_mean_of_its_last_hidden_states(tmp_path):
    from transformers import VJEPA2Model, VJEPA2VideoProcessor

    folder = tmp_path / "vjepa2"
    files = write_vjepa2_repository(folder, small_configuration(), classifier=False, seed=1)
    assert {path.name for path in files} == {"config.json", "model.safetensors", "video_preprocessor_config.json"}
    extractor = ExtractVJEPA2(dict(feature_type="vjepa2", cpu=True, checkpoint=str(folder)))
    features = extractor.extract(SAMPLE_19FPS)["vjepa2"]
    windows = windows_at(7.5, 2)
    processor = VJEPA2VideoProcessor.from_pretrained(folder)
    reference = VJEPA2Model.from_pretrained(folder).eval()
    theirs = processor(videos=windows, return_tensors="pt").pixel_values_videos  # (2, 16, 3, 64, 64)
    ours = torch.stack([torch.stack([extractor.preprocess(frame) for frame in window]) for window in windows])
    assert theirs.shape == (2, 16, 3, 64, 64)
    difference = float((ours - theirs).abs().max())
    assert difference <= 1e-5, difference
    with torch.inference_mode():
        expected = reference(pixel_values_videos=theirs, skip_predictor=True).last_hidden_state.mean(dim=1).numpy()
    assert features.shape[1] == 64 and len(features) >= 2
    np.testing.assert_allclose(features[:2], expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    assert np.abs(features[0] - features[1]).max() > 1e-3 * np.abs(expected).max()  # the windows are told apart


def test_a_classifier_gives_its_attentive_pooler_output_and_its_own_class_names(tmp_path, capsys):
    from transformers import VJEPA2ForVideoClassification, VJEPA2VideoProcessor

    folder = tmp_path / "vjepa2_ssv2"
    names = ["pushing something", "pulling something", "dropping something", "lifting something",
             "tearing something", "folding something"]
    write_vjepa2_repository(folder, small_configuration(id2label=dict(enumerate(names))), classifier=True, seed=2)
    extractor = ExtractVJEPA2(dict(feature_type="vjepa2", weights="vitl_ssv2", cpu=True, checkpoint=str(folder),
                                   show_pred=True))
    features = extractor.extract(SAMPLE_19FPS)["vjepa2"]
    windows = windows_at(3.0, 1)  # the Something-Something rate: 16 frames at 3 fps
    reference = VJEPA2ForVideoClassification.from_pretrained(folder).eval()
    inputs = VJEPA2VideoProcessor.from_pretrained(folder)(videos=windows, return_tensors="pt")
    with torch.inference_mode():
        hidden = reference.vjepa2(pixel_values_videos=inputs.pixel_values_videos, skip_predictor=True).last_hidden_state
        pooled = reference.pooler(hidden)
        logits = reference(**inputs).logits
        torch.testing.assert_close(reference.classifier(pooled), logits)  # the pooler output is the classifier's input
    np.testing.assert_allclose(features[:1], pooled.numpy(), rtol=1e-4, atol=1e-4 * float(pooled.abs().max()))
    first = next(line for line in capsys.readouterr().out.splitlines() if " ms: " in line)
    printed = [entry.rsplit(" (", 1)[0] for entry in first.split(" ms: ")[1].split(", ")]
    assert printed == [names[index] for index in logits[0].topk(5).indices.tolist()]


def test_loading_is_strict_and_refusals_are_one_line(tmp_path):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "vjepa2"
    write_vjepa2_repository(folder, small_configuration(), classifier=False)
    tensors = load_file(str(folder / "model.safetensors"))
    assert any(key.startswith("predictor.") for key in tensors)  # published beside the encoder, not run
    save_file({key: value for key, value in tensors.items() if key != "encoder.layernorm.bias"},
              str(folder / "model.safetensors"))
    with pytest.raises(UsageError, match=r"its weights do not fit the VJEPA2Model its config.json describes \(missing "
                                         r"keys: encoder.layernorm.bias\)"):
        ExtractVJEPA2(dict(feature_type="vjepa2", cpu=True, checkpoint=str(folder)))
    save_file({**tensors, "decoder.weight": torch.zeros(2)}, str(folder / "model.safetensors"))
    with pytest.raises(UsageError, match=r"unexpected keys: decoder.weight"):
        ExtractVJEPA2(dict(feature_type="vjepa2", cpu=True, checkpoint=str(folder)))
    with pytest.raises(UsageError, match="not a repository in the hub's format"):
        ExtractVJEPA2(dict(feature_type="vjepa2", cpu=True, checkpoint=str(tmp_path / "empty")))
    save_file(tensors, str(folder / "model.safetensors"))
    with pytest.raises(UsageError, match=r"--show_pred: .*vjepa2 holds no classifier"):
        ExtractVJEPA2(dict(feature_type="vjepa2", weights="vitl_ssv2", cpu=True, checkpoint=str(folder),
                           show_pred=True))
    with pytest.raises(UsageError, match="--show_pred: the classes of vjepa2 vitl have no published names"):
        ExtractVJEPA2(dict(feature_type="vjepa2", cpu=True, show_pred=True))
    with pytest.raises(UsageError, match="^vjepa2 vitl: .*facebook/vjepa2-vitl-fpc64-256 is not in .*--checkpoint FOLDER"):
        ExtractVJEPA2(dict(feature_type="vjepa2", cpu=True, weights_dir=str(tmp_path)))
    with pytest.raises(UsageError, match="--stack_size 1: vjepa2 needs at least 2"):
        ExtractVJEPA2(dict(feature_type="vjepa2", cpu=True, stack_size=1))


def test_the_entries_describe_the_released_sizes():
    """Width, MLP width (ViT-g's ratio is 48/11) and layers of each released encoder, its crop and classes."""
    from extractors.models.vjepa2 import VJEPA2_WEIGHTS, release_configuration

    shapes = {name: (c.hidden_size, int(c.hidden_size * c.mlp_ratio), c.num_hidden_layers, c.crop_size)
              for name, c in ((name, release_configuration(name)) for name in VJEPA2_WEIGHTS)}
    assert shapes == {"vitl": (1024, 4096, 24, 256), "vith": (1280, 5120, 32, 256), "vitg": (1408, 6144, 40, 256),
                      "vitg_384": (1408, 6144, 40, 384), "vitl_ssv2": (1024, 4096, 24, 256)}
    assert release_configuration("vitl_ssv2").num_labels == 174
