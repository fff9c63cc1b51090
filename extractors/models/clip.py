"""Image-text models: open_clip's whole zoo (``--feature_type open_clip``), and OpenAI's CLIP (``CLIP-*``).

``open_clip --model_name NAME --pretrained TAG`` takes any pair ``open_clip.list_pretrained()`` lists: SigLIP and
SigLIP 2, EVA02, MetaCLIP, DFN, LAION's and OpenAI's. Its weights are the file open_clip itself downloads for the
tag (from the Hugging Face hub; see ``io_utils/hub.py`` for where they are looked up), or ``--checkpoint``, or a
``local-dir:`` folder / ``hf-hub:`` repository in open_clip's hub format (``open_clip_config.json`` beside the
weights). Preprocessing is always the tag's own (resize mode, interpolation, mean, std, fill): open_clip itself
falls back to OpenAI's defaults when it is handed a file instead of a tag, which for SigLIP would be the wrong
mean, std and resize. The activation is the tag's too (OpenAI's tags were trained with QuickGELU, which
open_clip only warns about for a name without ``-quickgelu``).

The nine ``CLIP-*`` feature types are OpenAI's pairs on this same path, loaded from OpenAI's own release files:
TorchScript archives; fine-tuned ones (CLIP4Clip and the like) are often plain state dicts, sometimes with a
``module.`` or ``clip.`` prefix. Both load through the same path: read a state dict, let open_clip build the
matching architecture from its tensor shapes, load it.
"""
from __future__ import annotations

import abc
import contextlib
import difflib
import json
import logging
import warnings
from functools import partial
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torchvision.transforms import InterpolationMode

from extractors.base import CHECKPOINT, MODEL_NAME, FrameWiseExtractor, WeightsFile
from extractors.options import Option
from extractors.predictions import SHOW_PRED, kinetics400_labels, print_top_classes
from extractors.registry import FeatureType, ModelDocs, register
from extractors.transforms import CROPS, FAST_RESIZE, PREPROCESS_ON_DEVICE, FramePreprocessing
from extractors.weights import Meta, Weights, WeightsTable
from io_utils.checkpoints import local_file
from io_utils.errors import UsageError
from io_utils.hub import hub_file, hub_unreachable, hub_url, local_snapshot, record_absent, snapshot_folder

_OPENAI = "https://openaipublic.azureedge.net/clip/models"
# OpenAI's normalisation constants (open_clip.constants.OPENAI_DATASET_MEAN / _STD).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# Scalars that OpenAI's TorchScript archives carry beside the weights.
_OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")
# What open_clip names the files of a hub repository (open_clip.constants): safetensors first, as it prefers.
_HUB_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
_HUB_CONFIG = "open_clip_config.json"
_SCHEMAS = ("local-dir:", "hf-hub:")

PRED_TEXTS = Option("pred_texts", None, "with --show_pred: score these texts instead of the Kinetics-400 classes",
                    ("a dog",), many=True, metavar="TEXT", changes_features=False)
PRETRAINED = Option("pretrained", None, "open_clip's pretrained tag for --model_name (python -c 'import open_clip; "
                    "print(open_clip.list_pretrained())'); it also sets the preprocessing of a --checkpoint",
                    "webli", metavar="TAG")


def open_clip_preprocessing(config: Mapping[str, Any], pil: bool = True) -> FramePreprocessing:
    """open_clip's eval transform (``open_clip.image_transform_v2`` of a ``PreprocessCfg``) as a
    :class:`FramePreprocessing`: ``shortest`` resizes the short side and centre crops, ``squash`` resizes to
    the size, ``longest`` fits the long side and pads with ``fill_color``. ``pil``: resize a PIL image, as
    open_clip (and OpenAI's CLIP) do."""
    size = config["size"]
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    common = dict(crop=(height, width), mean=tuple(config["mean"]), std=tuple(config["std"]),
                  interpolation=InterpolationMode(config["interpolation"]), pil=pil)
    mode = config["resize_mode"]
    if mode == "squash":
        return FramePreprocessing((height, width), **common)
    if mode == "longest":
        return FramePreprocessing((height, width), keep_ratio=1.0, fill=config.get("fill_color", 0), **common)
    if mode != "shortest":
        raise UsageError(f"open_clip resize_mode {mode!r} is not supported (shortest, squash and longest are)")
    if height == width:
        return FramePreprocessing(height, **common)
    return FramePreprocessing((height, width), keep_ratio=0.0, **common)


def clip_preprocessing(size: int, pil: bool = True) -> FramePreprocessing:
    """OpenAI's CLIP transform: bicubic resize of the short side of a PIL image, centre crop, CLIP mean/std."""
    return open_clip_preprocessing(dict(size=size, mean=CLIP_MEAN, std=CLIP_STD, interpolation="bicubic",
                                        resize_mode="shortest"), pil)


def _open_clip_model(name: str) -> torch.nn.Module:
    import open_clip  # imported here: it pulls in timm and the HF hub, seconds that --help need not wait

    with built_without_weights():
        return open_clip.create_model(name, pretrained=None, force_quick_gelu=True)


