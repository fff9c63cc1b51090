"""CLAP against transformers' own ``ClapProcessor`` + ``ClapModel.get_audio_features``, on the same audio.

The repositories are small configurations of the released classes (one Swin block per stage, a one-layer text
tower), written by ``save_pretrained`` with a feature extractor configured as LAION's and read through
``--checkpoint``. The reference audio is the whole track decoded at once (the examples' placement is what is
checked), each example the part of it around the row's time.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from extractors import ExtractCLIP
from extractors.models.clap import SAMPLE_RATE, ExtractCLAP, write_clap_repository
from io_utils.audio import AudioReader
from io_utils.errors import UsageError
from tests.clips import write_with_audio
from tests.conftest import SAMPLE_19FPS


@pytest.fixture(autouse=True)
def _offline_hub(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def small_repository(folder: Path, fused: bool) -> Path:
    from transformers import ClapConfig, ClapModel

    audio = dict(depths=[1, 1, 1, 1], num_attention_heads=[1, 2, 2, 4], patch_embeds_hidden_size=16, hidden_size=128)
    if fused:
        audio.update(enable_fusion=True, fusion_type="aff_2d")
    text = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, vocab_size=400,
                max_position_embeddings=64)
    configuration = ClapConfig(text_config=text, audio_config=audio, projection_dim=32)
    write_clap_repository(folder, lambda: ClapModel(configuration), seed=3)
    return folder


def whole_track(path: Path) -> tuple[np.ndarray, int]:
    """Every sample of the track at 48 kHz, and where sample 0 sits on the timeline (in samples)."""
    with AudioReader(path, SAMPLE_RATE) as audio:
        samples = np.concatenate(list(audio.chunks()))
        return samples, round(audio.audio_start_s * SAMPLE_RATE)


def reference_embeddings(folder: Path, pieces: list[np.ndarray]) -> np.ndarray:
    from transformers import ClapModel, ClapProcessor

    processor = ClapProcessor.from_pretrained(folder)
    model = ClapModel.from_pretrained(folder).eval()
    rows = []
    with torch.inference_mode():
        for piece in pieces:  # one clip per call, as a user embeds a clip
            inputs = processor(audio=piece, sampling_rate=SAMPLE_RATE, return_tensors="pt")
            rows.append(model.get_audio_features(**inputs).pooler_output[0].numpy())
    return np.stack(rows)


def test_fix_1_rows_equal_clap_on_the_audio_around_each_clip_row(tmp_path, clip_checkpoint):
    folder = small_repository(tmp_path / "clap", fused=False)
    clap = ExtractCLAP(dict(feature_type="clap", cpu=True, checkpoint=str(folder), extract_method="fix_1"))
    ours = clap.extract(SAMPLE_19FPS)
    clip = ExtractCLIP(dict(feature_type="CLIP-ViT-B/32", cpu=True, checkpoint=str(clip_checkpoint),
                            extract_method="fix_1"), external_call=True).extract(SAMPLE_19FPS)
    np.testing.assert_array_equal(ours["timestamps_ms"], clip["timestamps_ms"])  # one row per CLIP row
    assert len(ours["clap"]) == 19
    samples, offset = whole_track(SAMPLE_19FPS)
    starts = [round(time * SAMPLE_RATE / 1000) - SAMPLE_RATE * 5 - offset for time in ours["timestamps_ms"]]
    pieces = [samples[max(start, 0) : start + SAMPLE_RATE * 10] for start in starts]  # within the track
    assert len(pieces[0]) < SAMPLE_RATE * 10 and len(pieces[9]) == SAMPLE_RATE * 10
    expected = reference_embeddings(folder, pieces)
    difference = float(np.abs(ours["clap"] - expected).max())
    assert difference <= 1e-5, difference
    np.testing.assert_allclose(np.linalg.norm(ours["clap"], axis=1), 1.0, rtol=1e-5)  # unit norm, as CLAP gives
    assert np.abs(ours["clap"][0] - ours["clap"][9]).max() > 1e-3  # the rows are told apart


def test_a_fused_model_on_a_short_clip_equals_clap_on_the_whole_clip(tmp_path):
    folder = small_repository(tmp_path / "clap_fused", fused=True)
    clip = write_with_audio(tmp_path / "short.mp4", seconds=4.0, sample_rate=44100)
    ours = ExtractCLAP(dict(feature_type="clap", weights="htsat_fused", cpu=True, checkpoint=str(folder))).extract(clip)
    samples, offset = whole_track(clip)
    assert offset == 0 and len(ours["clap"]) == 1 and ours["timestamps_ms"][0] == 5000.0
    expected = reference_embeddings(folder, [samples])  # repeat-padded to 10 s, "longer" (fusion) by CLAP's rule
    np.testing.assert_allclose(ours["clap"], expected, rtol=1e-5, atol=1e-5)


def test_show_pred_gives_claps_own_audio_text_scores(tmp_path, capsys):
    from transformers import ClapModel, ClapProcessor

    folder = small_repository(tmp_path / "clap", fused=False)
    texts = ["the sound of a dog barking", "rain falling on a roof", "music with drums", "birds singing",
             "a car engine starting", "a door closing"]
    extractor = ExtractCLAP(dict(feature_type="clap", cpu=True, checkpoint=str(folder), show_pred=True,
                                 pred_texts=texts))
    assert extractor.model.text_model is None  # dropped once the texts are encoded
    extractor.extract(SAMPLE_19FPS)
    samples, _ = whole_track(SAMPLE_19FPS)
    processor, model = ClapProcessor.from_pretrained(folder), ClapModel.from_pretrained(folder).eval()
    inputs = processor(text=texts, audio=samples[: SAMPLE_RATE * 10], sampling_rate=SAMPLE_RATE, padding=True,
                       return_tensors="pt")
    with torch.inference_mode():
        scores = model(**inputs).logits_per_audio.softmax(dim=-1)[0]
    line = next(line for line in capsys.readouterr().out.splitlines() if " ms: " in line)
    printed = [(entry.rsplit(" (", 1)[0], float(entry.rsplit(" (", 1)[1].rstrip(")"))) for entry in
               line.split(" ms: ")[1].split(", ")]
    assert [name for name, _ in printed] == [texts[index] for index in scores.topk(5).indices.tolist()]
    np.testing.assert_allclose([score for _, score in printed], scores.topk(5).values.numpy(), atol=6e-4)


def test_clap_refusals_are_one_line(tmp_path):
    with pytest.raises(UsageError, match="--show_pred: clap scores the texts of --pred_texts"):
        ExtractCLAP(dict(feature_type="clap", cpu=True, show_pred=True))
    with pytest.raises(UsageError, match="not a repository in the hub's format"):
        ExtractCLAP(dict(feature_type="clap", cpu=True, checkpoint=str(tmp_path)))
    with pytest.raises(UsageError, match="^clap htsat_unfused: .*laion/clap-htsat-unfused is not in"):
        ExtractCLAP(dict(feature_type="clap", cpu=True, weights_dir=str(tmp_path)))
    with pytest.raises(UsageError, match="--frames_dir: folders of frames have no audio for clap"):
        ExtractCLAP(dict(feature_type="clap", cpu=True, frames_dir=str(tmp_path), frames_fps=25))
