"""open_clip's whole zoo (``--feature_type open_clip``).

``open_clip --model_name NAME --pretrained TAG`` takes any pair ``open_clip.list_pretrained()`` lists: SigLIP and
SigLIP 2, EVA02, MetaCLIP, DFN, LAION's and OpenAI's. Its weights are the file open_clip itself downloads for the
tag (from the Hugging Face hub; see ``io_utils/hub.py`` for where they are looked up), or ``--checkpoint``, or a
``local-dir:`` folder / ``hf-hub:`` repository in open_clip's hub format (``open_clip_config.json`` beside the
weights). Preprocessing is always the tag's own (resize mode, interpolation, mean, std, fill): open_clip itself
falls back to OpenAI's defaults when it is handed a file instead of a tag, which for SigLIP would be the wrong
mean, std and resize. The activation is the tag's too (OpenAI's tags were trained with QuickGELU, which
open_clip only warns about for a name without ``-quickgelu``).
"""
from __future__ import annotations

import difflib
import json
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch

from extractors.base import WeightsFile
from extractors.engine_options import CHECKPOINT, MODEL_NAME
from extractors.frame_wise import FrameWiseExtractor
from extractors.models.image_text import (PRED_TEXTS, ImageTextExtractor, built_without_weights,
                                          open_clip_preprocessing)
from extractors.options import Option
from extractors.predictions import SHOW_PRED, kinetics400_labels
from extractors.registry import FeatureType, ModelDocs, register
from extractors.transforms import CROPS, FAST_RESIZE, PREPROCESS_ON_DEVICE, FramePreprocessing
from io_utils.errors import UsageError
from io_utils.hub import (HubFile, hub_unreachable, local_snapshot, located_weights, record_absent, snapshot_folder,
                          weights_address)

# What open_clip names the files of a hub repository (open_clip.constants): safetensors first, as it prefers.
_HUB_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
_HUB_CONFIG = "open_clip_config.json"
_SCHEMAS = ("local-dir:", "hf-hub:")

PRETRAINED = Option("pretrained", None, "open_clip's pretrained tag for --model_name (python -c 'import open_clip; "
                    "print(open_clip.list_pretrained())'); it also sets the preprocessing of a --checkpoint",
                    "webli", metavar="TAG")


