"""The command line, generated from the fields of :class:`RunConfig` and from the registry.

Only ``main.py`` imports this module. Each option's help says which feature types read it, and ``--weights``
lists every feature type's published weights: both are read off the registry, so a new model appears here
without an edit. Options that are not given do not appear in the parsed namespace, so the configuration tells
what the user asked for from what was left at its default.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any, Callable, Collection

from extractors.config import COMMON_OPTIONS, RunConfig, resolve_config
from extractors.presets import PRESETS
from extractors.registry import feature_type, feature_types
from io_utils.errors import UsageError
from io_utils.manifest import MANIFEST_FILE
from io_utils.pack import pack

_GROUPS = {"recipes": "presets and manifests", "inputs": "inputs (exactly one)", "sampling": "sampling and windows",
           "devices": "devices", "outputs": "outputs, views, crops and pooling", "models": "models and weights",
           "flow": "optical flow (raft, pwc, and i3d's flow stream)", "audio": "audio (vggish)"}


def build_parser(parser: argparse.ArgumentParser | None = None, groups: Collection[str] = tuple(_GROUPS)
                 ) -> argparse.ArgumentParser:
    """``main.py``'s parser; or the options of some ``groups`` only, added to ``parser`` (another command's)."""
    parser = parser or argparse.ArgumentParser(prog="main.py", description="Extract features from videos with "
                                               "pretrained networks. An option that the feature type does not read "
                                               "is refused.")
    sections = {name: parser.add_argument_group(_GROUPS[name]) for name in groups}
    if "recipes" in sections:
        sections["recipes"].add_argument("--list_presets", action=_ListPresets, nargs=0, default=argparse.SUPPRESS,
                                         help="print every preset, what it reproduces and its resolved options, "
                                              "then exit")
    exclusive = {name: sections[name].add_mutually_exclusive_group(required=name == "inputs")
                 for name in ("inputs", "devices") if name in sections}
    readers = _readers()
    for spec in fields(RunConfig):
        metadata = spec.metadata
        if metadata["group"] not in sections and spec.name != "feature_type":
            continue
        target = exclusive.get(metadata["exclusive"]) or sections.get(metadata["group"], parser)
        kwargs: dict[str, Any] = dict(default=argparse.SUPPRESS, help=_help(spec, readers))
        if spec.name == "feature_type":
            kwargs.update(choices=feature_types(), metavar=metadata["metavar"])
        elif spec.type == "bool":
            kwargs["action"] = "store_true"
        else:
            kwargs.update(metavar=metadata["metavar"], choices=metadata["choices"])
            if metadata["convert"] is not None:
                kwargs["type"] = _argparse_type(metadata["convert"])
            if metadata["many"]:
                kwargs["nargs"] = "+"
        target.add_argument(f"--{spec.name}", **kwargs)
    return parser


class _ListPresets(argparse.Action):
    """``--list_presets``: like ``--help``, it answers and exits before the required options are checked."""

    def __call__(self, parser, namespace, values, option_string=None):
        print(presets_listing())
        parser.exit()


def presets_listing() -> str:
    """Each preset: its name, what it reproduces, what is known to differ, and its resolved options."""
    blocks = []
    for name, entry in PRESETS.items():
        config = resolve_config({"preset": name})
        options = " ".join(_as_argument(option, value) for option, value in config.given().items()
                           if option != "preset")
        differs = f"\n  differs: {entry.differs}" if entry.differs else ""
        blocks.append(f"{name}\n  reproduces: {entry.reproduces}{differs}\n  resolved: {options}")
    return "\n\n".join(blocks)


def _as_argument(option: str, value: Any) -> str:
    if value is True:
        return f"--{option}"
    shown = " ".join(map(str, value)) if isinstance(value, tuple) else str(value)
    return f"--{option} {shown}"


def parse_options(argv: list[str] | None = None) -> dict[str, Any]:
    """The options given on the command line (``argv``, default ``sys.argv``), by name."""
    return vars(build_parser().parse_args(argv))


def _help(spec, readers: dict[str, list[str]]) -> str:
    text = spec.metadata["help"]
    if spec.name == "feature_type":
        return f"{text}: {', '.join(feature_types())}"
    if spec.name == "weights":
        text += ": " + "; ".join(_weights_line(name) for name in readers["weights"])
    if spec.default not in (None, False, MISSING):
        default = spec.default
        shown = " ".join(map(str, default)) if isinstance(default, tuple) else default
        text += f" (default: {shown})"
    if spec.name not in COMMON_OPTIONS:
        text += f" [read by: {', '.join(_collapse(readers.get(spec.name, [])))}]"
    return text.replace("%", "%%")


def _readers() -> dict[str, list[str]]:
    """Option -> the feature types that read it (under their current spelling or a former one)."""
    readers: dict[str, list[str]] = {}
    for name in feature_types():
        extractor = feature_type(name).extractor
        for option in [*extractor.reads, *extractor.option_aliases]:
            readers.setdefault(option, []).append(name)
    return readers


def _weights_line(name: str) -> str:
    """A feature type's weights, the default first; RAFT's depend on --raft_model, shown for its default."""
    spec = feature_type(name)
    table = spec.table(RunConfig(feature_type=name))
    return f"{name}: {', '.join([*table, *spec.weight_aliases])}"


def _collapse(names: list[str]) -> list[str]:
    """The feature types of one extractor class as one family by their shared prefix (CLIP-RN50, CLIP-ViT-B/32,
    ... -> CLIP-*) when there are more than two."""
    families: dict[type, list[str]] = {}
    for name in names:
        families.setdefault(feature_type(name).extractor, []).append(name)
    shown = []
    for members in families.values():
        prefix = os.path.commonprefix(members)
        shown.extend([f"{prefix}*"] if len(members) > 2 and prefix else members)
    return shown or ["none"]


def _argparse_type(convert: Callable[[Any], Any]) -> Callable[[str], Any]:
    """argparse prints an ``ArgumentTypeError``'s own message; a ``ValueError``'s would be lost."""

    def parse(text: str) -> Any:
        try:
            return convert(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    parse.__name__ = convert.__name__
    return parse


def pack_command(argv: list[str]) -> int:
    """``main.py pack FOLDER --to FILE``: a finished output folder into one HDF5 file (see ``io_utils/pack.py``)."""
    parser = argparse.ArgumentParser(prog="main.py pack", description="Pack a finished output folder (the .npy "
                                     "files of one feature type, and its manifest.json) into one HDF5 file; "
                                     "packing again adds the videos the file does not hold yet.")
    parser.add_argument("folder", help="the output folder of one feature type (where its manifest.json is)")
    parser.add_argument("--to", required=True, metavar="FILE", help="the HDF5 file to write or extend")
    parser.add_argument("--feature_type", choices=feature_types(), metavar="FEATURE_TYPE",
                        help="for a folder without manifest.json: which feature type made it (with default options)")
    args = parser.parse_args(argv)
    folder = Path(args.folder)
    if (folder / MANIFEST_FILE).exists():
        config = resolve_config({"from_manifest": str(folder / MANIFEST_FILE)})
    elif args.feature_type:
        config = resolve_config({"feature_type": args.feature_type})
    else:
        raise UsageError(f"{folder}: no {MANIFEST_FILE}; give --feature_type to say which outputs to pack")
    keys = [*feature_type(config.feature_type).extractor.feature_keys(config), "fps", "timestamps_ms"]
    added, kept = pack(folder, Path(args.to), keys)
    print(f"{args.to}: {added} videos added, {kept} already there")
    return 0
