"""VGGish audio embeddings (128-d), on the timeline of the visual features (``--feature_type vggish``).

The front end is the one published with VGGish (AudioSet's ``vggish_input`` and ``mel_features``): mono audio at
16 kHz, 25 ms periodic Hann windows every 10 ms, the magnitude of a 512-point FFT, 64 mel bands from 125 to
7500 Hz on the HTK mel scale (the DC bin left out), ``log(mel + 0.01)``; an example is 96 such frames, 0.96 s.

Examples go on the timeline of the visual features (:mod:`extractors.models.audio_examples`): by default one
every 0.96 s from 0, as the reference frames the whole track; audio before the start or past the end of the track
is silence (zeros).

The network has the module names of harritaylor's port, so ``vggish-10086976.pth`` loads strictly. The
embedding is the last linear layer's output, with no activation after it, as Google's VGGish defines it (the
port adds a ReLU there). ``--vggish_postprocess`` applies AudioSet's PCA (``vggish_pca_params-970ea276.pth``),
clips to [-2, 2] and quantises to 8 bits, as AudioSet's released embeddings are made: values 0..255.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
from torch import nn

from extractors.models.audio_examples import SECTION, AudioExampleExtractor
from extractors.options import Option
from extractors.registry import FeatureType, ModelDocs, register
from extractors.weights import Meta, Weights, WeightsTable
from io_utils.checkpoints import load_state_dict_strictly, sha256_in_file_name

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


VGGISH_POSTPROCESS = Option("vggish_postprocess", False, "apply AudioSet's PCA, clipping to [-2, 2] and 8-bit "
                            "quantisation (values 0..255) to the embeddings", True, section=SECTION)


class ExtractVGGish(AudioExampleExtractor):
    """One 128-d embedding per 0.96 s example; key ``vggish``."""

    key = "vggish"
    docs = ModelDocs("VGGish", "vggish.md", "AudioSet VGGish audio embeddings, on the visual timeline",
                     "audio", "`vggish`, 128")
    options = (*AudioExampleExtractor.options, VGGISH_POSTPROCESS)
    sample_rate, example_span, example_hop, example_name = SAMPLE_RATE, EXAMPLE_SPAN, EXAMPLE_HOP, "0.96 s examples"

    @classmethod
    def checkpoints(cls, config) -> list[tuple[Weights, str | None, str]]:
        return super().checkpoints(config) + ([(VGGISH_PCA, None, "checkpoint")] if config[VGGISH_POSTPROCESS] else [])

    def load_model(self) -> tuple[nn.Module, None]:
        model = nn.ModuleDict({"vggish": self.weights.build()})
        load_state_dict_strictly(model["vggish"], self.checkpoint_file(), "a VGGish checkpoint (vggish-10086976.pth)")
        if self.config[VGGISH_POSTPROCESS]:
            model["pca"] = VGGISH_PCA.build()
            load_state_dict_strictly(model["pca"], self.checkpoint_file(VGGISH_PCA, None),
                                     "AudioSet's VGGish PCA parameters (vggish_pca_params-970ea276.pth)",
                                     _arrays_as_tensors)
        return model, None

    def example_input(self, samples: np.ndarray, present: slice) -> torch.Tensor:
        return torch.from_numpy(log_mel_example(samples))  # zeros outside the track, as silence

    def forward(self, examples: torch.Tensor) -> torch.Tensor:
        embeddings = self.model["vggish"](examples)
        return self.model["pca"](embeddings) if self.config[VGGISH_POSTPROCESS] else embeddings

register(FeatureType("vggish", ExtractVGGish, VGGISH_WEIGHTS))