class ExtractOpenCLIP(ImageTextExtractor):
    """Any pretrained open_clip model: ``--model_name NAME --pretrained TAG`` (or a ``local-dir:`` /
    ``hf-hub:`` name)."""

    key = "open_clip"
    docs = ModelDocs("open_clip", "open-clip.md",
                     "any open_clip pair (`--model_name ViT-B-16-SigLIP2 --pretrained webli`)", "frames",
                     "`open_clip`, the model's")
    examples = {"model_name": "ViT-B-16-SigLIP2", "pretrained": "webli"}
    options = (*FrameWiseExtractor.options, MODEL_NAME, PRETRAINED, CHECKPOINT, CROPS, FAST_RESIZE,
               PREPROCESS_ON_DEVICE, SHOW_PRED, PRED_TEXTS)

    @classmethod
    def validate(cls, config, weights) -> None:
        super().validate(config, weights)
        open_clip_source(config[MODEL_NAME], config[PRETRAINED], config[CHECKPOINT])

    @classmethod
    def prepare(cls, config) -> None:
        """Find or download the weights once per run, before workers start."""
        _tag_weights(config[MODEL_NAME], config[PRETRAINED], config[CHECKPOINT], config.weights_dir)

    @classmethod
    def weights_files(cls, config) -> list[WeightsFile]:
        """The tag's weights file with the tag's preprocessing (a ``local-dir:`` / ``hf-hub:`` model: none here,
        its folder's configuration says it)."""
        path = _tag_weights(config[MODEL_NAME], config[PRETRAINED], config[CHECKPOINT], config.weights_dir, progress=False)
        if path is None:
            return []
        import open_clip

        cfg = open_clip.get_pretrained_cfg(config[MODEL_NAME], config[PRETRAINED])
        source = weights_address(hub_source(cfg), path, config[CHECKPOINT])
        size = open_clip.get_model_config(config[MODEL_NAME])["vision_cfg"].get("image_size", 224)
        preprocessing = open_clip_preprocessing({**cfg, "size": size, "fill_color": 0}, pil=not config[FAST_RESIZE])
        return [WeightsFile(path, source, repr(preprocessing))]

    @classmethod
    def library_weights(cls) -> tuple[str, ...]:
        """Every model with its pretrained tags: ``ViT-B-32 (openai, laion2b_s34b_b79k, ...)``."""
        import open_clip

        tags: dict[str, list[str]] = {}
        for name, tag in open_clip.list_pretrained():
            tags.setdefault(name, []).append(tag)
        return tuple(f"{name} ({', '.join(names)})" for name, names in tags.items())

    @classmethod
    def write_random(cls, config, folder: Path, seed: int = 0) -> list[Path]:
        if config[PRETRAINED] is None:
            raise UsageError("random weights are written for a --model_name with --pretrained TAG, into the hub "
                             "cache layout that --weights_dir reads")
        return write_random_open_clip(config[MODEL_NAME], config[PRETRAINED], folder, seed)

    def load_model(self) -> tuple[torch.nn.Module, FramePreprocessing]:
        import open_clip

        name, tag, checkpoint = self.config[MODEL_NAME], self.config[PRETRAINED], self.config[CHECKPOINT]
        try:
            if tag is None:  # a local-dir: folder or an hf-hub: repository: open_clip reads its config
                model = open_clip.create_model(name, cache_dir=self.config.weights_dir, require_pretrained=True)
            else:
                cfg = open_clip.get_pretrained_cfg(name, tag)
                path = _tag_weights(name, tag, checkpoint, self.config.weights_dir, progress=not self.external_call)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)  # QuickGELU: set from the tag just below
                    model = open_clip.create_model(name, pretrained=str(path), force_quick_gelu=cfg.get("quick_gelu", False),
                                                   force_preprocess_cfg=cfg)
        except UsageError:
            raise
        except Exception as error:  # missing folders, config and state-dict mismatches come in many types
            reason = " ".join(f"{type(error).__name__}: {error}".split())[:500]
            raise UsageError(f"open_clip {name} {tag or ''}: cannot load {checkpoint or 'the weights'} "
                             f"({reason})") from error
        preprocessing = open_clip_preprocessing(model.visual.preprocess_cfg, pil=not self.config[FAST_RESIZE])
        return self.image_tower(model), preprocessing

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """open_clip's tokenizer for the model; a Hugging Face one is read from a local copy where there is one
        (transformers would otherwise query the hub, retrying for minutes when offline)."""
        import open_clip

        name = self.config[MODEL_NAME]
        text_cfg = (open_clip.get_model_config(name) or {}).get("text_cfg", {})
        repo_id = text_cfg.get("hf_tokenizer_name")
        local = repo_id and local_snapshot(repo_id, "tokenizer_config.json", self.config.weights_dir)
        if not local:
            unreachable = repo_id and hub_unreachable()
            if unreachable:
                raise UsageError(f"open_clip {name}: its tokenizer {repo_id} is not in the Hugging Face cache and "
                                 f"cannot be downloaded ({unreachable}); on a machine with network run "
                                 f"`huggingface-cli download {repo_id}` and copy its cache folder here or into "
                                 f"--weights_dir")
            return open_clip.get_tokenizer(name, cache_dir=self.config.weights_dir)(texts)
        tokenizer = open_clip.tokenizer.HFTokenizer(str(local), context_length=text_cfg.get("context_length"),
                                                    tokenizer_mode=text_cfg.get("tokenizer_mode"),
                                                    **text_cfg.get("tokenizer_kwargs", {}))
        return tokenizer(texts)


