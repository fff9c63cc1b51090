"""VGGish audio embeddings (128-d), on the timeline of the visual features (``--feature_type vggish``).

The front end is the one published with VGGish (AudioSet's ``vggish_input`` and ``mel_features``): mono audio at
16 kHz, 25 ms periodic Hann windows every 10 ms, the magnitude of a 512-point FFT, 64 mel bands from 125 to
7500 Hz on the HTK mel scale (the DC bin left out), ``log(mel + 0.01)``; an example is 96 such frames, 0.96 s.

Where examples go (their centres are the rows' timestamps, on the timeline whose 0 is the first video frame):
- by default one every 0.96 s from 0, as the reference frames the whole track, while the audio holds a whole
  example (at least one: a shorter track is padded);
- ``--extract_method uni_N | fix_F | all`` and ``--views N``: centred on the frames a visual model takes with
  the same option (their times come from the video's packets; nothing is decoded), so the rows line up;
- ``--timestamps_from DIR``: centred on each row of the ``timestamps_ms`` outputs of an earlier run into ``DIR``,
  found as that run named them (``OutputLayout.in_folder``).
Audio before the start or past the end of the track is silence (zeros).

The network has the module names of harritaylor's port, so ``vggish-10086976.pth`` loads strictly. The
embedding is the last linear layer's output, with no activation after it, as Google's VGGish defines it (the
port adds a ReLU there). ``--vggish_postprocess`` applies AudioSet's PCA (``vggish_pca_params-970ea276.pth``),
clips to [-2, 2] and quantises to 8 bits, as AudioSet's released embeddings are made: values 0..255.
"""
from __future__ import annotations

import functools
import itertools
import os
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
from torch import nn

from extractors.base import BATCH_SIZE, CHECKPOINT, EXTRACT_METHOD, FEATURE_OPTIONS, WEIGHTS, BaseExtractor, sampling
from extractors.options import Option
from extractors.registry import FeatureType, register
from extractors.weights import Meta, Weights, WeightsTable
from io_utils.audio import AUDIO_EXTENSIONS, AudioReader
from io_utils.checkpoints import load_state_dict_strictly, sha256_in_file_name
from io_utils.errors import UsageError, VideoError
from io_utils.outputs import OutputLayout
from io_utils.video_list import VIDEO_EXTENSIONS, VideoJob

SAMPLE_RATE = 16000
WINDOW, HOP, FFT_LENGTH = 400, 160, 512  # 25 ms, 10 ms, the next power of two
MEL_BANDS, LOWER_HZ, UPPER_HZ, LOG_OFFSET = 64, 125.0, 7500.0, 0.01
EXAMPLE_FRAMES = 96
EXAMPLE_HOP = EXAMPLE_FRAMES * HOP  # 15360 samples, 0.96 s
EXAMPLE_SPAN = (EXAMPLE_FRAMES - 1) * HOP + WINDOW  # 15600: the samples an example's frames read
_RELEASES = "https://github.com/harritaylor/torchvggish/releases/download/v0.1"


def hertz_to_mel(hertz: np.ndarray | float) -> np.ndarray | float:
    """The HTK mel scale."""
    return 1127.0 * np.log(1.0 + np.asarray(hertz) / 700.0)


