"""A long fuzzing run: mutations of clips in five containers and codecs (``tests/fuzz.py``), through the command
line with two workers. Prints the outcome counts, the worker deaths and their causes, and the failure reasons
grouped by their first words.

    python bench/fuzz.py --inputs 500 --seed 1
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fuzz import base_clips, mutated_inputs, run_fuzz, summary  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout_s", type=float, default=3600)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="video_features-fuzz-") as folder:
        work = Path(folder)
        inputs = mutated_inputs(base_clips(work / "clips"), args.inputs, args.seed, work / "inputs")
        report = run_fuzz(inputs, work, args.timeout_s)
    print(summary(report))
    reasons = Counter(" ".join(reason.split()[:4]) for reason in report.failed.values())
    for reason, count in reasons.most_common():
        print(f"{count:5d}  {reason}")
    for path, reason in report.bare_reasons.items():
        print(f"bare: {Path(path).name}: {reason}")


if __name__ == "__main__":
    main()
