"""Deterministic mutations of real clips, run through the command line: how the tool behaves on damaged files.

Each mutated input must end done (finite features, complete outputs) or failed with a reason in words; the run
must end within a bound, print no traceback and leave no temporary file or claim. A small fixed-seed run is a test
(``tests/test_fuzz.py``); ``bench/fuzz.py`` runs a long one.
"""
from __future__ import annotations

import csv
import random
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from io_utils.claims import outputs_complete
from tests.checkpoints import write_tiny_clip
from tests.clips import write_clip

REPO = Path(__file__).resolve().parents[1]
FEATURES = "CLIP-ViT-B_32"
_BARE = re.compile(r"^[A-Z]\w*(Error|Exception)\b")
MUTATIONS = ("bit_flips", "zeroed_block", "truncation", "swapped_chunks", "repeated_chunk", "damaged_header")
# (file name, encoder, pixel format): the containers and codecs a dataset mixes
BASE_CLIPS = (("h264.mp4", "libx264", "yuv420p"), ("h264.mkv", "libx264", "yuv420p"),
              ("vp9.webm", "libvpx-vp9", "yuv420p"), ("mpeg4.avi", "mpeg4", "yuv420p"),
              ("mjpeg.mov", "mjpeg", "yuvj420p"))


def base_clips(folder: Path) -> list[Path]:
    return [write_clip(folder / name, num_frames=40, size=(128, 96), codec=codec, pix_fmt=pix_fmt, gop=10)
            for name, codec, pix_fmt in BASE_CLIPS]


def mutate(data: bytes, kind: str, rng: random.Random) -> bytes:
    """One deterministic mutation of a file's bytes."""
    size = len(data)
    if kind == "bit_flips":
        damaged = bytearray(data)
        for _ in range(rng.randint(1, 64)):
            position = rng.randrange(size)
            damaged[position] ^= 1 << rng.randrange(8)
        return bytes(damaged)
    if kind == "zeroed_block":
        start, length = rng.randrange(size), rng.randint(16, 4096)
        return data[:start] + bytes(min(length, size - start)) + data[start + length:]
    if kind == "truncation":
        return data[: rng.randrange(1, size)]
    if kind == "swapped_chunks":
        a, b = sorted(rng.sample(range(size), 2))
        length = min(rng.randint(16, 2048), b - a, size - b)
        return data[:a] + data[b: b + length] + data[a + length: b] + data[a: a + length] + data[b + length:]
    if kind == "repeated_chunk":
        start, length = rng.randrange(size), rng.randint(16, 4096)
        return data[: start + length] + data[start: start + length] + data[start + length:]
    if kind == "damaged_header":
        damaged = bytearray(data)
        for position in rng.sample(range(min(size, 512)), min(16, size)):
            damaged[position] = rng.randrange(256)
        return bytes(damaged)
    raise ValueError(kind)


def mutated_inputs(sources: list[Path], count: int, seed: int, folder: Path) -> list[Path]:
    """``count`` inputs, each one mutation of one of ``sources``, the same for the same seed."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    inputs = []
    for index in range(count):
        source, kind = sources[index % len(sources)], MUTATIONS[(index // len(sources)) % len(MUTATIONS)]
        path = folder / f"{index:04d}_{kind}_{source.stem}{source.suffix}"
        path.write_bytes(mutate(source.read_bytes(), kind, rng))
        inputs.append(path)
    return inputs


@dataclass
class FuzzReport:
    inputs: int
    seconds: float
    exit_status: int
    done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    tracebacks: int = 0
    leftovers: list[str] = field(default_factory=list)  # temporary files and claims left in the output folder
    incomplete: list[str] = field(default_factory=list)  # outputs that do not load or hold non-finite numbers
    stderr: str = ""

    @property
    def unaccounted(self) -> int:
        return self.inputs - len(self.done) - len(self.failed)

    @property
    def bare_reasons(self) -> dict[str, str]:
        """Failures whose reason is a Python exception's name and message rather than words about the file."""
        return {path: reason for path, reason in self.failed.items() if _BARE.match(reason)}

    @property
    def worker_deaths(self) -> dict[str, str]:
        return {path: reason for path, reason in self.failed.items() if "died" in reason}


def run_fuzz(inputs: list[Path], work: Path, timeout_s: float, workers: int = 2) -> FuzzReport:
    """Extract every input with a tiny CLIP (fix_5) through the command line, with ``workers`` processes."""
    checkpoint = write_tiny_clip(work / "tiny.pt")
    out = work / "out"
    list_file = work / "inputs.txt"
    list_file.write_text("".join(f"{path}\n" for path in inputs))
    start = time.monotonic()
    result = subprocess.run([sys.executable, "main.py", "--feature_type", "CLIP-ViT-B/32", "--cpu", "--num_workers",
                             str(workers), "--clip_checkpoint", str(checkpoint), "--extract_method", "fix_5",
                             "--on_extraction", "save_numpy", "--output_path", str(out), "--file_with_video_paths",
                             str(list_file)], cwd=REPO, capture_output=True, text=True, timeout=timeout_s)
    report = FuzzReport(len(inputs), time.monotonic() - start, result.returncode, stderr=result.stderr,
                        tracebacks=result.stderr.count("Traceback"))
    folder = out / FEATURES
    failures = folder / "failures.tsv"
    if failures.exists():
        with failures.open() as handle:
            report.failed = {row["path"]: row["reason"] for row in csv.DictReader(handle, delimiter="\t")}
    for path in inputs:
        main = folder / f"{path.stem}_clip.npy"
        if main.exists():
            report.done.append(str(path))
            outputs = [folder / f"{path.stem}_{key}.npy" for key in ("clip", "fps", "timestamps_ms")]
            if not outputs_complete(outputs) or not np.isfinite(np.load(main)).all():
                report.incomplete.append(str(path))
    report.leftovers = [p.name for p in folder.rglob("*") if p.name.endswith((".tmp", ".lock"))] if folder.exists() \
        else []
    return report


def summary(report: FuzzReport) -> str:
    deaths = "; ".join(f"{Path(path).name}: {reason}" for path, reason in report.worker_deaths.items()) or "none"
    return (f"{report.inputs} inputs in {report.seconds:.0f} s (exit {report.exit_status}): {len(report.done)} done, "
            f"{len(report.failed)} failed, {report.unaccounted} unaccounted, {report.tracebacks} tracebacks, "
            f"{len(report.leftovers)} leftovers, {len(report.incomplete)} incomplete, {len(report.bare_reasons)} bare "
            f"exceptions as reasons; worker deaths: {deaths}")