@functools.cache
def mel_matrix() -> np.ndarray:
    """(257, 64): spectrum bins -> mel bands, triangles on the mel scale between evenly spaced edges."""
    bins_mel = hertz_to_mel(np.linspace(0.0, SAMPLE_RATE / 2, FFT_LENGTH // 2 + 1))
    edges = np.linspace(hertz_to_mel(LOWER_HZ), hertz_to_mel(UPPER_HZ), MEL_BANDS + 2)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    weights = np.maximum(0.0, np.minimum((bins_mel[:, None] - lower) / (centre - lower),
                                         (upper - bins_mel[:, None]) / (upper - centre)))
    weights[0] = 0.0  # the DC bin
    return weights


@functools.cache
def periodic_hann() -> np.ndarray:
    return 0.5 - 0.5 * np.cos(2 * np.pi / WINDOW * np.arange(WINDOW))


def log_mel_example(samples: np.ndarray) -> np.ndarray:
    """The ``EXAMPLE_SPAN`` samples of one example -> its (96, 64) log-mel spectrogram, float32."""
    frames = np.lib.stride_tricks.sliding_window_view(samples.astype(np.float64), WINDOW)[::HOP]
    spectrum = np.abs(np.fft.rfft(frames * periodic_hann(), FFT_LENGTH))
    return np.log(spectrum @ mel_matrix() + LOG_OFFSET).astype(np.float32)


class SampleWindow:
    """Reads spans of samples from a stream of chunks, in ascending order of their starts, holding only what
    the next spans can still need. Samples before 0 or past the end of the stream are zeros."""

    def __init__(self, chunks: Iterable[np.ndarray]):
        self._chunks = iter(chunks)
        self._held: list[np.ndarray] = []
        self._start = 0  # index of the first held sample
        self._count = 0  # samples held
        self.ended = False

    def read(self, start: int, length: int) -> np.ndarray:
        """Samples ``start`` to ``start + length``; the ones before ``start`` are let go."""
        while not self.ended and self._start + self._count < start + length:
            chunk = next(self._chunks, None)
            if chunk is None:
                self.ended = True
            else:
                self._held.append(chunk)
                self._count += len(chunk)
        held = np.concatenate(self._held) if self._held else np.zeros(0, np.float32)
        keep_from = min(max(start - self._start, 0), len(held))
        held, self._start = held[keep_from:], self._start + keep_from
        self._held, self._count = [held], len(held)
        span = np.zeros(length, np.float32)
        first, last = max(start, self._start), min(start + length, self._start + len(held))
        if last > first:
            span[first - start : last - start] = held[first - self._start : last - self._start]
        return span

    def holds_until(self, end: int) -> bool:
        """Whether the stream reaches sample ``end`` (only meaningful right after a :meth:`read` up to it)."""
        return self._start + self._count >= end


class VGGish(nn.Module):
    """(B, 96, 64) log-mel examples -> (B, 128) embeddings; module names as in harritaylor's port."""

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = []
        channels = 1
        for width in (64, "pool", 128, "pool", 256, 256, "pool", 512, 512, "pool"):
            if width == "pool":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=True)]
                channels = width
        self.features = nn.Sequential(*layers)
        self.embeddings = nn.Sequential(nn.Linear(512 * 6 * 4, 4096), nn.ReLU(inplace=True), nn.Linear(4096, 4096),
                                        nn.ReLU(inplace=True), nn.Linear(4096, 128))

    def forward(self, examples: torch.Tensor) -> torch.Tensor:
        maps = self.features(examples[:, None])  # (B, 512, 6, 4)
        return self.embeddings(maps.permute(0, 2, 3, 1).flatten(1))  # flattened as TensorFlow's NHWC


class VGGishPCA(nn.Module):
    """AudioSet's post-processing: PCA (with whitening), clipping to [-2, 2], 8-bit quantisation (0..255),
    computed in float64 as the reference does in NumPy."""

    def __init__(self):
        super().__init__()
        self.register_buffer("pca_eigen_vectors", torch.zeros(128, 128, dtype=torch.float64))
        self.register_buffer("pca_means", torch.zeros(128, dtype=torch.float64))

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        projected = (embeddings.double() - self.pca_means) @ self.pca_eigen_vectors.T
        return torch.floor((projected.clamp(-2.0, 2.0) + 2.0) * (255.0 / 4.0)).float()


def _save_random_pca(pca: VGGishPCA, path: Path) -> None:
    """The release's format: a dict of NumPy arrays; an orthonormal random basis, means of the scale of
    embeddings."""
    basis, _ = torch.linalg.qr(torch.randn(128, 128, dtype=torch.float64))
    torch.save({"pca_eigen_vectors": basis.numpy(), "pca_means": 0.1 * torch.randn(128, dtype=torch.float64).numpy()},
               path)


def _arrays_as_tensors(state_dict: dict) -> dict[str, torch.Tensor]:
    return {key: torch.as_tensor(np.asarray(value, dtype=np.float64).reshape(-1 if key == "pca_means" else (128, 128)))
            for key, value in state_dict.items()}


VGGISH_WEIGHTS = WeightsTable([
    Weights("audioset", f"{_RELEASES}/vggish-10086976.pth", sha256_in_file_name("vggish-10086976.pth"), VGGish,
            meta=Meta(embed_dim=128, input_range="log(mel + 0.01), 96 frames x 64 bands")),
], default="audioset")
VGGISH_PCA = Weights("pca", f"{_RELEASES}/vggish_pca_params-970ea276.pth",
                     sha256_in_file_name("vggish_pca_params-970ea276.pth"), VGGishPCA, save_random=_save_random_pca)


SECTION = "audio"
VGGISH_POSTPROCESS = Option("vggish_postprocess", False, "apply AudioSet's PCA, clipping to [-2, 2] and 8-bit "
                            "quantisation (values 0..255) to the embeddings", True, section=SECTION)
TIMESTAMPS_FROM = Option("timestamps_from", None, "centre one example on each row of the timestamps_ms outputs of an "
                         "earlier run of any feature type (DIR: its output folder)", "stamps", metavar="DIR",
                         section=SECTION)


