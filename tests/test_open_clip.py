"""open_clip models and OpenAI's CLIP against their publishers' own pipelines, and DINOv2 against timm's.

Random weights are written in the official hub format (``main.py random_weights``) and loaded through the path a
downloaded repository takes; the references are open_clip's ``create_model_and_transforms`` and timm's
``create_model`` + ``create_transform`` on PIL images of the same frames, reading the same hub cache.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from extractors import extractor_class
from extractors.catalog import write_random_weights
from extractors.models.clip import CLIP_MEAN, CLIP_STD
from extractors.models.image_text import zero_shot_scores
from extractors.models.open_clip_models import ExtractOpenCLIP
from extractors.models.timm_models import ExtractTimm
from io_utils.errors import UsageError
from io_utils.sampling import parse_extract_method
from io_utils.video import VideoReader
from tests.clips import set_mp4_rotation, write_clip
from tests.conftest import SAMPLE_30FPS

# (model, tag): a SigLIP 2 (squash resize, mean and std 0.5, Gemma tokenizer), an EVA02 (a timm tower) and
# OpenAI's ViT-B/32 under open_clip's name without -quickgelu (the tag's QuickGELU must still apply).
PAIRS = [("ViT-B-16-SigLIP2", "webli"), ("EVA02-B-16", "merged2b_s8b_b131k"), ("ViT-B-32", "openai")]


@pytest.fixture(autouse=True)
def _offline_hub(monkeypatch):
    """The references look the files up in the hub cache without asking the (unreachable) hub first."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


class HubCache:
    """One hub cache folder into which each pair's random weights are written once."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._written: dict[tuple[str, str], list[Path]] = {}

    def files(self, name: str, tag: str) -> list[Path]:
        if (name, tag) not in self._written:
            self._written[name, tag] = write_random_weights("open_clip", self.folder, model_name=name, pretrained=tag)
        return self._written[name, tag]


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory):
    """Shared by the module's tests and deleted after them: a SigLIP 2 is 1.4 GB on disk, and one per test filled
    a small CI disk."""
    folder = tmp_path_factory.mktemp("hub_cache")
    yield HubCache(folder)
    shutil.rmtree(folder, ignore_errors=True)


def sampled_frames(path: Path, method: str = "uni_4") -> list[np.ndarray]:
    with VideoReader(path) as video:
        targets = parse_extract_method(method).target_pts(video.start_pts, video.end_pts, video.time_base)
        return [frame.rgb for frame in video.read_at(targets)]


def assert_same_features(ours: np.ndarray, expected: np.ndarray) -> None:
    """Equal within float tolerance, relative to the features' scale (random weights give small ones), and so is
    the input-dependent part (each frame's feature minus the mean over frames), which random weights make small
    beside the part every frame shares (cosine >= 0.999, as the issue measures it)."""
    scale = np.abs(expected).max()
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-5 * scale)
    ours_part, expected_part = (ours - ours.mean(axis=0)).ravel(), (expected - expected.mean(axis=0)).ravel()
    assert np.abs(expected_part).max() > 1e-5 * scale  # the frames are told apart
    cosine = ours_part @ expected_part / (np.linalg.norm(ours_part) * np.linalg.norm(expected_part))
    assert cosine >= 0.999


def open_clip_reference(name: str, tag: str, cache: Path):
    """open_clip's own model and eval transform for the pair, with the activation the tag was trained with."""
    import open_clip

    quick_gelu = open_clip.get_pretrained_cfg(name, tag).get("quick_gelu", False)
    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=tag, cache_dir=str(cache),
                                                                 force_quick_gelu=quick_gelu)
    return model.eval(), preprocess


