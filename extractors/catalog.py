"""What the tool can extract, described for people and tools, from the registry alone.

``list_models()`` and ``describe(name)`` answer in Python what ``python main.py --list_models`` prints, in the
way ``torchvision.models.list_models`` and ``timm.list_pretrained`` do; :func:`reference_pages` writes the
reference part of the documentation (every option, feature type, weights entry and preset), which a test keeps
equal to the registry; :func:`write_random_weights` writes the checkpoints a run loads, with random weights.
"""
from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from extractors.config import RUN_OPTIONS, RunConfig, output_layout, resolve_config
from extractors.options import Option, Section
from extractors.presets import PRESETS
from extractors.registry import (ModelDocs, declared_everywhere, declared_options, feature_type, feature_types,
                                 former_spellings, readers)


@dataclass(frozen=True)
class ModelInfo:
    """One feature type: the module of its family, its output keys (the main features first), its published
    weights (``--weights`` names, the default first; every checkpoint it loads, for a type without ``--weights``;
    empty where they come from elsewhere), how it samples by default, and the options it reads beyond those of
    every run (a former spelling in brackets)."""

    name: str
    family: str
    outputs: tuple[str, ...]
    weights: tuple[str, ...]
    sampling: str
    options: tuple[str, ...]

    def text(self) -> str:
        weights = ", ".join(self.weights) if self.weights else "from the model's own hub (see its page)"
        return (f"{self.name}  ({self.family})\n  outputs:  {', '.join(self.outputs)}\n  weights:  {weights}\n"
                f"  sampling: {self.sampling}\n  options:  {' '.join(self.options)}")


def list_models(pattern: str | None = None) -> list[str]:
    """The feature types, in registration order; with ``pattern`` (``"CLIP-*"``), those it matches."""
    return [name for name in feature_types() if pattern is None or fnmatch.fnmatchcase(name, pattern)]


def describe(name: str) -> ModelInfo:
    """What feature type ``name`` writes, loads and reads, with its default options."""
    config = default_config(name)
    spec = feature_type(name)
    table = spec.table(config)
    chosen = "weights" in declared_options(spec.extractor)  # else every entry is loaded (I3D's two streams)
    if table is None:
        weights = list(spec.extractor.library_weights())
    else:
        weights = [f"{table.default} (default)" if chosen else table.default, *table.names()[1:]]
    options = [f"--{option.name}" + "".join(f" (--{former})" for former in option.former)
               for option in spec.extractor.options]
    return ModelInfo(name, spec.extractor.__module__, output_layout(config).keys, tuple(weights),
                     spec.extractor.sampling_rule(config), tuple(sorted(options)))


def default_config(name: str) -> RunConfig:
    """Feature type ``name`` with every option at its default (the ones it cannot run without at their example)."""
    family = feature_type(name).extractor
    required = {option.name: option.example for option in declared_options(family).values() if option.required}
    return resolve_config({"feature_type": name, **required, **family.examples})


def models_listing() -> str:
    return "\n\n".join(describe(name).text() for name in list_models())


def collapsed(names: list[str]) -> list[str]:
    """Feature types with their families' many members as one (CLIP-RN50, CLIP-ViT-B/32, ... -> CLIP-*)."""
    families: dict[Any, list[str]] = {}
    for name in names:
        families.setdefault(feature_type(name).extractor, []).append(name)
    shown = []
    for members in families.values():
        prefix = os.path.commonprefix(members)
        shown.extend([f"{prefix}*"] if len(members) > 2 and prefix else members)
    return shown


def weights_line(name: str) -> str:
    """A feature type's ``--weights`` names, the default first (for a table that depends on another option, the
    one of its default)."""
    return f"{name}: {', '.join(feature_type(name).table(default_config(name)).names())}"


def presets_listing() -> str:
    """Each preset: its name, what it reproduces, what is known to differ, and its resolved options."""
    blocks = []
    for name, entry in PRESETS.items():
        differs = f"\n  differs: {entry.differs}" if entry.differs else ""
        blocks.append(f"{name}\n  reproduces: {entry.reproduces}{differs}\n  resolved: {preset_arguments(name)}")
    return "\n\n".join(blocks)


