"""VGGish: the published front end, the network, AudioSet's post-processing, the time grid, codecs, bad input."""
from __future__ import annotations

import io
import shutil
import wave
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import main
from extractors.catalog import write_random_weights
from extractors.models.clip import ExtractCLIP
from extractors.models.vggish import VGGISH_PCA, VGGISH_WEIGHTS, ExtractVGGish, VGGishPCA
from io_utils.audio import AudioReader
from io_utils.errors import VideoError
from tests.checkpoints import official_keys
from tests.clips import write_clip, write_with_audio


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("vggish_weights")
    write_random_weights("vggish", folder, seed=21, vggish_postprocess=True)
    return folder


def vggish(weights: Path, **options) -> ExtractVGGish:
    return ExtractVGGish(dict(feature_type="vggish", cpu=True, weights_dir=str(weights), **options))


def write_wav(path: Path, samples: np.ndarray, rate: int = 16000) -> Path:
    """16-bit mono PCM, as AudioSet's reference reads it (``int16 / 32768``)."""
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(np.round(np.clip(samples * 32768, -32768, 32767)).astype("<i2").tobytes())
    return path


def reference_log_mel(waveform: np.ndarray) -> np.ndarray:
    """The published front end written out plainly: frame by frame, band by band, in float64."""
    window = np.hanning(401)[:-1]  # periodic Hann of 400 samples
    frames = [waveform[start : start + 400] for start in range(0, len(waveform) - 399, 160)]
    spectra = np.array([np.abs(np.fft.rfft(frame * window, 512)) for frame in frames])
    mel = lambda hertz: 1127.0 * np.log(1.0 + hertz / 700.0)  # noqa: E731  (HTK)
    edges = np.linspace(mel(125.0), mel(7500.0), 66)
    weights = np.zeros((257, 64))
    for band in range(64):
        low, centre, high = edges[band : band + 3]
        for spectrum_bin in range(1, 257):  # bin 0 (DC) is left out
            position = mel(spectrum_bin * 8000.0 / 256)
            if low < position <= centre:
                weights[spectrum_bin, band] = (position - low) / (centre - low)
            elif centre < position < high:
                weights[spectrum_bin, band] = (high - position) / (high - centre)
    return np.log(spectra @ weights + 0.01)


def examples_of(extractor: ExtractVGGish, path: Path) -> tuple[np.ndarray, list[float]]:
    with extractor.open_reader(path) as audio:
        inputs = list(extractor.model_inputs(audio, extractor.video_job(path)))
    return np.stack([example.numpy() for example, _ in inputs]), [time for _, time in inputs]


