"""CLAP audio embeddings (transformers' ``ClapModel``), 10 s examples at 48 kHz on the visual timeline.

``--weights`` names a published hub repository of LAION: ``htsat_unfused`` (default, ``laion/clap-htsat-unfused``)
or ``htsat_fused`` (``laion/clap-htsat-fused``); ``--checkpoint FOLDER`` takes any CLAP repository in the hub's
format (``laion/larger_clap_general``, ``..._music``, ``..._music_and_speech`` among them).

An example is 10 s of audio (the model's ``max_length_s``) on the grid every audio family here shares
(:mod:`extractors.models.audio_examples`): by default one every 10 s from 0; with ``--extract_method``,
``--views`` or ``--timestamps_from``, centred on the rows of the visual features. Only the samples of the
example that lie within the track are given to CLAP's own feature extractor (``ClapFeatureExtractor``, the
repository's ``preprocessor_config.json``), which repeats a shorter piece to fill 10 s ("repeatpad") as it does
for any short clip. Each example goes through the feature extractor alone, as a clip given to CLAP on its own
would: for a fused model that marks it "longer" (the extractor's rule for a call without a longer clip), so its
fusion branch runs on four copies of the one mel spectrogram.

The feature is ``ClapModel.get_audio_features``: the audio projection, L2-normalised, 512-d. ``--show_pred``
scores ``--pred_texts`` with the text tower (softmax of ``logit_scale_a``-scaled cosines, the order of
``logits_per_audio``); without it the text tower is dropped after a strict load of the whole file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from extractors.models.audio_examples import AudioExampleExtractor
from extractors.models.hub_repository import (HubRepositoryWeights, entry_repository, hub_entry, load_network,
                                             read_processor, save_repository)
from extractors.models.image_text import PRED_TEXTS
from extractors.predictions import SHOW_PRED, print_top_classes
from extractors.registry import FeatureType, ModelDocs, feature_type, register
from extractors.weights import Weights, WeightsTable
from io_utils.errors import UsageError
from io_utils.hub import snapshot_folder

SAMPLE_RATE = 48000
EXAMPLE_SAMPLES = 10 * SAMPLE_RATE  # max_length_s of the released feature extractors
_TOKENIZER_FILES = ("tokenizer_config.json", "vocab.json", "merges.txt")


def _repository(name: str, repository: str, fused: bool) -> Weights:
    return hub_entry(name, repository, lambda: _network(fused), embed_dim=512,
                     input_range="log-mel (64 bands, 48 kHz) of 10 s, repeat-padded")


CLAP_WEIGHTS = WeightsTable([
    _repository("htsat_unfused", "laion/clap-htsat-unfused", fused=False),
    _repository("htsat_fused", "laion/clap-htsat-fused", fused=True),
], default="htsat_unfused")


def _network(fused: bool) -> nn.Module:
    """transformers' CLAP of the HTSAT repositories (its defaults are theirs), fused or not."""
    from transformers import ClapConfig, ClapModel

    audio = dict(enable_fusion=True, fusion_type="aff_2d") if fused else {}
    return ClapModel(ClapConfig(audio_config=audio))