def preset_arguments(name: str) -> str:
    """A preset's resolved options, as command-line arguments."""
    config = resolve_config({"preset": name})
    return " ".join(as_argument(option, value) for option, value in config.given().items() if option != "preset")


def as_argument(option: str, value: Any) -> str:
    """``--option value`` as typed on the command line (``--option`` for a switch that is on)."""
    return f"--{option}" if value is True else f"--{option} {shown(value)}"


def shown(value: Any) -> str:
    """A value as typed on the command line: a sequence as its items separated by spaces."""
    return " ".join(map(str, value)) if isinstance(value, tuple) else str(value)


def write_random_weights(feature_type_name: str, folder: Path, seed: int = 0, **options: Any) -> list[Path]:
    """Random checkpoints in the official formats for a run of ``feature_type_name`` with ``options``, written into
    ``folder`` under their official file names (where ``--weights_dir`` finds them): they go through exactly the
    loading path of a downloaded checkpoint; their features mean nothing."""
    config = resolve_config({"feature_type": feature_type_name, **options})
    return feature_type(feature_type_name).extractor.write_random(config, Path(folder), seed)


# The reference documentation ------------------------------------------------------------------------------------

GENERATED = "<!-- Generated by `python main.py reference docs/reference` from the registry: do not edit. -->\n\n"


REPOSITORY = Path(__file__).resolve().parents[1]  # where README.md and docs/ are, in a checkout
TABLE_BEGIN = "<!-- The model table is generated from the registry by `python main.py reference docs/reference`. -->"
TABLE_END = "<!-- End of the generated model table. -->"
# Where the generated model tables are, relative to the repository, and the folder their links start from.
MODEL_TABLES = {"README.md": "docs/models/", "docs/models/index.md": ""}


def model_table(pages: str) -> str:
    """The table of documented families, one row per family and summary, its feature types in registration order;
    links to the family pages start with ``pages``. The README's (``pages`` = ``docs/models/``) is short, the
    models index's gives inputs and outputs."""
    rows: dict[tuple[str, str], tuple[ModelDocs, list[str]]] = {}
    for name in list_models():
        docs = feature_type(name).extractor.docs
        if docs is not None:
            rows.setdefault((docs.page, docs.summary), (docs, []))[1].append(name)
    if pages:
        lines = ["| feature type | what | page |", "| --- | --- | --- |"]
        lines += [f"| {_names(names, short=True)} | {docs.summary} | [{docs.title}]({pages}{docs.page}) |"
                  for docs, names in rows.values()]
    else:
        lines = ["| feature type | what | input | output key, dimension |", "| --- | --- | --- | --- |"]
        lines += [f"| {_names(names, short=False)} | [{docs.title}]({docs.page}): {docs.summary} | {docs.inputs} | "
                  f"{docs.outputs} |" for docs, names in rows.values()]
    return "\n".join(lines) + "\n"


def _names(names: list[str], short: bool) -> str:
    shown = [f"`{name}`" for name in names]
    return f"{shown[0]} ... {shown[-1]}" if short and len(shown) > 2 else ", ".join(shown)


def with_model_table(text: str, pages: str) -> str:
    """``text`` with the part between :data:`TABLE_BEGIN` and :data:`TABLE_END` replaced by :func:`model_table`."""
    if TABLE_BEGIN not in text or TABLE_END not in text:
        raise ValueError(f"the markers of the generated model table are missing ({TABLE_BEGIN})")
    before, rest = text.split(TABLE_BEGIN, 1)
    after = rest.split(TABLE_END, 1)[1]
    return f"{before}{TABLE_BEGIN}\n{model_table(pages)}{TABLE_END}{after}"


def reference_pages() -> dict[str, str]:
    """File name -> Markdown of the generated reference pages."""
    return {"feature-types.md": _feature_types_page(), "options.md": _options_page(), "weights.md": _weights_page(),
            "presets.md": _presets_page()}


def _feature_types_page() -> str:
    lines = [GENERATED, "# Feature types\n\n",
             "Every `--feature_type`, with its default options (`python main.py --list_models` prints the same).\n"]
    for name in list_models():
        info = describe(name)
        lines += [f"\n## `{name}`\n\n", f"- family: `{info.family}`\n",
                  f"- outputs: {', '.join(f'`{key}`' for key in info.outputs)}\n",
                  f"- weights: {', '.join(info.weights) or 'from the model hub (see its page)'}\n",
                  f"- default sampling: {info.sampling}\n",
                  f"- options: {', '.join(f'`{option}`' for option in info.options)}\n"]
    return "".join(lines)