@pytest.mark.parametrize("name, tag", PAIRS)
def test_open_clip_equals_open_clips_own_pipeline(hub_cache, name, tag):
    hub_cache.files(name, tag)
    cache = hub_cache.folder
    extractor = ExtractOpenCLIP(dict(feature_type="open_clip", model_name=name, pretrained=tag, cpu=True,
                                     weights_dir=str(cache), extract_method="uni_4"), external_call=True)
    features = extractor.extract(SAMPLE_30FPS)["open_clip"]
    assert not any(getattr(extractor.model, tower, None) for tower in ("text", "transformer"))  # image tower only
    model, preprocess = open_clip_reference(name, tag, cache)
    frames = sampled_frames(SAMPLE_30FPS)
    theirs = torch.stack([preprocess(Image.fromarray(frame)) for frame in frames])
    ours = torch.stack([extractor.preprocess(frame) for frame in frames])
    assert ours.shape == theirs.shape and (ours - theirs).abs().max() <= 1e-6
    with torch.inference_mode():
        expected = model.encode_image(theirs).numpy()
    assert_same_features(features, expected)


def test_the_command_line_writes_the_api_features_and_records_the_hub_file(hub_cache, tmp_path):
    """``main.py`` on the same pair saves what ``extract()`` returns, and its manifest names the hub file it
    loaded, with that file's SHA-256 and the tag's preprocessing."""
    import main

    weights = hub_cache.files("ViT-B-32", "openai")[0]
    options = dict(model_name="ViT-B-32", pretrained="openai", weights_dir=str(hub_cache.folder), views=3)
    assert main.main(["--feature_type", "open_clip", "--cpu", "--video_paths", str(SAMPLE_30FPS), "--on_extraction",
                      "save_numpy", "--output_path", str(tmp_path / "out"),
                      *[f"--{name}={value}" for name, value in options.items()]]) == 0
    folder = tmp_path / "out" / "open_clip"
    expected = ExtractOpenCLIP(dict(feature_type="open_clip", cpu=True, **options)).extract(SAMPLE_30FPS)
    np.testing.assert_array_equal(np.load(folder / f"{SAMPLE_30FPS.stem}_open_clip.npy"), expected["open_clip"])
    recorded = json.loads((folder / "manifest.json").read_text())
    entry = recorded["checkpoints"]["open_clip_model.safetensors"]
    assert entry["url"] == "https://huggingface.co/timm/vit_base_patch32_clip_224.openai/blob/main/open_clip_model.safetensors"
    assert entry["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert "resize=224, crop=(224, 224), mean=(0.48145466" in entry["preprocessing"] and "pil=True" in entry["preprocessing"]
    assert recorded["configuration"]["pretrained"] == "openai" and recorded["configuration"]["fast_resize"] is False


def test_a_checkpoint_file_keeps_the_preprocessing_of_its_tag(hub_cache):
    """open_clip, handed the file, would preprocess a SigLIP 2 as OpenAI's CLIP; --pretrained webli keeps
    SigLIP's squash resize and mean/std, and the features equal those of the same weights found by tag."""
    import open_clip

    safetensors_file = hub_cache.files("ViT-B-16-SigLIP2", "webli")[0]
    cache = hub_cache.folder
    common = dict(feature_type="open_clip", model_name="ViT-B-16-SigLIP2", pretrained="webli", cpu=True, views=2)
    by_file = ExtractOpenCLIP({**common, "checkpoint": str(safetensors_file)})
    by_tag = ExtractOpenCLIP({**common, "weights_dir": str(cache)})
    assert by_file.transform == by_tag.transform
    assert by_file.transform.mean == (0.5, 0.5, 0.5) and by_file.transform.resize == (224, 224)
    _, _, trap = open_clip.create_model_and_transforms("ViT-B-16-SigLIP2", pretrained=str(safetensors_file))
    assert tuple(trap.transforms[-1].mean) == CLIP_MEAN  # what this option exists for
    np.testing.assert_array_equal(by_file.extract(SAMPLE_30FPS)["open_clip"], by_tag.extract(SAMPLE_30FPS)["open_clip"])


def test_show_pred_on_siglip2_gives_open_clips_zero_shot_scores(hub_cache, capsys):
    import open_clip

    texts = ["a photo of dancing", "a photo of abseiling", "a photo of surfing water", "a dog", "a cat", "a car"]
    hub_cache.files("ViT-B-16-SigLIP2", "webli")
    cache = hub_cache.folder
    extractor = ExtractOpenCLIP(dict(feature_type="open_clip", model_name="ViT-B-16-SigLIP2", pretrained="webli",
                                     cpu=True, weights_dir=str(cache), extract_method="uni_3", show_pred=True,
                                     pred_texts=texts))
    features = extractor.extract(SAMPLE_30FPS)["open_clip"]
    model, _ = open_clip_reference("ViT-B-16-SigLIP2", "webli", cache)
    tokenizer = open_clip.get_tokenizer("ViT-B-16-SigLIP2", cache_dir=str(cache))
    with torch.inference_mode():  # open_clip's README: sigmoid(image @ text.T * logit_scale.exp() + logit_bias)
        text = torch.nn.functional.normalize(model.encode_text(tokenizer(texts)), dim=-1)
        image = torch.nn.functional.normalize(torch.from_numpy(features), dim=-1)
        expected = torch.sigmoid(image @ text.T * model.logit_scale.exp() + model.logit_bias)
    scores = zero_shot_scores(extractor.model, image, extractor.text_features)
    torch.testing.assert_close(scores, expected, rtol=1e-5, atol=1e-7)
    assert float(expected.max() - expected.min()) > 1e-6  # the texts are told apart
    lines = [line for line in capsys.readouterr().out.splitlines() if " ms: " in line]
    ranked = [[entry.rsplit(" (", 1)[0] for entry in line.split(" ms: ")[1].split(", ")] for line in lines]
    assert ranked == [[texts[i] for i in row] for row in expected.topk(5, dim=-1).indices.tolist()]


def openai_clip_transform(size: int) -> T.Compose:
    """The preprocessing of OpenAI's clip/clip.py (``_transform``), written out here as the reference."""
    return T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size),
                      lambda image: image.convert("RGB"), T.ToTensor(), T.Normalize(CLIP_MEAN, CLIP_STD)])


