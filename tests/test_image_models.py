"""ResNet (torchvision weights) and timm: official checkpoint formats, enum transforms, features, predictions."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models import ResNet18_Weights, ResNet50_Weights, resnet18
from torchvision.models.video import R2Plus1D_18_Weights, S3D_Weights

from extractors.models.clip import ExtractCLIP
from extractors.models.resnet import RESNET_WEIGHTS, ExtractResNet
from extractors.models.timm_models import ExtractTimm
from extractors.transforms import IMAGENET_MEAN, IMAGENET_STD, FramePreprocessing
from io_utils.errors import UsageError
from io_utils.sampling import parse_extract_method
from io_utils.video import VideoReader
from tests.checkpoints import write_tiny_clip
from tests.conftest import SAMPLE_19FPS

RESNET18_FILE = "resnet18-f37072fd.pth"  # torchvision's file name for IMAGENET1K_V1


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("resnet_weights")
    assert RESNET_WEIGHTS["resnet18"]["IMAGENET1K_V1"].write_random(folder, seed=3).name == RESNET18_FILE
    return folder


@pytest.fixture(scope="module")
def sample_frames() -> list[np.ndarray]:
    """The frames uni_4 takes from the 19.62 fps sample (320x240), decoded sequentially."""
    with VideoReader(SAMPLE_19FPS) as video:
        targets = parse_extract_method("uni_4").target_pts(video.start_pts, video.end_pts, video.time_base)
        return [frame.rgb for frame in video.read_at(targets)]


def reference_resnet18(weights: Path) -> torch.nn.Module:
    network = resnet18()
    network.load_state_dict(torch.load(weights / RESNET18_FILE))
    return network.eval()


def test_transforms_equal_the_weight_enums_transforms(sample_frames):
    frames = torch.from_numpy(np.stack(sample_frames)).permute(0, 3, 1, 2)
    for weights in (ResNet18_Weights.IMAGENET1K_V1, ResNet50_Weights.IMAGENET1K_V2):  # resize 256 and 232
        ours = FramePreprocessing.from_torchvision(weights.transforms())
        expected = weights.transforms()(frames)
        assert torch.equal(torch.stack([ours(frame) for frame in sample_frames]), expected)
    for weights in (R2Plus1D_18_Weights.KINETICS400_V1, S3D_Weights.KINETICS400_V1):  # a clip: (C, T, H, W)
        ours = FramePreprocessing.from_torchvision(weights.transforms())
        expected = weights.transforms()(frames)
        assert torch.equal(torch.stack([ours(frame) for frame in sample_frames], dim=1), expected)


def test_resnet_features_and_predictions_equal_torchvisions_network(weights, sample_frames, capsys):
    extractor = ExtractResNet(dict(feature_type="resnet18", cpu=True, weights_dir=str(weights), extract_method="uni_4",
                                   show_pred=True))
    features = extractor.extract(SAMPLE_19FPS)
    assert features["resnet"].shape == (4, 512)
    inputs = ResNet18_Weights.IMAGENET1K_V1.transforms()(torch.from_numpy(np.stack(sample_frames)).permute(0, 3, 1, 2))
    network = reference_resnet18(weights)
    with torch.inference_mode():
        logits = network(inputs)
        network.fc = torch.nn.Identity()
        expected = network(inputs)
    np.testing.assert_allclose(features["resnet"], expected.numpy(), rtol=1e-4, atol=1e-5)
    lines = [line for line in capsys.readouterr().out.splitlines() if " ms: " in line]
    categories = ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
    assert [line.split(": ", 1)[1].split(" (")[0] for line in lines] == [categories[i] for i in logits.argmax(1)]


def test_three_crops_along_the_long_side(weights, sample_frames):
    common = dict(feature_type="resnet18", cpu=True, weights_dir=str(weights), views=2)
    centre = ExtractResNet(common).extract(SAMPLE_19FPS)["resnet"]
    three = ExtractResNet({**common, "crops": 3}).extract(SAMPLE_19FPS)
    assert three["resnet"].shape == (2, 3, 512) and three["timestamps_ms"].shape == (2,)
    np.testing.assert_allclose(three["resnet"][:, 1], centre, rtol=1e-4, atol=1e-5)
    # --views 2 is uni_2; the frame is resized to 341x256, the left crop is columns 0..223, the right 117..340.
    with VideoReader(SAMPLE_19FPS) as video:
        targets = parse_extract_method("uni_2").target_pts(video.start_pts, video.end_pts, video.time_base)
        first = next(video.read_at(targets)).rgb
    full = FramePreprocessing(256, (256, 341), IMAGENET_MEAN, IMAGENET_STD)(first)  # resized, nothing cropped
    network = reference_resnet18(weights)
    network.fc = torch.nn.Identity()
    with torch.inference_mode():
        left, right = network(torch.stack([full[:, 16:240, :224], full[:, 16:240, 117:]]))
    np.testing.assert_allclose(three["resnet"][0, 0], left.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(three["resnet"][0, 2], right.numpy(), rtol=1e-4, atol=1e-5)


def test_resnet_weights_and_checkpoint_errors(weights, tmp_path):
    with pytest.raises(UsageError, match="--weights IMAGENET1K_V2: not available for resnet18; choose one of IMAGENET1K_V1$"):
        ExtractResNet(dict(feature_type="resnet18", cpu=True, weights="IMAGENET1K_V2"))
    state_dict = torch.load(weights / RESNET18_FILE)
    state_dict["fc.extra"] = torch.zeros(1)
    torch.save(state_dict, tmp_path / "mine.pth")
    with pytest.raises(UsageError, match="mine.pth: not a torchvision resnet18 checkpoint .*Unexpected key"):
        ExtractResNet(dict(feature_type="resnet18", cpu=True, checkpoint=str(tmp_path / "mine.pth")))


@pytest.fixture(scope="module")
def timm_checkpoint(tmp_path_factory) -> Path:
    """A random ``test_vit`` (timm's tiny ViT, 160 px, bicubic, crop_pct 0.95) saved as timm saves weights:
    the model's state dict, classifier included."""
    import timm

    torch.manual_seed(4)
    path = tmp_path_factory.mktemp("timm") / "test_vit.pth"
    torch.save(timm.create_model("test_vit", pretrained=False).state_dict(), path)
    return path


def test_timm_features_equal_the_headless_model(timm_checkpoint):
    import timm

    extractor = ExtractTimm(dict(feature_type="timm", model_name="test_vit", checkpoint=str(timm_checkpoint), cpu=True,
                                 extract_method="uni_3"))
    features = extractor.extract(SAMPLE_19FPS)
    reference = timm.create_model("test_vit", pretrained=False, num_classes=0).eval()
    reference.load_state_dict({k: v for k, v in torch.load(timm_checkpoint).items() if not k.startswith("head.")})
    with VideoReader(SAMPLE_19FPS) as video:
        targets = parse_extract_method("uni_3").target_pts(video.start_pts, video.end_pts, video.time_base)
        inputs = torch.stack([extractor.preprocess(frame.rgb) for frame in video.read_at(targets)])
    with torch.inference_mode():
        expected = reference(inputs)
    assert features["timm"].shape == (3, reference.num_features)
    np.testing.assert_allclose(features["timm"], expected.numpy(), rtol=1e-4, atol=1e-5)


def test_timm_preprocessing_is_timms_own_pil_pipeline(timm_checkpoint, sample_frames):
    """Same resize (floor(160 / 0.95) = 168, bicubic, of a PIL image), crop and mean/std as timm's own pipeline:
    equal inputs. --fast_resize resizes a tensor instead, which rounds differently by a few grey levels."""
    import timm

    common = dict(feature_type="timm", model_name="test_vit", checkpoint=str(timm_checkpoint), cpu=True)
    extractor = ExtractTimm(common)
    fast = ExtractTimm({**common, "fast_resize": True})
    assert extractor.transform.resize == 168 and extractor.transform.crop == (160, 160)
    reference = timm.data.create_transform(**timm.data.resolve_data_config({}, model=extractor.model))
    for frame in sample_frames:
        ours, theirs = extractor.preprocess(frame), reference(Image.fromarray(frame))
        assert ours.shape == theirs.shape == (3, 160, 160)
        assert (ours - theirs).abs().max() <= 1e-6
        grey_levels = (fast.preprocess(frame) - theirs).abs() * 0.5 * 255  # std 0.5
        assert 0.5 < grey_levels.max() < 8 and grey_levels.mean() < 0.5


def test_timm_errors_name_the_model_and_the_way_out(monkeypatch):
    with pytest.raises(UsageError, match="--feature_type timm needs --model_name"):
        ExtractTimm(dict(feature_type="timm", cpu=True))
    with pytest.raises(UsageError, match="not a timm model; did you mean .*resnet50"):
        ExtractTimm(dict(feature_type="timm", model_name="resnet_50", cpu=True))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", "/nonexistent/hub")
    with pytest.raises(UsageError) as caught:
        ExtractTimm(dict(feature_type="timm", model_name="test_vit", cpu=True))
    message = str(caught.value)
    assert message.startswith("timm model test_vit: model.safetensors or pytorch_model.bin of "
                              "https://huggingface.co/timm/test_vit.r160_in1k is not in the Hugging Face cache "
                              "(/nonexistent/hub)")
    assert "huggingface-cli download timm/test_vit.r160_in1k" in message and "--checkpoint PATH" in message


def test_preprocessing_on_the_device_equals_the_cpu_tensor_path(weights, sample_frames, tmp_path):
    """``--preprocess_on_device`` run on the CPU device: ResNet, whose publisher resizes tensors, gets the default
    path's features bit for bit (with three crops too); CLIP, whose publisher resizes PIL images, gets
    ``--fast_resize``'s, and its inputs are within 0.1 (normalised units, about 7 grey levels) of the exact
    default's on the sample."""
    def resnet(**options) -> np.ndarray:
        return ExtractResNet(dict(feature_type="resnet18", cpu=True, weights_dir=str(weights), extract_method="uni_4",
                                  crops=3, **options)).extract(SAMPLE_19FPS)["resnet"]

    assert np.array_equal(resnet(preprocess_on_device=True), resnet())
    checkpoint = write_tiny_clip(tmp_path / "tiny.pt")

    def clip(**options) -> ExtractCLIP:
        return ExtractCLIP(dict(feature_type="CLIP-ViT-B/32", cpu=True, checkpoint=str(checkpoint),
                                extract_method="uni_4", **options))

    on_device = clip(preprocess_on_device=True)
    assert np.array_equal(on_device.extract(SAMPLE_19FPS)["clip"], clip(fast_resize=True).extract(SAMPLE_19FPS)["clip"])
    inputs = on_device.transform.batch(torch.from_numpy(np.stack(sample_frames)))
    exact = torch.stack([clip().transform(frame) for frame in sample_frames])
    assert 0 < (inputs - exact).abs().max() < 0.1


def test_batched_preprocessing_equals_frame_by_frame_for_every_kind_of_resize(sample_frames):
    frames = torch.from_numpy(np.stack(sample_frames))
    for preprocessing in (FramePreprocessing(256, (224, 224), IMAGENET_MEAN, IMAGENET_STD),
                          FramePreprocessing((224, 224), (224, 224), IMAGENET_MEAN, IMAGENET_STD, keep_ratio=1.0,
                                             fill=(10, 20, 30)),  # letterboxed: the crop pads
                          FramePreprocessing(112, None, IMAGENET_MEAN, IMAGENET_STD, v2=True)):
        for crops in ((1, 3, 10) if preprocessing.crop else (1,)):
            expected = torch.stack([preprocessing(frame, crops) for frame in sample_frames])
            assert torch.equal(preprocessing.batch(frames, crops), expected)
