"""The commands: ``main.py``'s options, generated from the declarations, and its sub-commands.

Only ``main.py`` imports this module. The parser offers the options of every run (``RunConfig``'s fields) and
every option a registered family declares; each option's help says which feature types read it, and ``--weights``
lists every feature type's published weights, all read off the registry, so a new family appears here without an
edit. Options that are not given do not appear in the parsed namespace, so the configuration tells what the user
asked for from what was left at its default.

Sub-commands: ``pack`` (a finished output folder into one HDF5 file), ``random_weights`` (random checkpoints in
the official formats) and ``reference`` (the generated reference pages of the documentation).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

from extractors.catalog import (MODEL_TABLES, REPOSITORY, collapsed, models_listing, presets_listing, reference_pages,
                                shown, weights_line, with_model_table, write_random_weights)
from extractors.config import RUN_OPTIONS
from extractors.features import open_features
from extractors.options import Option, Section
from extractors.registry import declared_everywhere, feature_types, former_spellings, readers
from io_utils.files import atomic_write
from io_utils.manifest import MANIFEST_FILE, read_manifest
from io_utils.pack import pack
from io_utils.remote_outputs import local_copy


def build_parser() -> argparse.ArgumentParser:
    """``main.py``'s parser."""
    parser = argparse.ArgumentParser(
        prog="main.py", description="Extract features from videos with pretrained networks. An option that the "
        "feature type does not read is refused.", epilog="Other commands: main.py pack FOLDER --to FILE; main.py "
        "random_weights FOLDER --feature_type TYPE; main.py reference FOLDER (each with --help).")
    sections = _Sections(parser)
    recipes = sections[Section.RECIPES]
    recipes.add_argument("--list_presets", action=_Listing, listing=presets_listing, help="print every preset, what "
                         "it reproduces and its resolved options, then exit")
    recipes.add_argument("--list_models", action=_Listing, listing=models_listing, help="print every feature type: "
                         "its outputs, weights, default sampling and the options it reads, then exit")
    exclusive = {"inputs": sections[Section.INPUTS].add_mutually_exclusive_group(required=True),
                 "devices": sections[Section.DEVICES].add_mutually_exclusive_group()}
    for option in RUN_OPTIONS.values():
        target = exclusive.get(option.exclusive) or sections[option.section]
        target.add_argument(f"--{option.name}", help=_run_help(option), **_argument(option))
    _add_model_options(sections)
    sections[Section.MODELS].add_argument(
        "--per_type", nargs="+", default=argparse.SUPPRESS, metavar="TYPE:OPTION=VALUE",
        help="with several feature types: an option for one of them only (e.g. resnet152:checkpoint=r152.pth)")
    return parser


def parse_options(argv: list[str] | None = None) -> dict[str, Any]:
    """The options given on the command line (``argv``, default ``sys.argv``), by name: ``feature_type`` is a list
    when several are given, and ``--per_type TYPE:OPTION=VALUE`` is the option ``TYPE:OPTION``."""
    parser = build_parser()
    options = vars(parser.parse_args(argv))
    if len(options.get("feature_type", ())) == 1:
        options["feature_type"] = options["feature_type"][0]
    for item in options.pop("per_type", ()):
        name, equals, value = item.partition("=")
        if not equals or ":" not in name:
            parser.error(f"--per_type {item}: give TYPE:OPTION=VALUE")
        options[name] = _per_type_value(parser, item, name.rsplit(":", 1)[1], value)
    return options


def _per_type_value(parser: argparse.ArgumentParser, item: str, name: str, value: str) -> Any:
    """A ``--per_type`` value as the command line would give it: true or false for a switch, a list for an
    option that takes several (comma-separated); the option's own checks come after, as for any option."""
    option = next((option for option in declared_everywhere() if name == option.name or name in option.former), None)
    if option is not None and option.flag:
        if value.lower() not in ("true", "false"):
            parser.error(f"--per_type {item}: --{name} is a switch: give true or false")
        return value.lower() == "true"
    return value.split(",") if option is not None and option.many else value


class _Sections(dict):
    """``--help`` sections by title: :class:`Section`'s in their order, a family's own after them as they come."""

    def __init__(self, parser: argparse.ArgumentParser):
        super().__init__({title: parser.add_argument_group(title) for title in Section.ORDER})
        self._parser = parser

    def __missing__(self, title: str):
        self[title] = group = self._parser.add_argument_group(title)
        return group


class _Listing(argparse.Action):
    """``--list_presets``, ``--list_models``: like ``--help``, they answer and exit before the required options
    are checked."""

    def __init__(self, option_strings, dest, listing: Callable[[], str], **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)
        self._listing = listing

    def __call__(self, parser, namespace, values, option_string=None):
        print(self._listing())
        parser.exit()


def _add_model_options(sections: _Sections) -> None:
    """Every option a registered family reads, and every former spelling, once each (a name can be one family's
    option and another's former spelling of one: ``--model_name``)."""
    read_by, former = readers(), former_spellings()
    options = {option.name: option for option in declared_everywhere()}
    for name in [*options, *(spelling for spelling in former if spelling not in options)]:
        option = options.get(name) or options[next(iter(former[name]))]  # a former spelling parses as its option
        notes = [_model_help(option, read_by[name])] if name in options else []
        notes += [f"for {', '.join(collapsed(types))}: the former spelling of --{canonical}"
                  for canonical, types in former.get(name, {}).items()]
        sections[option.section].add_argument(f"--{name}", help="; ".join(notes).replace("%", "%%"),
                                               **_argument(option))