@pytest.fixture(scope="module")
def awkward_clips(tmp_path_factory) -> list[Path]:
    """A portrait phone clip (1280x720 stored, rotated), a 10-bit clip and an odd-sized one."""
    folder = tmp_path_factory.mktemp("awkward")
    rotated = write_clip(folder / "rotated_720p.mp4", num_frames=6, size=(1280, 720), noise=False)
    set_mp4_rotation(rotated, (0, 1, -1, 0))
    ten_bit = write_clip(folder / "ten_bit.mp4", num_frames=6, size=(640, 360), pix_fmt="yuv420p10le")
    odd = write_clip(folder / "odd.mp4", num_frames=6, size=(333, 199), pix_fmt="yuv444p")  # 4:2:0 needs even sizes
    return [rotated, ten_bit, odd]


def test_openai_clip_inputs_equal_openais_pil_preprocessing(clip_checkpoint, awkward_clips):
    common = dict(feature_type="CLIP-ViT-B/32", cpu=True, checkpoint=str(clip_checkpoint))
    exact = extractor_class("CLIP-ViT-B/32")(common)
    fast = extractor_class("CLIP-ViT-B/32")({**common, "fast_resize": True})
    reference = openai_clip_transform(224)
    shapes = []
    for path in awkward_clips:
        for frame in sampled_frames(path, "uni_2"):
            theirs = reference(Image.fromarray(frame))
            shapes.append(frame.shape)
            assert (exact.preprocess(frame) - theirs).abs().max() <= 1e-6, path.name
            assert (fast.preprocess(frame) - theirs).abs().max() > 1e-3  # tensor resizing is measurably different
    assert shapes[0] == (1280, 720, 3) and shapes[-1] == (199, 333, 3)


