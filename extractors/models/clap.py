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
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from extractors.base import WeightsFile
from extractors.engine_options import CHECKPOINT
from extractors.models.audio_examples import AudioExampleExtractor
from extractors.models.image_text import PRED_TEXTS
from extractors.models.hub_video import HUB, WEIGHT_FILES, repo_id
from extractors.predictions import SHOW_PRED, print_top_classes
from extractors.registry import FeatureType, ModelDocs, feature_type, register
from extractors.weights import Meta, Weights, WeightsTable, random_constants
from io_utils.checkpoints import load_strictly, read_state_dict
from io_utils.errors import UsageError
from io_utils.hub import hub_file, hub_url, snapshot_folder

SAMPLE_RATE = 48000
EXAMPLE_SAMPLES = 10 * SAMPLE_RATE  # max_length_s of the released feature extractors
_PROCESSOR_FILE = "preprocessor_config.json"
_TOKENIZER_FILES = ("tokenizer_config.json", "vocab.json", "merges.txt")


def _repository(name: str, repository: str, fused: bool) -> Weights:
    return Weights(name, f"{HUB}/{repository}", None, lambda: _configuration(fused), None,
                   Meta(embed_dim=512, input_range="log-mel (64 bands, 48 kHz) of 10 s, repeat-padded"))


CLAP_WEIGHTS = WeightsTable([
    _repository("htsat_unfused", "laion/clap-htsat-unfused", fused=False),
    _repository("htsat_fused", "laion/clap-htsat-fused", fused=True),
], default="htsat_unfused")


def _configuration(fused: bool) -> Any:
    """transformers' CLAP configuration of the HTSAT repositories (its defaults are theirs), fused or not."""
    from transformers import ClapConfig

    audio = dict(enable_fusion=True, fusion_type="aff_2d") if fused else {}
    return ClapConfig(audio_config=audio)


class ExtractCLAP(AudioExampleExtractor):
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
    def checkpoints(cls, config) -> list:
        return []  # a hub repository, found by ``repository_files``

    @classmethod
    def prepare(cls, config) -> None:
        repository_files(_weights(config), config[CHECKPOINT], config.weights_dir, config[SHOW_PRED])

    @classmethod
    def weights_files(cls, config) -> list[WeightsFile]:
        weights = _weights(config)
        files = repository_files(weights, config[CHECKPOINT], config.weights_dir, config[SHOW_PRED], progress=False)
        return [WeightsFile(path, str(path) if config[CHECKPOINT] else hub_url(repo_id(weights), path.name))
                for role, path in files.items() if role != "tokenizer"]

    @classmethod
    def write_random(cls, config, folder: Path, seed: int = 0) -> list[Path]:
        weights = _weights(config)
        return write_clap_repository(snapshot_folder(folder, repo_id(weights)), weights.build(), seed)

    def load_model(self) -> tuple[nn.Module, None]:
        from transformers import AutoTokenizer, ClapConfig, ClapFeatureExtractor, ClapModel

        files = repository_files(self.weights, self.config[CHECKPOINT], self.config.weights_dir, self.config[SHOW_PRED],
                                 progress=not self.external_call)
        model = ClapModel(ClapConfig.from_json_file(files["config"])).eval()
        what = "the CLAP its config.json describes"
        load_strictly(model, read_state_dict(files["weights"], what), files["weights"], what)
        self.feature_extractor = ClapFeatureExtractor.from_json_file(files["processor"])
        self.fused = bool(model.config.audio_config.enable_fusion)
        if self.config[SHOW_PRED]:  # scored against the texts, which are encoded once
            tokenizer = AutoTokenizer.from_pretrained(str(files["tokenizer"]))
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


def _weights(config) -> Weights:
    return feature_type(config.feature_type).weights_for(config)


def repository_files(weights: Weights, checkpoint: str | None, weights_dir: str | None, tokenizer: bool,
                     progress: bool = True) -> dict[str, Path]:
    """``config.json``, the weights, ``preprocessor_config.json`` and, for ``--show_pred``, the folder of the
    tokenizer's files: from the ``--checkpoint`` folder, else found locally or downloaded."""
    if checkpoint:
        folder = Path(checkpoint)
        found = {"config": folder / "config.json", "processor": folder / _PROCESSOR_FILE,
                 "weights": next((folder / name for name in WEIGHT_FILES if (folder / name).is_file()), None)}
        needed = [*found.values(), *([folder / name for name in _TOKENIZER_FILES] if tokenizer else [])]
        if any(path is None or not path.is_file() for path in needed):
            names = ["config.json", _PROCESSOR_FILE, " or ".join(WEIGHT_FILES), *(_TOKENIZER_FILES if tokenizer else ())]
            raise UsageError(f"--checkpoint {checkpoint}: not a CLAP folder in the hub's format (it needs "
                             f"{', '.join(names)})")
        return {**found, **({"tokenizer": folder} if tokenizer else {})}
    repository, what = repo_id(weights), f"clap {weights.name}"
    files = {"config": hub_file(repository, ("config.json",), weights_dir, what, progress),
             "weights": hub_file(repository, WEIGHT_FILES, weights_dir, what, progress),
             "processor": hub_file(repository, (_PROCESSOR_FILE,), weights_dir, what, progress)}
    if tokenizer:
        files["tokenizer"] = [hub_file(repository, (name,), weights_dir, what, progress)
                              for name in _TOKENIZER_FILES][0].parent
    return files


def write_clap_repository(folder: Path, configuration: Any, seed: int = 0) -> list[Path]:
    """A CLAP repository of random weights in ``folder``: ``ClapModel.save_pretrained`` (``config.json``,
    ``model.safetensors``), the feature extractor's configuration as the repositories publish it (``fusion``
    truncation for a fused model, ``rand_trunc`` otherwise; "repeatpad") and a small byte-level BPE tokenizer in
    RoBERTa's files. Parameters that initialise to a constant are made random
    (:func:`~extractors.weights.random_constants`)."""
    from transformers import ClapFeatureExtractor, ClapModel

    torch.manual_seed(seed)
    network = ClapModel(configuration)
    random_constants(network)
    folder.mkdir(parents=True, exist_ok=True)
    network.save_pretrained(folder)
    fused = configuration.audio_config.enable_fusion
    ClapFeatureExtractor(truncation="fusion" if fused else "rand_trunc", padding="repeatpad").save_pretrained(folder)
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
