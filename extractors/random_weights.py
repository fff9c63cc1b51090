"""Checkpoints of random weights in the official formats, for trying the tool, tests and benchmarks offline.

``python -m extractors.random_weights FOLDER --feature_type FEATURE_TYPE [options]`` writes every checkpoint a run
of that feature type with those options (main.py's) loads, under its official file name, where ``--weights_dir FOLDER`` finds it.
They go through exactly the loading path of a downloaded checkpoint; their features mean nothing. Each
checkpoint is written by its :class:`~io_utils.weights.Weights` entry, so a new model needs nothing here.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from extractors.cli import build_parser
from extractors.config import resolve_config
from extractors.registry import extractor_class
from io_utils.errors import UsageError

def write_random_weights(feature_type: str, folder: Path, seed: int = 0, **options: Any) -> list[Path]:
    """Random checkpoints for a run of ``feature_type`` with ``options``, written into ``folder``."""
    config = resolve_config({"feature_type": feature_type, **options})
    checkpoints = extractor_class(feature_type).checkpoints(config)
    return [weights.write_random(folder, seed + index) for index, (weights, _, _) in enumerate(checkpoints)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m extractors.random_weights", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, metavar="FOLDER")
    parser.add_argument("--seed", type=int, default=0)
    build_parser(parser, groups=("models", "flow", "audio"))  # --feature_type and main.py's model options
    options = vars(parser.parse_args(argv))
    feature_type, folder, seed = options.pop("feature_type"), options.pop("folder"), options.pop("seed")
    try:
        paths = write_random_weights(feature_type, folder, seed, **options)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if not paths:
        print(f"error: {feature_type} has no published checkpoint here (timm's weights come from its hub; "
              "give --checkpoint a file)", file=sys.stderr)
        return 1
    print("\n".join(map(str, paths)))
    return 0


if __name__ == "__main__":  # run as ``python -m``, after the package (and so every model module) is imported
    sys.exit(main())
