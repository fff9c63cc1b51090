"""The Ray backend's overhead against the local pool, on the same one-machine run.

Both executors get the same videos (the two samples, 4 times each under distinct names), CLIP ViT-B/32 with
random weights, ``fix_2``, ``--cpu --num_workers 2``, saved as ``.npy`` into a temporary folder. For each: the whole run (start-up
included: processes or actors, model loading, for Ray also starting a Ray instance) and the time from the first
video's result to the last (the steady state). Ray must not register this machine's external address, so run
it in a network namespace with only loopback:

    unshare -n sh -c 'ip link set lo up && python bench/ray_overhead.py'
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path, PurePath

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.inputs import SAMPLES, distinct_copies  # noqa: E402
from extractors.catalog import write_random_weights  # noqa: E402
from extractors.config import resolve_config  # noqa: E402
from extractors.pool import LocalPoolExecutor  # noqa: E402
from extractors.ray_backend import RayExecutor  # noqa: E402
from extractors.worker import Extraction  # noqa: E402
from io_utils.video_list import VideoJob  # noqa: E402


def timed_run(executor, options: dict, jobs: list[VideoJob]) -> tuple[float, float]:
    """Seconds of the whole run, and from the first result to the last."""
    results: list[float] = []
    start = time.perf_counter()
    executor.run(Extraction.of(resolve_config(options)), jobs, lambda result: results.append(time.perf_counter()))
    assert len(results) == len(jobs)
    return time.perf_counter() - start, results[-1] - results[0]


def main() -> None:
    jobs = [VideoJob(path, PurePath(path.stem)) for path in distinct_copies(SAMPLES, 4)]
    with tempfile.TemporaryDirectory() as folder:
        write_random_weights("CLIP-ViT-B/32", Path(folder))
        common = dict(feature_type="CLIP-ViT-B/32", cpu=True, num_workers=2, weights_dir=folder, extract_method="fix_2",
                      on_extraction="save_numpy")
        local = timed_run(LocalPoolExecutor(), {**common, "output_path": f"{folder}/local"}, jobs)
        ray = timed_run(RayExecutor(), {**common, "output_path": f"{folder}/ray", "backend": "ray"}, jobs)
    print(f"{len(jobs)} videos, CLIP-ViT-B/32 fix_2, 2 CPU workers")
    print("| backend | whole run s | first to last result s |\n| --- | ---: | ---: |")
    for name, (whole, steady) in (("local", local), ("ray", ray)):
        print(f"| {name} | {whole:.1f} | {steady:.1f} |")
    print(f"| ray / local | {ray[0] / local[0]:.2f} | {ray[1] / local[1]:.2f} |")


if __name__ == "__main__":
    main()
