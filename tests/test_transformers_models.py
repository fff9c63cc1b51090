"""``--feature_type transformers`` against transformers' own pipeline, model by model.

Each repository of ``tests/transformers_zoo.py`` (random weights, shrunk configurations, written by
``save_pretrained``) is run by the tool, and by the processor and model classes its documentation page uses on the
same decoded frames or samples; the inputs and the features must agree. The max abs differences are printed
(``pytest -s``) for the closing notes.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from extractors.engine_options import EXTRACT_METHOD, WEIGHTS
from extractors.models.transformers_models import ExtractTransformers, example_samples
from extractors.windows import EXTRACTION_FPS, STACK_SIZE, read_frames
from io_utils.audio import AudioReader
from io_utils.errors import UsageError
from io_utils.hub import snapshot_folder
from io_utils.video import VideoReader
from tests.conftest import SAMPLE_19FPS
from tests.transformers_zoo import ZOO, Repository

COMPARED = 3  # inputs compared per model


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("zoo")
    for seed, entry in enumerate(ZOO):
        entry.write(folder / entry.name, seed)
    return folder


@pytest.fixture(autouse=True)
def _offline_hub(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def _options(entry: Repository) -> dict:
    modality = {"video": dict(extraction_fps=4.0), "image": dict(extract_method="uni_3"), "audio": {}}
    return {**modality[entry.modality], **entry.options}


def _reference_pieces(entry: Repository, extractor: ExtractTransformers) -> list:
    """The first inputs, as a plain read gives them: windows of consecutive frames at the run's rate, the frames
    of uni_3, or the examples' samples from the start of the track."""
    config = extractor.config
    if entry.modality == "audio":
        rate = extractor.processor.sampling_rate
        span = example_samples(extractor.processor)
        with AudioReader(SAMPLE_19FPS, rate) as audio:
            samples = np.concatenate(list(audio.chunks()))
            offset = round(audio.audio_start_s * rate)
        padded = np.concatenate([np.zeros(max(offset, 0), np.float32), samples[max(-offset, 0):],
                                 np.zeros(span * COMPARED, np.float32)])
        count = max(1, min(COMPARED, (len(samples) + offset) // span))
        return [padded[index * span : (index + 1) * span] for index in range(count)]
    with VideoReader(SAMPLE_19FPS) as video:
        if entry.modality == "image":
            method = config[EXTRACT_METHOD]
            return [frame.rgb for frame in video.read_at(method.target_pts(video.start_pts, video.end_pts,
                                                                           video.time_base))]
        frames = [frame.rgb for frame in read_frames(video, config[EXTRACTION_FPS])]
    size = config[STACK_SIZE]
    return [frames[start : start + size] for start in range(0, len(frames) - size + 1, size)][:COMPARED]


def _tool_inputs(extractor: ExtractTransformers) -> list[dict[str, torch.Tensor]]:
    reader = extractor.open_reader(SAMPLE_19FPS)
    with reader:
        inputs = [item for item, _ in extractor.model_inputs(reader, extractor.video_job(SAMPLE_19FPS))]
    return inputs[:COMPARED]


# transformers 5.23 cannot load PeAudioVideoModel with from_pretrained: its tied-weights rule copies the video
# encoder's timm rotary embedding, whose ``bands`` is a buffer, and marking it fails. The tool says so in one line.
LOADS = [entry for entry in ZOO if entry.architecture != "PeAudioVideoModel"]


def test_what_transformers_cannot_load_is_said_in_one_line(zoo):
    import transformers

    with pytest.raises(AttributeError, match="bands"):
        transformers.PeAudioVideoModel.from_pretrained(zoo / "pe_audio_video")
    with pytest.raises(UsageError, match=r"pe_audio_video: transformers .* cannot load it as PeAudioVideoModel "
                                         r"\(AttributeError: `bands` is not an nn.Parameter\)$"):
        ExtractTransformers(dict(feature_type="transformers", model_name=str(zoo / "pe_audio_video"), cpu=True,
                                 stack_size=4))


@pytest.mark.parametrize("entry", LOADS, ids=[entry.name for entry in LOADS])
def test_equals_transformers_own_processor_and_model(entry, zoo):
    import transformers

    folder = zoo / entry.name
    extractor = ExtractTransformers(dict(feature_type="transformers", model_name=str(folder), cpu=True,
                                         **_options(entry)))
    assert extractor.modality == entry.modality
    features = extractor.extract(SAMPLE_19FPS)["transformers"]
    pieces = _reference_pieces(entry, extractor)
    model = getattr(transformers, entry.architecture).from_pretrained(folder).eval()
    processor = type(entry.processor()).from_pretrained(folder)
    with torch.inference_mode():
        expected = torch.cat([entry.reference(model, processor, piece) for piece in pieces]).numpy()
    ours_inputs = _tool_inputs(extractor)
    input_difference = max(float((ours - theirs).abs().max()) for ours, theirs in
                           zip(_main_tensors(ours_inputs), _main_tensors(_reference_inputs(entry, processor, pieces))))
    difference = float(np.abs(features[: len(expected)] - expected).max())
    print(f"\n{entry.name}: {features.shape[1]}-d, inputs {input_difference:.2e}, features {difference:.2e} "
          f"(scale {np.abs(expected).max():.2f})")
    assert len(features) >= len(expected) and features.shape[1:] == expected.shape[1:]
    assert input_difference <= 1e-5, input_difference
    np.testing.assert_allclose(features[: len(expected)], expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    if len(expected) > 1:  # the inputs are told apart
        assert np.abs(expected - expected.mean(0)).max() > 1e-4 * np.abs(expected).max()


def _reference_inputs(entry: Repository, processor, pieces: list) -> list[torch.Tensor]:
    """What the documented call gives the model: a window as one video, a frame, an example's samples."""
    if entry.modality == "audio":
        return [processor(piece, sampling_rate=processor.sampling_rate, return_tensors="pt") for piece in pieces]
    if entry.modality == "image":
        return [processor(images=piece, return_tensors="pt") for piece in pieces]
    from transformers.video_processing_utils import BaseVideoProcessor

    if isinstance(processor, BaseVideoProcessor):
        return [processor(videos=[np.stack(piece)], do_sample_frames=False, return_tensors="pt") for piece in pieces]
    return [processor(images=list(piece), return_tensors="pt") for piece in pieces]


def _main_tensors(inputs: list) -> list[torch.Tensor]:
    """The pixel or audio tensor of each input, flat (the tool's have no batch axis)."""
    tensors = []
    for item in inputs:
        key = next(key for key in ("pixel_values_videos", "pixel_values", "input_values", "input_features")
                   if key in item)
        tensors.append(item[key].reshape(-1))
    return tensors


def test_remote_code_is_refused_without_importing_it(tmp_path):
    folder = tmp_path / "custom"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "my_video_net", "architectures": ["MyVideoNet"],
                                                    "auto_map": {"AutoModel": "modeling_my.MyVideoNet"}}))
    (folder / "modeling_my.py").write_text("raise SystemExit('imported')\n")
    with pytest.raises(UsageError, match="trust_remote_code, which this tool never uses"):
        ExtractTransformers(dict(feature_type="transformers", model_name=str(folder), cpu=True))