class ExtractVGGish(BaseExtractor):
    """One 128-d embedding per 0.96 s example; key ``vggish``."""

    key = "vggish"
    options = (EXTRACT_METHOD, BATCH_SIZE, *FEATURE_OPTIONS, WEIGHTS, CHECKPOINT, VGGISH_POSTPROCESS, TIMESTAMPS_FROM)
    input_extensions = VIDEO_EXTENSIONS | AUDIO_EXTENSIONS

    @classmethod
    def validate(cls, config, weights) -> None:
        super().validate(config, weights)
        if config.frames_dir:
            raise UsageError("--frames_dir: folders of frames have no audio for vggish")
        sampled = [f"--{name}" for name in ("extract_method", "views") if name in config.given()]
        if config.timestamps_from and sampled:  # (nothing fills either in: "given" is what the user gave)
            raise UsageError(f"--timestamps_from places the examples: give it or {' or '.join(sampled)}, not both")
        if config.timestamps_from and not Path(config.timestamps_from).is_dir():
            raise UsageError(f"--timestamps_from {config.timestamps_from}: no such folder")

    @classmethod
    def checkpoints(cls, config) -> list[tuple[Weights, str | None, str]]:
        return super().checkpoints(config) + ([(VGGISH_PCA, None, "checkpoint")] if config.vggish_postprocess else [])

    def load_model(self) -> tuple[nn.Module, None]:
        model = nn.ModuleDict({"vggish": self.weights.build()})
        load_state_dict_strictly(model["vggish"], self.checkpoint_file(), "a VGGish checkpoint (vggish-10086976.pth)")
        if self.config.vggish_postprocess:
            model["pca"] = VGGISH_PCA.build()
            load_state_dict_strictly(model["pca"], self.checkpoint_file(VGGISH_PCA, None),
                                     "AudioSet's VGGish PCA parameters (vggish_pca_params-970ea276.pth)",
                                     _arrays_as_tensors)
        return model, None

    def open_reader(self, path: str | os.PathLike) -> AudioReader:
        return AudioReader(path, SAMPLE_RATE, verbose=self.config.verbose)

    @classmethod
    def sampling_rule(cls, config) -> str:
        if config.timestamps_from:
            return f"0.96 s examples centred on the rows of the timestamps_ms outputs in {config.timestamps_from}"
        if sampling(config) is not None:
            return f"0.96 s examples centred on the frames of {sampling(config)}"
        return "0.96 s examples every 0.96 s from the first video frame"

    def model_inputs(self, audio: AudioReader, job: VideoJob) -> Iterator[tuple[torch.Tensor, float]]:
        chunks = audio.chunks()
        first = next(chunks, None)  # sets where the audio starts on the timeline
        if first is None:
            raise VideoError("the audio stream holds no decodable samples")
        window = SampleWindow(_chained(first, chunks))
        offset = round(audio.audio_start_s * SAMPLE_RATE)
        centres = self._centres_ms(audio, job)
        if centres is None:  # every 0.96 s from 0 while the track holds a whole example
            for index in itertools.count():
                start = index * EXAMPLE_HOP - offset
                samples = window.read(start, EXAMPLE_SPAN)
                if index and not window.holds_until(start + EXAMPLE_SPAN):
                    return
                yield torch.from_numpy(log_mel_example(samples)), (index * EXAMPLE_HOP + EXAMPLE_HOP / 2) / 16.0
        for centre_ms in centres:
            start = round(centre_ms * SAMPLE_RATE / 1000) - EXAMPLE_HOP // 2 - offset
            yield torch.from_numpy(log_mel_example(window.read(start, EXAMPLE_SPAN))), float(centre_ms)

    def _centres_ms(self, audio: AudioReader, job: VideoJob) -> list[float] | None:
        """Where the examples are centred, or None for the default grid."""
        config = self.config
        if config.timestamps_from:
            return _timestamps_of(self.layout.in_folder(config.timestamps_from), job)
        method = sampling(config)
        if method is None:
            return None
        if audio.video is not None:  # on the frames a visual model takes with the same option
            video = audio.video
            targets = None if method.kind == "all" else method.target_pts(video.start_pts, video.end_pts,
                                                                           video.time_base)
            return video.frame_times_ms(targets)
        if method.kind == "all":
            raise VideoError("--extract_method all takes every video frame, and this file has no video")
        if audio.duration_s is None:
            raise VideoError(f"the file declares no duration, which {method} needs")
        duration = Fraction(audio.duration_s).limit_denominator(1_000_000)
        return [float(offset * 1000) for offset in method.target_offsets(duration)]

    def forward(self, examples: torch.Tensor) -> torch.Tensor:
        embeddings = self.model["vggish"](examples)
        return self.model["pca"](embeddings) if self.config.vggish_postprocess else embeddings


def _chained(first: np.ndarray, rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    yield first
    yield from rest


def _timestamps_of(earlier_run: OutputLayout, job: VideoJob) -> list[float]:
    """The rows of an earlier run (its outputs named as this run names them), in ascending order."""
    source = earlier_run.path(job, "timestamps_ms")
    if not source.is_file():
        raise VideoError(f"--timestamps_from: no {source}")
    times = np.load(source, allow_pickle=False).astype(np.float64).ravel()
    if times.size == 0 or np.any(np.diff(times) < 0):
        raise VideoError(f"--timestamps_from: {source} holds {'no times' if times.size == 0 else 'times out of order'}")
    return times.tolist()


register(FeatureType("vggish", ExtractVGGish, VGGISH_WEIGHTS))