def open_clip_source(name: str, tag: str | None, checkpoint: str | None) -> None:
    """Refuse a model name, tag or combination open_clip cannot load, with the close names or the model's tags."""
    import open_clip

    if name.startswith(_SCHEMAS):
        if tag is not None or checkpoint:
            raise UsageError(f"--model_name {name}: the folder or repository holds the weights and their "
                             f"preprocessing; --pretrained and --checkpoint do not apply")
        return
    if name not in open_clip.list_models():
        close = difflib.get_close_matches(name, open_clip.list_models(), n=5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UsageError(f"--model_name {name}: not an open_clip model{hint}")
    tags = open_clip.list_pretrained_tags_by_model(name)
    if tag is None or not open_clip.get_pretrained_cfg(name, tag):
        given = f"--pretrained {tag}: not a tag of {name}" if tag else f"--model_name {name} needs --pretrained TAG"
        known = f"choose one of {', '.join(tags)}" if tags else "open_clip publishes no weights for it"
        raise UsageError(f"{given}; {known} (a --checkpoint takes the preprocessing of the tag it was trained from)")


def _tag_weights(name: str, tag: str | None, checkpoint: str | None, weights_dir: str | None,
                 progress: bool = True) -> Path | None:
    """The weights file of a pretrained tag: ``--checkpoint``, else the file open_clip downloads for it."""
    if tag is None:
        return None
    import open_clip

    source = None if checkpoint else hub_source(open_clip.get_pretrained_cfg(name, tag))
    return located_weights(source, checkpoint, weights_dir, f"open_clip {name} {tag}", progress)


def hub_source(pretrained_cfg: Mapping[str, Any]) -> HubFile:
    """The repository and file names of a tag's ``hf_hub`` entry (``org/repo/`` names open_clip's default
    files, ``org/repo/file`` one file)."""
    repo_id, _, file_name = pretrained_cfg["hf_hub"].rpartition("/")
    return HubFile(repo_id, (file_name,) if file_name else _HUB_WEIGHTS)


def write_random_open_clip(name: str, tag: str, cache: Path, seed: int = 0) -> list[Path]:
    """The hub repository of ``name`` / ``tag`` with random weights, in the hub cache layout under ``cache``:
    ``open_clip_config.json`` (the model and the tag's preprocessing), ``open_clip_model.safetensors`` and, for
    a model with a Hugging Face tokenizer, a small tokenizer in that format (its vocabulary: the words of the
    Kinetics-400 prompts). Found by ``--weights_dir`` as a downloaded repository is."""
    import open_clip
    from open_clip.push_to_hf_hub import save_config_for_hf
    from safetensors.torch import save_file

    cfg = open_clip.get_pretrained_cfg(name, tag)
    torch.manual_seed(seed)
    with warnings.catch_warnings(), built_without_weights():
        warnings.simplefilter("ignore", UserWarning)
        model = open_clip.create_model(name, force_quick_gelu=cfg.get("quick_gelu", False), force_preprocess_cfg=cfg,
                                       pretrained_text=False)
    source = hub_source(cfg)
    folder = snapshot_folder(cache, source.repo_id)
    model_config = open_clip.get_model_config(name)
    weights = folder / source.file_names[0]
    state_dict = {key: value.contiguous() for key, value in model.state_dict().items()}
    if weights.suffix == ".safetensors":
        save_file(state_dict, weights)
    else:
        torch.save(state_dict, weights)
    save_config_for_hf(model, folder / _HUB_CONFIG, model_config=model_config)
    written = [weights, folder / _HUB_CONFIG]
    tokenizer_repo = model_config["text_cfg"].get("hf_tokenizer_name")
    if tokenizer_repo:
        written += _write_small_tokenizer(snapshot_folder(cache, tokenizer_repo), model_config["text_cfg"])
    return written


def _write_small_tokenizer(folder: Path, text_cfg: Mapping[str, Any]) -> list[Path]:
    """A word-level tokenizer in the Hugging Face format (``tokenizer.json`` + ``tokenizer_config.json``) whose
    ids fit the model's vocabulary: for running ``--show_pred`` offline on random weights."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = sorted({word for label in kinetics400_labels() for word in f"a photo of {label}".lower().split()})
    specials = ["<pad>", "<eos>", "<unk>"]
    vocab = {token: index for index, token in enumerate([*specials, *words][: text_cfg["vocab_size"]])}
    record_absent(folder, "config.json")  # a tokenizer repository without a model configuration
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(folder / "tokenizer.json"))
    config = dict(tokenizer_class="PreTrainedTokenizerFast", pad_token="<pad>", eos_token="<eos>", unk_token="<unk>",
                  model_max_length=text_cfg.get("context_length", 77))
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return [folder / "tokenizer.json", folder / "tokenizer_config.json"]


register(FeatureType("open_clip", ExtractOpenCLIP))