def test_open_clip_names_tags_and_sources_are_checked():
    def config(**options):
        return dict(feature_type="open_clip", cpu=True, **options)

    with pytest.raises(UsageError, match="not an open_clip model; did you mean .*ViT-B-16-SigLIP2"):
        ExtractOpenCLIP(config(model_name="ViT-B-16-SigLIP-2", pretrained="webli"))
    with pytest.raises(UsageError, match="--model_name ViT-B-16-SigLIP2 needs --pretrained TAG; choose one of webli"):
        ExtractOpenCLIP(config(model_name="ViT-B-16-SigLIP2"))
    with pytest.raises(UsageError, match="--pretrained laion2b: not a tag of ViT-B-32; choose one of openai, "):
        ExtractOpenCLIP(config(model_name="ViT-B-32", pretrained="laion2b"))
    with pytest.raises(UsageError, match="the folder or repository holds the weights"):
        ExtractOpenCLIP(config(model_name="local-dir:/x", pretrained="webli"))
    with pytest.raises(UsageError) as caught:
        ExtractOpenCLIP(config(model_name="ViT-B-16-SigLIP2", pretrained="webli"))
    message = str(caught.value)
    assert message.startswith("open_clip ViT-B-16-SigLIP2 webli: open_clip_model.safetensors or "
                              "open_clip_pytorch_model.bin of https://huggingface.co/timm/ViT-B-16-SigLIP2 is not in "
                              "the Hugging Face cache")
    assert "huggingface-cli download timm/ViT-B-16-SigLIP2" in message and "--checkpoint PATH" in message


def test_a_local_dir_folder_is_read_with_its_own_preprocessing(hub_cache):
    """A hub-format folder (``local-dir:``) gives the same model and preprocessing as the tag it was saved from."""
    folder = hub_cache.files("ViT-B-16-SigLIP2", "webli")[0].parent
    cache = hub_cache.folder
    common = dict(feature_type="open_clip", cpu=True, views=2)
    by_folder = ExtractOpenCLIP({**common, "model_name": f"local-dir:{folder}"})
    by_tag = ExtractOpenCLIP({**common, "model_name": "ViT-B-16-SigLIP2", "pretrained": "webli",
                              "weights_dir": str(cache)})
    assert by_folder.transform == by_tag.transform
    np.testing.assert_allclose(by_folder.extract(SAMPLE_30FPS)["open_clip"], by_tag.extract(SAMPLE_30FPS)["open_clip"],
                               rtol=1e-5, atol=1e-6)


DINOV2 = "vit_small_patch14_dinov2.lvd142m"


def test_dinov2_equals_timms_own_pipeline_and_its_token_features(tmp_path):
    """Inputs equal timm's create_transform on PIL images (518 px, bicubic, crop_pct 1.0), features its model's;
    cls_patch_mean is the class token and the mean patch token after the final norm, concatenated."""
    import timm

    write_random_weights("timm", tmp_path, model_name=DINOV2)
    common = dict(feature_type="timm", model_name=DINOV2, cpu=True, weights_dir=str(tmp_path), extract_method="uni_2")
    pooled = ExtractTimm(common)
    probe = ExtractTimm({**common, "image_feature": "cls_patch_mean"})
    reference = timm.create_model(DINOV2, pretrained=True, num_classes=0, cache_dir=str(tmp_path)).eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=reference))
    frames = sampled_frames(SAMPLE_30FPS, "uni_2")
    theirs = torch.stack([transform(Image.fromarray(frame)) for frame in frames])
    ours = torch.stack([pooled.preprocess(frame) for frame in frames])
    assert theirs.shape == (2, 3, 518, 518) and (ours - theirs).abs().max() <= 1e-6
    with torch.inference_mode():
        expected = reference(theirs).numpy()
        tokens = reference.forward_features(theirs)
    linear_probe = torch.cat([tokens[:, 0], tokens[:, 1:].mean(dim=1)], dim=1).numpy()
    assert_same_features(pooled.extract(SAMPLE_30FPS)["timm"], expected)
    assert_same_features(probe.extract(SAMPLE_30FPS)["timm"], linear_probe)
    assert linear_probe.shape == (2, 768)


def test_token_features_need_tokens(tmp_path):
    import timm

    checkpoint = tmp_path / "test_resnet.pth"
    torch.save(timm.create_model("test_resnet", pretrained=False).state_dict(), checkpoint)
    with pytest.raises(UsageError, match="--image_feature cls: timm model test_resnet is not a vision transformer"):
        ExtractTimm(dict(feature_type="timm", model_name="test_resnet", cpu=True, image_feature="cls",
                         checkpoint=str(checkpoint)))