def test_log_mel_of_tones_and_noise_equals_the_published_front_end(weights, tmp_path):
    time = np.arange(int(3.3 * 16000)) / 16000
    signals = {"tones": 0.4 * np.sin(2 * np.pi * 440 * time) + 0.2 * np.sin(2 * np.pi * 3000 * time),
               "noise": np.random.default_rng(0).uniform(-0.5, 0.5, time.size)}
    extractor = vggish(weights)
    for name, signal in signals.items():
        path = write_wav(tmp_path / f"{name}.wav", signal)
        examples, times = examples_of(extractor, path)
        quantised = np.round(np.clip(signal * 32768, -32768, 32767)) / 32768
        frames = reference_log_mel(quantised)  # 329 frames -> 3 whole examples of 96
        expected = np.stack([frames[96 * k : 96 * k + 96] for k in range(len(frames) // 96)])
        assert examples.shape == expected.shape == (3, 96, 64)
        np.testing.assert_allclose(examples, expected, atol=1e-5, rtol=0)  # float32 rounding: 2.4e-7 seen
        assert times == [480.0, 1440.0, 2400.0]  # the centres of 0-0.96, 0.96-1.92 and 1.92-2.88 s


class ReferenceVGGish(torch.nn.Module):
    """VGGish written out from its description: four conv blocks of 3x3 convolutions and 2x2 max pools, the maps
    flattened in TensorFlow's (height, width, channel) order, three dense layers, no activation at the end."""

    def __init__(self, state_dict: dict[str, torch.Tensor]):
        super().__init__()
        self.weights = state_dict

    def forward(self, examples: torch.Tensor) -> torch.Tensor:
        x = examples.unsqueeze(1)
        for block in ((0,), (3,), (6, 8), (11, 13)):
            for index in block:
                x = F.relu(F.conv2d(x, self.weights[f"features.{index}.weight"], self.weights[f"features.{index}.bias"],
                                    padding=1))
            x = F.max_pool2d(x, 2)
        x = x.transpose(1, 3).transpose(1, 2).reshape(len(x), -1)
        for index in (0, 2, 4):
            x = F.linear(x, self.weights[f"embeddings.{index}.weight"], self.weights[f"embeddings.{index}.bias"])
            x = F.relu(x) if index < 4 else x
        return x


def test_network_loads_the_published_format_strictly_and_equals_a_reference(weights, tmp_path):
    state_dict = torch.load(weights / VGGISH_WEIGHTS["audioset"].file_name)
    assert {key: list(value.shape) for key, value in state_dict.items()} == official_keys("vggish")
    pca = torch.load(weights / VGGISH_PCA.file_name, weights_only=False)
    assert {key: list(value.shape) for key, value in pca.items()} == official_keys("vggish_pca")
    assert all(isinstance(value, np.ndarray) for value in pca.values())  # the release holds NumPy arrays
    extractor = vggish(weights)
    path = write_wav(tmp_path / "noise.wav", np.random.default_rng(1).uniform(-0.3, 0.3, 2 * 16000))
    features = extractor.extract(path)
    examples, _ = examples_of(extractor, path)
    with torch.inference_mode():
        expected = ReferenceVGGish(state_dict)(torch.from_numpy(examples))
    assert features["vggish"].shape == (2, 128) and (features["vggish"] < 0).any()  # no ReLU at the end
    np.testing.assert_allclose(features["vggish"], expected.numpy(), atol=1e-5, rtol=1e-5)


def test_postprocessing_equals_the_published_formula(weights, tmp_path):
    pca = torch.load(weights / VGGISH_PCA.file_name, weights_only=False)
    matrix, means = pca["pca_eigen_vectors"], pca["pca_means"]

    def published(embeddings: np.ndarray) -> np.ndarray:  # AudioSet's vggish_postprocess.Postprocessor
        applied = np.dot(matrix, (embeddings.T - means.reshape(-1, 1))).T
        return ((np.clip(applied, -2.0, 2.0) + 2.0) * (255.0 / 4.0)).astype(np.uint8)

    module = VGGishPCA()
    module.load_state_dict({key: torch.from_numpy(value) for key, value in pca.items()})
    known = np.random.default_rng(2).normal(0, 1.5, (50, 128))
    known[0] = means + matrix[3] * 2.0  # exactly on the upper clip: 255
    with torch.inference_mode():
        ours = module(torch.from_numpy(known).float()).numpy()
    np.testing.assert_array_equal(ours, published(known.astype(np.float32).astype(np.float64)))
    assert ours[0, 3] == 255 and ours.min() >= 0 and ours.max() <= 255
    path = write_wav(tmp_path / "tone.wav", 0.3 * np.sin(np.arange(32000) / 5))
    raw = vggish(weights).extract(path)["vggish"]
    processed = vggish(weights, vggish_postprocess=True).extract(path)["vggish"]
    np.testing.assert_array_equal(processed, published(raw.astype(np.float64)))


def test_a_pca_file_pickled_by_numpy_1_loads(weights, tmp_path):
    """The released PCA file was pickled in 2019 by NumPy 1, whose array module NumPy 2 renamed (``numpy.core``
    -> ``numpy._core``), in torch's legacy format: it loads, as arrays only."""
    arrays = torch.load(weights / VGGISH_PCA.file_name, weights_only=False)
    buffer = io.BytesIO()
    torch.save(arrays, buffer, _use_new_zipfile_serialization=False)
    legacy = buffer.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray" in legacy and b"numpy._core" not in legacy
    folder = tmp_path / "legacy"
    folder.mkdir()
    shutil.copy(weights / VGGISH_WEIGHTS["audioset"].file_name, folder)
    (folder / VGGISH_PCA.file_name).write_bytes(legacy)
    path = write_wav(tmp_path / "tone.wav", 0.3 * np.sin(np.arange(32000) / 5))
    expected = vggish(weights, vggish_postprocess=True).extract(path)["vggish"]
    np.testing.assert_array_equal(vggish(folder, vggish_postprocess=True).extract(path)["vggish"], expected)


def test_fix_1_rows_are_those_of_fix_1_clip_and_timestamps_from_gives_one_row_per_visual_row(
        weights, clip_checkpoint, tmp_path):
    video = write_with_audio(tmp_path / "talk.mp4", seconds=4.3)
    clip = ExtractCLIP(dict(feature_type="CLIP-ViT-B/32", cpu=True, checkpoint=str(clip_checkpoint),
                            extract_method="fix_1")).extract(video)
    audio = vggish(weights, extract_method="fix_1").extract(video)
    assert audio["vggish"].shape == (5, 128)
    np.testing.assert_array_equal(audio["timestamps_ms"], clip["timestamps_ms"])
    stamps = tmp_path / "i3d"
    stamps.mkdir()
    np.save(stamps / "talk_timestamps_ms.npy", np.array([300.0, 1250.0, 1250.0, 3999.0]))
    rows = vggish(weights, timestamps_from=str(stamps)).extract(video)
    assert rows["vggish"].shape == (4, 128)
    np.testing.assert_array_equal(rows["timestamps_ms"], [300.0, 1250.0, 1250.0, 3999.0])
    np.testing.assert_array_equal(rows["vggish"][1], rows["vggish"][2])


def test_timestamps_from_finds_an_earlier_runs_rows_where_a_csv_list_put_them(weights, tmp_path):
    """With a CSV list, an earlier run wrote each video's rows beside its feature_path (under its output folder):
    the examples go there, not to files named after the video."""
    video = write_with_audio(tmp_path / "talk.mp4", seconds=4.3)
    earlier = tmp_path / "earlier"
    (earlier / "feats").mkdir(parents=True)
    np.save(earlier / "feats" / "first_timestamps_ms.npy", np.array([300.0, 2100.0]))
    np.save(earlier / "talk_timestamps_ms.npy", np.array([1000.0]))  # where the video's own name would lead
    listing = tmp_path / "list.csv"
    listing.write_text(f"video_path,feature_path\n{video},feats/first.npy\n")
    out = tmp_path / "out"
    assert main.main(["--feature_type", "vggish", "--cpu", "--weights_dir", str(weights), "--timestamps_from",
                      str(earlier), "--file_with_video_paths", str(listing), "--on_extraction", "save_numpy",
                      "--output_path", str(out)]) == 0
    np.testing.assert_array_equal(np.load(out / "vggish" / "feats" / "first_timestamps_ms.npy"), [300.0, 2100.0])
    same_rows = tmp_path / "same_rows"
    same_rows.mkdir()
    np.save(same_rows / "talk_timestamps_ms.npy", np.array([300.0, 2100.0]))
    expected = vggish(weights, timestamps_from=str(same_rows)).extract(video)["vggish"]
    np.testing.assert_array_equal(np.load(out / "vggish" / "feats" / "first.npy"), expected)


def test_audio_that_starts_after_its_video_is_shifted_on_the_timeline(weights, tmp_path):
    samples = np.random.default_rng(3).uniform(-0.4, 0.4, (1, 3 * 16000))
    common = dict(seconds=3.0, audio_codec="pcm_s16le", sample_rate=16000, layout="mono", samples=samples)
    aligned = write_with_audio(tmp_path / "aligned.mkv", **common)
    late = write_with_audio(tmp_path / "late.mkv", audio_start_s=0.5, **common)
    extractor = vggish(weights)
    with AudioReader(late) as audio:
        next(audio.chunks())
        assert audio.audio_start_s == pytest.approx(0.5)
    stamps = tmp_path / "stamps"
    stamps.mkdir()
    np.save(stamps / "aligned_timestamps_ms.npy", np.array([980.0, 1940.0]))
    np.save(stamps / "late_timestamps_ms.npy", np.array([480.0, 1480.0, 2440.0]))
    shifted = ExtractVGGish({**vars_of(extractor), "timestamps_from": str(stamps)})
    aligned_examples, _ = examples_of(shifted, aligned)
    late_examples, _ = examples_of(shifted, late)
    np.testing.assert_array_equal(late_examples[1:], aligned_examples)  # 0.5 s later on the timeline
    silence = np.log(0.01)
    assert np.all(late_examples[0][:2] == np.float32(silence))  # before the audio starts: zeros


def vars_of(extractor: ExtractVGGish) -> dict:
    return dict(feature_type="vggish", cpu=True, weights_dir=extractor.config.weights_dir)


@pytest.mark.parametrize("name, options", [
    ("mp3.mkv", dict(audio_codec="libmp3lame")),
    ("opus.webm", dict(audio_codec="libopus", sample_rate=48000, video_codec=None)),
    ("aac.mp4", dict(audio_codec="aac", sample_rate=48000, layout="mono")),
    ("pcm.avi", dict(audio_codec="pcm_s16le", video_codec="mpeg4", sample_rate=22050)),
    ("plain.wav", dict(audio_codec="pcm_s16le", video_codec=None, sample_rate=8000, layout="mono")),
])
def test_every_codec_and_container_gives_the_default_grid(weights, tmp_path, name, options):
    path = write_with_audio(tmp_path / name, seconds=3.0, **options)
    features = vggish(weights).extract(path)
    assert features["vggish"].shape == (3, 128) and np.isfinite(features["vggish"]).all()  # 3.0 s: 3 examples
    np.testing.assert_array_equal(features["timestamps_ms"], [480.0, 1440.0, 2400.0])


def test_a_short_track_is_padded_to_one_example_and_a_silent_video_fails_alone(weights, tmp_path):
    short = write_wav(tmp_path / "short.wav", 0.2 * np.ones(4000))  # 0.25 s
    assert vggish(weights).extract(short)["vggish"].shape == (1, 128)
    silent = write_clip(tmp_path / "silent.mp4", num_frames=10)
    with pytest.raises(VideoError, match="no audio stream"):
        vggish(weights).extract(silent)
    talk = write_with_audio(tmp_path / "videos" / "talk.mp4", seconds=2.0)
    silent.rename(tmp_path / "videos" / "silent.mp4")
    write_wav(tmp_path / "videos" / "speech.wav", 0.1 * np.ones(20000))
    out = tmp_path / "out"
    code = main.main(["--feature_type", "vggish", "--cpu", "--weights_dir", str(weights), "--video_dir",
                      str(talk.parent), "--on_extraction", "save_numpy", "--output_path", str(out)])
    assert code == 1
    failures = (out / "vggish" / "failures.tsv").read_text().splitlines()
    assert failures[1:] == [f"{tmp_path / 'videos' / 'silent.mp4'}\tno audio stream (only video)"]
    assert np.load(out / "vggish" / "talk_vggish.npy").shape == (2, 128)
    assert np.load(out / "vggish" / "speech_vggish.npy").shape == (1, 128)  # 1.25 s, a .wav in --video_dir


def test_a_damaged_audio_packet_is_skipped_and_the_rest_of_the_track_goes_on(weights, tmp_path, capsys):
    whole = write_with_audio(tmp_path / "whole.m4a", seconds=5.0, video_codec=None)
    data = bytearray(whole.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 600] = np.random.default_rng(4).integers(0, 256, 600, dtype=np.uint8).tobytes()
    damaged = tmp_path / "damaged.m4a"
    damaged.write_bytes(bytes(data))
    expected = vggish(weights).extract(whole)
    features = vggish(weights, verbose=True).extract(damaged)
    np.testing.assert_array_equal(features["timestamps_ms"], expected["timestamps_ms"])  # 5 examples, in place
    assert "damaged.m4a: skipped a damaged audio packet at 2." in capsys.readouterr().err
    np.testing.assert_allclose(features["vggish"][0], expected["vggish"][0], rtol=1e-5, atol=1e-5)


def test_an_album_cover_is_not_a_video(weights, tmp_path):
    """MP3s often carry their cover as a one-picture video stream: the timeline is still the audio's."""
    path = tmp_path / "song.mp3"
    with av.open(str(path), "w") as container:
        audio = container.add_stream("libmp3lame", rate=44100, layout="mono")
        cover = container.add_stream("mjpeg", rate=1)
        cover.width, cover.height, cover.pix_fmt = 32, 32, "yuvj420p"
        cover.disposition = av.stream.Disposition.attached_pic
        picture = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
        container.mux(cover.encode(picture.reformat(format="yuvj420p")))
        container.mux(cover.encode())
        tone = (0.3 * np.sin(np.arange(3 * 44100) / 7.0)).astype(np.float32)[None]
        for start in range(0, tone.shape[1], 1152):
            frame = av.AudioFrame.from_ndarray(tone[:, start : start + 1152], format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 44100, start
            container.mux(audio.encode(frame))
        container.mux(audio.encode())
    features = vggish(weights, extract_method="fix_2").extract(path)
    np.testing.assert_array_equal(features["timestamps_ms"], np.arange(6) * 500.0)  # 3 s of audio at 2 per s
    assert float(features["fps"]) == 0.0