def test_a_file_that_does_not_fit_its_architecture_is_refused(tmp_path, zoo):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "dinov3"
    folder.mkdir()
    for path in (zoo / "dinov3").iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    tensors = load_file(str(folder / "model.safetensors"))
    dropped = next(key for key in tensors if key.endswith("layer.1.mlp.up_proj.weight"))
    del tensors[dropped]
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(UsageError, match=f"do not fit the DINOv3ViTModel .*missing keys: .*{dropped}"):
        ExtractTransformers(dict(feature_type="transformers", model_name=str(folder), cpu=True))


def test_the_network_is_copied_out_of_the_weights_files_memory_map(zoo):
    """from_pretrained leaves tensors in the file's memory map at unaligned addresses, where CPU kernels round
    otherwise (CLAP's features moved by 4e-8): every tensor is in memory of its own, 64-byte aligned."""
    from extractors.models.hub_repository import load_network, located

    config = ExtractTransformers(dict(feature_type="transformers", model_name=str(zoo / "dinov3"), cpu=True)).config
    network = load_network(located(config))
    tensors = [*network.parameters(), *network.buffers()]
    assert tensors and [tensor.data_ptr() % 64 for tensor in tensors] == [0] * len(tensors)


def test_transformers_own_prints_stay_out_of_standard_output(zoo, capfd):
    """transformers 5.23 prints a check of its own docstrings each time it builds PeVideoModel; standard output is
    where --on_extraction print writes the features."""
    capfd.readouterr()
    ExtractTransformers(dict(feature_type="transformers", model_name=str(zoo / "pe_video"), cpu=True, stack_size=4))
    assert capfd.readouterr().out == ""