def _options_page() -> str:
    lines = [GENERATED, "# Options\n\n",
             "Every option of `main.py` (and key of the Python API's dict). Options of every run are read by every "
             "feature type; any other option is refused by the feature types that do not read it. *Recorded*: the "
             "manifest records it, and a run into a folder made with another value is refused.\n"]
    model_options = sorted(declared_everywhere(), key=lambda option: option.name)
    by_section: dict[str, list[Option]] = {}
    for option in [*RUN_OPTIONS.values(), *model_options]:
        by_section.setdefault(option.section, []).append(option)
    ordered = [*Section.ORDER, *(section for section in by_section if section not in Section.ORDER)]
    read_by, formerly = readers(), former_spellings()
    for section in (section for section in ordered if section in by_section):
        lines.append(f"\n## {section[0].upper()}{section[1:]}\n")
        for option in by_section[section]:
            lines.append(_option_entry(option, read_by, formerly))
    return "".join(lines)


def _option_entry(option: Option, read_by: dict[str, list[str]], formerly: dict[str, dict[str, list[str]]]) -> str:
    value = "" if option.flag else f" {option.metavar or option.name.upper()}" + (" ..." if option.many else "")
    facts = []
    if option.choices:
        facts.append(f"choices: {', '.join(f'`{choice}`' for choice in option.choices)}")
    if option.default not in (None, False):
        facts.append(f"default: `{shown(option.default)}`")
    facts.append(f"e.g. `{as_argument(option.name, option.example)}`")
    if option.name in RUN_OPTIONS:
        facts.append("every run")
    else:
        facts.append(f"read by: {', '.join(collapsed(read_by[option.name]))}")
        facts.append("recorded" if option.changes_features else "not recorded")
    if option.required:
        facts.append("required")
    former = "".join(f"; formerly `--{spelling}` for {', '.join(collapsed(stands_for[option.name]))}"
                     for spelling, stands_for in formerly.items() if option.name in stands_for)
    return f"\n### `--{option.name}{value}`\n\n{option.help}{former}.\n\n{'; '.join(facts)}.\n"


def _weights_page() -> str:
    lines = [GENERATED, "# Weights\n\n",
             "Every published checkpoint each feature type can load, by `--weights` name (the default first, short "
             "names in brackets), with the official file name it is looked up under (in `--weights_dir`, then the "
             "torch hub cache), its SHA-256 (a prefix where the publisher gives only that) and where it is "
             "downloaded from. Where the table depends on another option, there is one table per value.\n"]
    for name in list_models():
        tables = feature_type(name).tables()
        if not tables:
            continue
        lines.append(f"\n## `{name}`\n\n| `--weights` | file | SHA-256 | URL |\n| --- | --- | --- | --- |\n")
        for condition, table in tables.items():
            for entry_name in (name for name in table.names() if name in table):  # the default first
                entry = table[entry_name]
                aliases = [f"`{alias}`" for alias, target in table.aliases.items() if target == entry_name]
                cell = f"`{entry_name}`" + (f" ({', '.join(aliases)})" if aliases else "")
                cell += " (default)" if entry_name == table.default else ""
                digest = f"`{entry.sha256}`" if entry.sha256 else "not published"
                where = f"{condition}: " if condition else ""
                lines.append(f"| {where}{cell} | `{entry.file_name}` | {digest} | <{entry.url}> |\n")
    return "".join(lines)


def _presets_page() -> str:
    lines = [GENERATED, "# Presets\n\n",
             "`--preset NAME` starts from a published feature set's options; options given explicitly override "
             "them. `python main.py --list_presets` prints the same.\n"]
    for name, entry in PRESETS.items():
        lines.append(f"\n## `{name}`\n\n- reproduces: {entry.reproduces}\n")
        if entry.differs:
            lines.append(f"- known to differ: {entry.differs}\n")
        lines.append(f"- resolved: `{preset_arguments(name)}`\n")
    return "".join(lines)