class _NoRandomInitWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("No pretrained weights loaded")


@contextlib.contextmanager
def built_without_weights():
    """open_clip's warning that a model was "initialized randomly" silenced: it logs it on the root logger for
    every model built without its pretrained tag, which is what the tool asks for when it loads a checkpoint
    itself or writes random weights on purpose; read there, it looks like a failure."""
    muted = _NoRandomInitWarning()
    logging.getLogger().addFilter(muted)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(muted)


def _openai(sha256: str, open_clip_name: str, image_size: int, embed_dim: int) -> Weights:
    """OpenAI publishes each checkpoint under its own SHA-256, as a TorchScript archive of fp16 weights."""
    return Weights("openai", f"{_OPENAI}/{sha256}/{open_clip_name}.pt", sha256, partial(_open_clip_model, open_clip_name),
                   clip_preprocessing(image_size), Meta(embed_dim=embed_dim, input_range="(RGB / 255 - mean) / std"),
                   save_random=lambda model, path: save_openai_archive(model, path))


CLIP_WEIGHTS: dict[str, Weights] = {
    "CLIP-RN50": _openai("afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762", "RN50", 224, 1024),
    "CLIP-RN101": _openai("8fa8567bab74a42d41c5915025a8e4538c3bdbe8804a470a72f30b0d94fab599", "RN101", 224, 512),
    "CLIP-RN50x4": _openai("7e526bd135e493cef0776de27d5f42653e6b4c8bf9e0f653bb11773263205fdd", "RN50x4", 288, 640),
    "CLIP-RN50x16": _openai("52378b407f34354e150460fe41077663dd5b39c54cd0bfd2b27167a4a06ec9aa", "RN50x16", 384, 768),
    "CLIP-RN50x64": _openai("be1cfb55d75a9666199fb2206c106743da0f6468c9d327f3e0d0a543a9919d9c", "RN50x64", 448, 1024),
    "CLIP-ViT-B/32": _openai("40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af", "ViT-B-32", 224, 512),
    "CLIP-ViT-B/16": _openai("5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f", "ViT-B-16", 224, 512),
    "CLIP-ViT-L/14": _openai("b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836", "ViT-L-14", 224, 768),
    "CLIP-ViT-L/14@336px": _openai(
        "3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02", "ViT-L-14-336px", 336, 768
    ),
}