def test_options_of_another_modality_are_refused(zoo):
    with pytest.raises(UsageError, match="--stack_size is not read by transformers for .*dinov3, a image model"):
        ExtractTransformers(dict(feature_type="transformers", model_name=str(zoo / "dinov3"), cpu=True, stack_size=4))
    with pytest.raises(UsageError, match="--extract_method is not read by transformers for .*vivit, a video model"):
        ExtractTransformers(dict(feature_type="transformers", model_name=str(zoo / "vivit"), cpu=True,
                                 extract_method="uni_2"))
    with pytest.raises(UsageError, match="--embedding cls: XCLIPModel embeds video with more than one tower"):
        ExtractTransformers(dict(feature_type="transformers", model_name=str(zoo / "xclip"), cpu=True,
                                 embedding="cls"))


def test_token_choices_read_the_last_hidden_state(zoo):
    from transformers import DINOv3ViTModel

    folder = zoo / "dinov3"
    runs = {choice: ExtractTransformers(dict(feature_type="transformers", model_name=str(folder), cpu=True,
                                             extract_method="uni_2", embedding=choice)).extract(SAMPLE_19FPS)
            for choice in ("cls", "token_mean", "tokens")}
    tokens = runs["tokens"]["transformers"]
    model = DINOv3ViTModel.from_pretrained(folder).eval()
    assert tokens.shape == (2, 1 + model.config.num_register_tokens + 16, 32)
    np.testing.assert_allclose(runs["cls"]["transformers"], tokens[:, 0], rtol=1e-6)
    np.testing.assert_allclose(runs["token_mean"]["transformers"], tokens.mean(axis=1), rtol=1e-5, atol=1e-6)


def test_a_hub_id_is_found_in_the_weights_dir_and_recorded_with_its_hub_address(tmp_path, zoo):
    repository = snapshot_folder(tmp_path, "someone/tiny-vivit")
    for path in (zoo / "vivit").iterdir():
        (repository / path.name).write_bytes(path.read_bytes())
    config = dict(feature_type="transformers", model_name="someone/tiny-vivit", weights_dir=str(tmp_path), cpu=True,
                  extraction_fps=4.0)
    from_hub = ExtractTransformers(config).extract(SAMPLE_19FPS)["transformers"]
    local = ExtractTransformers({**config, "model_name": str(zoo / "vivit")}).extract(SAMPLE_19FPS)["transformers"]
    np.testing.assert_array_equal(from_hub, local)
    files = {file.path.name: file.source for file in ExtractTransformers.weights_files(
        ExtractTransformers(config).config)}
    assert files["model.safetensors"] == "https://huggingface.co/someone/tiny-vivit/blob/main/model.safetensors"
    with pytest.raises(UsageError, match=r"someone/other is not in the Hugging Face cache .*\(HF_HUB_OFFLINE is set\)"):
        ExtractTransformers({**config, "model_name": "someone/other"})


def test_a_named_entry_takes_its_repository_its_sampling_and_its_embedding(tmp_path):
    """timesformer: facebook/timesformer-base-finetuned-k400 written with random weights as it is published, found
    in --weights_dir; 8-frame windows at 30/32 fps; the classifier's input (the class token after the final norm)."""
    from transformers import TimesformerForVideoClassification, VideoMAEImageProcessor

    from extractors.catalog import write_random_weights
    from extractors.models.timesformer import ExtractTimeSformer

    written = write_random_weights("timesformer", tmp_path)
    folder = written[0].parent
    assert {path.name for path in written} == {"config.json", "model.safetensors", "preprocessor_config.json"}
    extractor = ExtractTimeSformer(dict(feature_type="timesformer", cpu=True, weights_dir=str(tmp_path), views=1))
    assert (extractor.config[STACK_SIZE], extractor.config[EXTRACTION_FPS], extractor.config[WEIGHTS]) == (
        8, 30 / 32, "k400_base")
    features = extractor.extract(SAMPLE_19FPS)
    with VideoReader(SAMPLE_19FPS) as video:
        frames = [frame.rgb for frame in read_frames(video, 30 / 32)]
    start = int((len(frames) - 8 + 1) / 2)  # --views 1: the middle window
    model = TimesformerForVideoClassification.from_pretrained(folder).eval()
    inputs = VideoMAEImageProcessor.from_pretrained(folder)(frames[start : start + 8], return_tensors="pt")
    with torch.inference_mode():
        expected = model.timesformer(**inputs).last_hidden_state[:, 0].numpy()
    assert features["timesformer"].shape == (1, 768)
    np.testing.assert_allclose(features["timesformer"], expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