class ExtractCLAP(HubRepositoryWeights, AudioExampleExtractor):
    """One 512-d unit-norm embedding per 10 s example; key ``clap``."""

    key = "clap"
    docs = ModelDocs("CLAP", "clap.md", "LAION CLAP audio embeddings (10 s examples), scored against texts",
                     "audio", "`clap`, 512")
    options = (*AudioExampleExtractor.options, SHOW_PRED, PRED_TEXTS)
    sample_rate, example_span, example_hop, example_name = SAMPLE_RATE, EXAMPLE_SAMPLES, EXAMPLE_SAMPLES, "10 s examples"

    @classmethod
    def validate(cls, config, weights) -> None:
        super().validate(config, weights)
        if config[PRED_TEXTS] and not config[SHOW_PRED]:
            raise UsageError("--pred_texts are the texts that --show_pred scores; give --show_pred too")
        if config[SHOW_PRED] and not config[PRED_TEXTS]:
            raise UsageError("--show_pred: clap scores the texts of --pred_texts (e.g. --pred_texts 'a dog barking' "
                             "'rain'); give them")

    @classmethod
    def needs(cls, config) -> tuple[str, ...]:
        return ("preprocessor_config.json", *(_TOKENIZER_FILES if config[SHOW_PRED] else ()))

    @staticmethod
    def publishes_processor(network: nn.Module) -> Any:
        """The feature extractor as the repositories publish it: ``fusion`` truncation for a fused model,
        ``rand_trunc`` otherwise; "repeatpad"."""
        from transformers import ClapFeatureExtractor

        fused = network.config.audio_config.enable_fusion
        return ClapFeatureExtractor(truncation="fusion" if fused else "rand_trunc", padding="repeatpad")

    @classmethod
    def write_random(cls, config, folder: Path, seed: int = 0) -> list[Path]:
        weights = feature_type(config.feature_type).weights_for(config)
        return write_clap_repository(snapshot_folder(folder, entry_repository(weights)), weights.build, seed)

    def load_model(self) -> tuple[nn.Module, None]:
        found = self.repository(self.config)
        model = load_network(found)
        self.feature_extractor = read_processor(found.folder, "ClapFeatureExtractor")
        self.fused = bool(model.config.audio_config.enable_fusion)
        if self.config[SHOW_PRED]:  # scored against the texts, which are encoded once
            tokenizer = read_processor(found.folder, "AutoTokenizer")
            tokens = tokenizer(list(self.config[PRED_TEXTS]), padding=True, return_tensors="pt")
            with torch.inference_mode():
                self.text_features = model.get_text_features(**tokens).pooler_output
        model.text_model = model.text_projection = None  # features come from the audio tower alone
        return model, None

    def example_input(self, samples: np.ndarray, present: slice) -> torch.Tensor:
        """CLAP's own feature extractor on the example's samples within the track (silence if none are)."""
        within = samples[present] if present.stop > present.start else samples
        features = self.feature_extractor(within, sampling_rate=SAMPLE_RATE, return_tensors="pt")
        return features.input_features[0].float()  # (1 or 4 for a fused model, 1001, 64)

    def forward(self, examples: torch.Tensor) -> torch.Tensor:
        is_longer = torch.full((len(examples), 1), self.fused, device=examples.device)
        return self.model.get_audio_features(input_features=examples, is_longer=is_longer).pooler_output

    def show_predictions(self, outputs: Mapping[str, np.ndarray], timestamps_ms: Sequence[float]) -> None:
        """Top-5 of ``--pred_texts`` per example, as ``ClapModel`` scores audio against texts."""
        audio = torch.from_numpy(outputs[self.main_key]).float()
        scale = self.model.logit_scale_a.detach().float().exp().cpu()
        scores = (scale * audio @ self.text_features.float().T).softmax(dim=-1)
        print_top_classes(list(self.config[PRED_TEXTS]), scores, timestamps_ms)


def write_clap_repository(folder: Path, build: Callable[[], nn.Module], seed: int = 0) -> list[Path]:
    """A CLAP repository of random weights in ``folder``: the network ``build`` makes, its feature extractor's
    configuration and a small tokenizer (:func:`_write_tokenizer`)."""
    save_repository(folder, build, ExtractCLAP.publishes_processor, seed)
    _write_tokenizer(folder)
    return sorted(path for path in folder.iterdir() if path.is_file())


def _write_tokenizer(folder: Path) -> None:
    """RoBERTa's tokenizer files (``vocab.json``, ``merges.txt``, ``tokenizer_config.json``) of a byte-level BPE
    learnt from a few sentences: the released one needs the hub."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizer

    bpe = ByteLevelBPETokenizer()
    sentences = ["the sound of a dog barking", "a car engine starting", "rain falling on a roof", "music with drums",
                 "people talking in a room", "birds singing", "a door closing", "water running"]
    bpe.train_from_iterator(sentences, vocab_size=400, show_progress=False,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(folder))
    RobertaTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt")).save_pretrained(str(folder))


register(FeatureType("clap", ExtractCLAP, CLAP_WEIGHTS))
