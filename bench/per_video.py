"""The cost of a run per video, apart from the model: orchestration, the manifest, resuming, the driver's memory.

Many tiny videos (one 0.5 s clip of 96 x 64 px, hard-linked under ``--videos`` names) go through ``main.py``
(resnet18 with random weights, ``fix_1``, ``--cpu``, ``--on_extraction`` as given: ``save_numpy`` by default,
one worker), and through an in-process loop of
``extract()`` on a sample of them with the model already loaded. Reported for each count:

- **orchestration ms per video**: the run's wall time, less a one-video run's (start-up, model loading), per
  further video, less the in-process ``extract()`` time per video;
- **manifest bytes per video** (``manifest.json`` and its journal);
- **driver KB per video**: the main process's peak resident memory (polled from ``/proc``) less a one-video run's,
  per further video;
- **resume s**: a second run over the finished list, which has nothing to do.

    python bench/per_video.py --videos 1000 10000 [--on_extraction save_parquet]
    unshare -n sh -c 'ip link set lo up && python bench/per_video.py --backend ray --videos 1000'

(Ray registers the machine's external address: on a machine without a cluster, run it in a network namespace with
only loopback, as ``tests/test_ray.py`` does.)
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from extractors.catalog import write_random_weights  # noqa: E402
from extractors.models.resnet import ExtractResNet  # noqa: E402
from tests.clips import write_clip  # noqa: E402

OPTIONS = ["--feature_type", "resnet18", "--extract_method", "fix_1", "--cpu"]
IN_PROCESS_SAMPLE = 200  # videos timed in process (the per-video model time does not depend on the count)


def videos(folder: Path, count: int) -> Path:
    """A list file of ``count`` hard links to one tiny clip, in sub-folders of 1,000."""
    clip = write_clip(folder / "clip.mp4", num_frames=12, rate=24, size=(96, 64))
    paths = []
    for index in range(count):
        path = folder / "videos" / f"{index // 1000:04d}" / f"v{index:07d}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        os.link(clip, path)
        paths.append(str(path))
    listing = folder / f"list_{count}.txt"
    listing.write_text("\n".join(paths) + "\n")
    return listing


def timed_run(listing: Path, weights: Path, out: Path, run_options: list[str]) -> tuple[float, int]:
    """Wall seconds of ``main.py`` on the list, and the main process's peak resident memory in KB."""
    command = [sys.executable, "main.py", *OPTIONS, *run_options, "--file_with_video_paths", str(listing),
               "--weights_dir", str(weights), "--output_path", str(out)]
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = [0]
    poller = threading.Thread(target=_poll_rss, args=(process, peak), daemon=True)
    poller.start()
    _, errors = process.communicate()
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"main.py failed ({process.returncode}): {errors[-2000:]}")
    poller.join()
    return seconds, peak[0]


def _poll_rss(process: subprocess.Popen, peak: list[int]) -> None:
    status = Path(f"/proc/{process.pid}/status")
    while process.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak[0] = max(peak[0], int(line.split()[1]))
        except OSError:
            return
        time.sleep(0.1)


def in_process_ms(listing: Path, weights: Path) -> float:
    """Milliseconds per video of ``extract()`` in a loop, the model loaded once."""
    extractor = ExtractResNet(dict(feature_type="resnet18", extract_method="fix_1", cpu=True,
                                   weights_dir=str(weights)), external_call=True)
    paths = listing.read_text().split()[:IN_PROCESS_SAMPLE]
    extractor.extract(paths[0])  # warm-up
    started = time.perf_counter()
    for path in paths:
        extractor.extract(path)
    return 1000 * (time.perf_counter() - started) / len(paths)


def manifest_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.iterdir() if path.name.startswith("manifest"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, nargs="+", default=[1000])
    parser.add_argument("--on_extraction", default="save_numpy", choices=("save_numpy", "save_pickle", "save_parquet",
                                                                          "save_webdataset"))
    parser.add_argument("--backend", default="local", choices=("local", "ray"))
    args = parser.parse_args()
    run_options = ["--on_extraction", args.on_extraction, "--backend", args.backend]
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{' '.join(run_options)}")
    print("| videos | run s | in-process ms per video | orchestration ms per video | manifest bytes per video "
          "| driver KB per video | resume s |\n| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory(prefix="per_video_") as scratch:
        scratch = Path(scratch)
        weights = scratch / "weights"
        write_random_weights("resnet18", weights)
        one = videos(scratch / "one", 1)
        base_seconds, base_rss = timed_run(one, weights, scratch / "out_one", run_options)
        model_ms = in_process_ms(videos(scratch / "sample", IN_PROCESS_SAMPLE), weights)
        for count in args.videos:
            listing = videos(scratch / f"n{count}", count)
            out = scratch / f"out_{count}"
            seconds, rss = timed_run(listing, weights, out, run_options)
            resume, _ = timed_run(listing, weights, out, run_options)
            per_video_ms = 1000 * (seconds - base_seconds) / (count - 1)
            print(f"| {count} | {seconds:.1f} | {model_ms:.1f} | {per_video_ms - model_ms:.1f} "
                  f"| {manifest_bytes(out / 'resnet18') / count:.0f} | {(rss - base_rss) / (count - 1):.2f} "
                  f"| {resume:.1f} |", flush=True)


if __name__ == "__main__":
    main()