def _argument(option: Option) -> dict[str, Any]:
    """What argparse needs for ``option``; options not given stay out of the parsed namespace."""
    kwargs: dict[str, Any] = dict(default=argparse.SUPPRESS)
    if option.name == "feature_type":
        return {**kwargs, "choices": feature_types(), "metavar": option.metavar, "nargs": "+"}
    if option.flag:
        return {**kwargs, "action": "store_true"}
    kwargs.update(metavar=option.metavar, choices=option.choices)
    if option.convert is not None:
        kwargs["type"] = _argparse_type(option.convert)
    if option.many:
        kwargs["nargs"] = "+"
    return kwargs


def _run_help(option: Option) -> str:
    if option.name == "feature_type":
        return f"{option.help}: {', '.join(feature_types())}"
    return (option.help + _default(option)).replace("%", "%%")


def _model_help(option: Option, types: list[str]) -> str:
    text = option.help
    if option.name == "weights":
        text += ": " + "; ".join(weights_line(name) for name in types)
    return f"{text}{_default(option)} [read by: {', '.join(collapsed(types))}]"


def _default(option: Option) -> str:
    return "" if option.default in (None, False, ()) else f" (default: {shown(option.default)})"


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
    """``main.py pack SOURCE --to FILE``: a finished output into one HDF5 file or shard (see ``io_utils/pack.py``)."""
    parser = argparse.ArgumentParser(prog="main.py pack", description="Pack a finished output (the .npy, .pkl or "
                                     "shard files of one feature type, and its manifest.json; or a shard or packed "
                                     "file) into one HDF5 file, Parquet file or WebDataset tar, by the suffix of "
                                     "--to; packing again into an HDF5 file adds the videos it does not hold yet.")
    parser.add_argument("folder", help="the output folder of one feature type (where its manifest.json is), a shard "
                                       "or a packed file; a folder in object storage is copied to a temporary folder "
                                       "first")
    parser.add_argument("--to", required=True, metavar="FILE", help="the file to write: .h5 (or .hdf5: extended if "
                                                                    "it exists), .parquet or .tar")
    parser.add_argument("--feature_type", choices=feature_types(), metavar="FEATURE_TYPE",
                        help="for a folder without manifest.json: which feature type made it (with default options)")
    args = parser.parse_args(argv)
    with local_copy(args.folder) as folder:  # a folder in object storage is copied here first
        manifest = folder / MANIFEST_FILE
        recorded = read_manifest(manifest) if folder.is_dir() and manifest.exists() else {}
        added, kept = pack(open_features(folder, args.feature_type), recorded, Path(args.to))
    print(f"{args.to}: {added} videos added, {kept} already there")
    return 0


def random_weights_command(argv: list[str]) -> int:
    """``main.py random_weights FOLDER --feature_type TYPE [options]``: the checkpoints a run loads, random."""
    parser = argparse.ArgumentParser(
        prog="main.py random_weights", description="Write every checkpoint that a run of FEATURE_TYPE with these "
        "options loads, with random weights in the official format, under its official file name in FOLDER (where "
        "--weights_dir FOLDER finds it). They go through exactly the loading path of a downloaded checkpoint; "
        "their features mean nothing: for trying the tool, tests and benchmarks offline.")
    parser.add_argument("folder", type=Path, metavar="FOLDER")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--feature_type", required=True, **{key: value for key, value in
                                                            _argument(RUN_OPTIONS["feature_type"]).items()
                                                            if key not in ("default", "nargs")})  # one type
    _add_model_options(_Sections(parser))
    options = vars(parser.parse_args(argv))
    feature_type, folder, seed = options.pop("feature_type"), options.pop("folder"), options.pop("seed")
    paths = write_random_weights(feature_type, folder, seed, **options)
    print("\n".join(map(str, paths)))
    return 0


def reference_command(argv: list[str]) -> int:
    """``main.py reference FOLDER``: the generated reference pages (options, feature types, weights, presets), and
    the model tables of the README and of ``docs/models/index.md``."""
    parser = argparse.ArgumentParser(prog="main.py reference", description="Write the reference pages of the "
                                     "documentation, generated from the registry, into FOLDER (docs/reference).")
    parser.add_argument("folder", type=Path, metavar="FOLDER")
    folder = parser.parse_args(argv).folder
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in reference_pages().items():
        atomic_write(folder / name, lambda handle, text=text: handle.write(text.encode()))
        print(folder / name)
    for name, pages in MODEL_TABLES.items():  # the model tables of the README and the models index
        path = REPOSITORY / name
        text = with_model_table(path.read_text(), pages)
        atomic_write(path, lambda handle, text=text: handle.write(text.encode()))
        print(path)
    return 0


COMMANDS = {"pack": pack_command, "random_weights": random_weights_command, "reference": reference_command}