class ImageTextExtractor(FrameWiseExtractor):
    """Image embeddings (before normalisation, ``encode_image``) of sampled frames from an open_clip model, and
    its zero-shot scores with ``--show_pred``. Subclasses say where the model comes from and how to tokenize."""

    @classmethod
    def validate(cls, config, weights) -> None:
        super().validate(config, weights)
        if config[PRED_TEXTS] and not config[SHOW_PRED]:
            raise UsageError("--pred_texts are the texts that --show_pred scores; give --show_pred too")

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.texts: list[str] = []
        if self.config[SHOW_PRED]:  # the tokenizer loads now, so that a missing one stops the run, not each video
            self.texts = list(self.config[PRED_TEXTS] or [f"a photo of {label}" for label in kinetics400_labels()])
            with torch.inference_mode():
                features = self.model.encode_text(self.tokenize(self.texts).to(self.device)).float()
            self.text_features = torch.nn.functional.normalize(features, dim=-1).cpu()

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(batch.to(next(self.model.visual.parameters()).dtype))

    def image_tower(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` without its text tower unless ``--show_pred`` needs it: features come from the image tower
        alone, and the text tower is as large (SigLIP 2's 256k-token embedding) or larger (EVA02-E, bigG)."""
        if not self.config[SHOW_PRED]:
            for name in ("text", "transformer", "token_embedding", "ln_final", "positional_embedding", "text_projection"):
                if hasattr(model, name):
                    setattr(model, name, None)
        return model

    @abc.abstractmethod
    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """Token ids of ``texts``, with the model's own tokenizer."""

    def show_predictions(self, outputs: Mapping[str, np.ndarray], timestamps_ms: Sequence[float]) -> None:
        """Top-5 zero-shot classes per frame, over ``--pred_texts`` or "a photo of {Kinetics-400 label}", scored
        as the model was trained (:func:`zero_shot_scores`)."""
        image_features = torch.nn.functional.normalize(torch.from_numpy(outputs[self.main_key]), dim=-1)
        print_top_classes(self.texts, zero_shot_scores(self.model, image_features, self.text_features), timestamps_ms)


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
        repo_id, _ = hub_location(cfg)
        source = str(path) if config[CHECKPOINT] else hub_url(repo_id, path.name)
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


def zero_shot_scores(model: torch.nn.Module, image_features: torch.Tensor, text_features: torch.Tensor
                     ) -> torch.Tensor:
    """(frames, texts) scores of unit-norm features, as open_clip's zero-shot examples compute them."""
    scale = model.logit_scale.detach().float().exp().cpu()
    logits = scale * image_features @ text_features.T
    bias = getattr(model, "logit_bias", None)
    if bias is not None:
        return torch.sigmoid(logits + bias.detach().float().cpu())
    return logits.softmax(dim=-1)


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
    if checkpoint:
        return local_file(checkpoint, "checkpoint")
    import open_clip

    repo_id, file_name = hub_location(open_clip.get_pretrained_cfg(name, tag))
    names = (file_name,) if file_name else _HUB_WEIGHTS
    return hub_file(repo_id, names, weights_dir, f"open_clip {name} {tag}", progress)


def hub_location(pretrained_cfg: Mapping[str, Any]) -> tuple[str, str]:
    """(repository, file name or "" for open_clip's default names) of a tag's ``hf_hub`` entry
    (``org/repo/`` or ``org/repo/file``)."""
    repo_id, _, file_name = pretrained_cfg["hf_hub"].rpartition("/")
    return repo_id, file_name


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
    repo_id, file_name = hub_location(cfg)
    folder = snapshot_folder(cache, repo_id)
    model_config = open_clip.get_model_config(name)
    weights = folder / (file_name or _HUB_WEIGHTS[0])
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


class ExtractCLIP(ImageTextExtractor):
    """OpenAI's CLIP models from OpenAI's release files; fp16 weights on CUDA, fp32 on the CPU."""

    key = "clip"
    docs = ModelDocs("CLIP", "clip.md", "OpenAI CLIP image embeddings of sampled frames",
                     "frames", "`clip`, 512-1024")
    options = (*FrameWiseExtractor.options, CHECKPOINT.formerly("clip_checkpoint"), CROPS, FAST_RESIZE,
               PREPROCESS_ON_DEVICE, SHOW_PRED, PRED_TEXTS)

    def load_model(self) -> tuple[torch.nn.Module, FramePreprocessing]:
        import open_clip

        path = self.checkpoint_file()
        state_dict = load_openai_state_dict(path)
        half = self.device.type == "cuda"
        try:
            model = open_clip.model.build_model_from_openai_state_dict(state_dict, cast_dtype=torch.float16 if half else None)
        except (KeyError, RuntimeError) as error:
            raise UsageError(f"{path}: not an OpenAI-format CLIP checkpoint ({error})") from error
        size: int = model.visual.image_size[0] if isinstance(model.visual.image_size, tuple) else model.visual.image_size
        return self.image_tower(model if half else model.float()), clip_preprocessing(size, pil=not self.config[FAST_RESIZE])

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        import open_clip

        return open_clip.tokenize(texts, context_length=self.model.context_length)


def load_openai_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a TorchScript archive or a (possibly wrapped or prefixed) state dict."""
    if not path.is_file():
        raise UsageError(f"CLIP checkpoint {path}: no such file")
    try:
        with warnings.catch_warnings():  # TorchScript is deprecated, but it is the format OpenAI published
            warnings.simplefilter("ignore", FutureWarning)
            return torch.jit.load(str(path), map_location="cpu").state_dict()
    except RuntimeError:
        pass  # not TorchScript: a pickled state dict
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several unrelated types for unreadable files
        raise UsageError(f"CLIP checkpoint {path}: cannot be read ({type(error).__name__}: {error})") from error
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict):
        raise UsageError(f"CLIP checkpoint {path}: holds a {type(loaded).__name__}, not a state dict")
    return _strip_prefixes(loaded)


def _strip_prefixes(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``module.`` (DataParallel) and ``clip.`` (CLIP4Clip, whose other modules are dropped)."""
    state_dict = {key.removeprefix("module."): value for key, value in state_dict.items()}
    if any(key.startswith("clip.") for key in state_dict):
        state_dict = {key.removeprefix("clip."): value for key, value in state_dict.items() if key.startswith("clip.")}
    return state_dict


def save_openai_archive(model: torch.nn.Module, path: Path) -> None:
    """``model`` (an open_clip CLIP) as OpenAI released CLIP: a TorchScript archive of fp16 weights with the
    scalars OpenAI's loader reads."""
    import open_clip

    open_clip.model.convert_weights_to_fp16(model)
    state_dict = {key: value for key, value in model.state_dict().items() if key != "attn_mask"}
    size = model.visual.image_size
    extras = (size[0] if isinstance(size, tuple) else size, model.context_length, model.vocab_size)
    state_dict.update({key: torch.tensor(value) for key, value in zip(_OPENAI_EXTRA_KEYS, extras)})
    root = _Holder()
    for key, tensor in state_dict.items():
        *parents, leaf = key.split(".")
        module = root
        for name in parents:
            if not hasattr(module, name):
                module.add_module(name, _Holder())
            module = getattr(module, name)
        module.register_buffer(leaf, tensor.clone())
    with warnings.catch_warnings():  # TorchScript is deprecated, but it is the format OpenAI published
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(root), str(path))


class _Holder(torch.nn.Module):
    def forward(self) -> int:
        return 0


register(*(FeatureType(name, ExtractCLIP, WeightsTable([weights], default="openai")) for name, weights in CLIP_WEIGHTS.items()),
         FeatureType("open_clip", ExtractOpenCLIP))
