"""Are the features of every existing feature type byte-identical before and after a change?

Runs one matrix of command lines (every feature type, crops, views, pooling, float16, presets, a CSV list, frame
folders, flow images) with ``main.py`` in a checkout of ``--before`` (a git worktree) and in this tree, on the same
random weights (written once, by this tree, in the official formats), and compares every output file byte for
byte (manifests apart: they record the code version and the time). A configuration that differs reports its
largest difference.

    python bench/identical.py --before 4f1b02c           # about 20 minutes on 2 CPU cores
    python bench/identical.py --before 4f1b02c --only r21d_views clip_pool
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from extractors.catalog import write_random_weights  # noqa: E402

SAMPLES = [ROOT / "sample" / "v_GGSY1Qvo990.mp4", ROOT / "sample" / "v_ZNVhz7ctTq0.mp4"]
FRAME_WISE = ["--extract_method", "uni_4"]
WINDOWS = ["--extraction_fps", "4"]
# name -> (command-line options, the feature type whose random weights it needs and the options they depend on)
MATRIX: dict[str, list[str]] = {
    "clip": ["--feature_type", "CLIP-ViT-B/32", *FRAME_WISE],
    "clip_pool_l2_fp16": ["--feature_type", "CLIP-ViT-B/32", *FRAME_WISE, "--pool", "mean", "--l2_normalize",
                          "--dtype", "float16"],
    "clip_preset": ["--preset", "clip_vit_b32_1fps"],
    "open_clip": ["--feature_type", "open_clip", "--model_name", "ViT-B-32", "--pretrained", "laion2b_s34b_b79k",
                  *FRAME_WISE],
    "resnet18": ["--feature_type", "resnet18", *FRAME_WISE],
    "resnet18_crops_views": ["--feature_type", "resnet18", "--views", "3", "--crops", "3"],
    "resnet152_preset": ["--preset", "howto100m_2d"],
    "timm": ["--feature_type", "timm", "--model_name", "vit_small_patch14_dinov2.lvd142m",
             "--image_feature", "cls_patch_mean", *FRAME_WISE],
    "raft": ["--feature_type", "raft", "--raft_model", "small", "--extraction_fps", "2", "--side_size", "128"],
    "raft_images": ["--feature_type", "raft", "--raft_model", "small", "--extraction_fps", "2", "--side_size", "128",
                    "--on_extraction", "save_flow_images"],
    "pwc": ["--feature_type", "pwc", "--extraction_fps", "2", "--side_size", "128"],
    "i3d_pwc": ["--feature_type", "i3d", "--flow_type", "pwc", *WINDOWS, "--stack_size", "16"],
    "i3d_rgb_crops": ["--feature_type", "i3d", "--streams", "rgb", *WINDOWS, "--stack_size", "16", "--crops", "3"],
    "r21d": ["--feature_type", "r21d", *WINDOWS],
    "r21d_views_pool": ["--feature_type", "r21d", "--views", "2", "--pool", "mean"],
    "s3d": ["--feature_type", "s3d", "--views", "2"],
    "resnext101_3d": ["--feature_type", "resnext101_3d", *WINDOWS],
    "tsn": ["--feature_type", "tsn", "--views", "3"],
    "slowonly": ["--feature_type", "slowonly", "--views", "2"],
    "slowfast": ["--feature_type", "slowfast", "--views", "2"],
    "videomae": ["--feature_type", "videomae", "--views", "2"],
    "vjepa2": ["--feature_type", "vjepa2", "--views", "1"],
    "vggish": ["--feature_type", "vggish"],
    "vggish_fix_1": ["--feature_type", "vggish", "--extract_method", "fix_1"],
    "clap": ["--feature_type", "clap"],
    "csv_list": ["--feature_type", "resnet18", *FRAME_WISE, "--file_with_video_paths", "{csv}"],
    "frame_folders": ["--feature_type", "resnet18", "--extract_method", "fix_2", "--frames_dir", "{frames}",
                      "--frames_fps", "10"],
}
NEEDS_INPUTS = ("--file_with_video_paths", "--frames_dir", "--video_paths")


def write_weights(folder: Path, names: list[str]) -> None:
    """Random weights for the configurations ``names``, by this tree's writers (the formats are the publishers')."""
    written = set()
    for options in (MATRIX[name] for name in names):
        if "--preset" in options:
            continue
        pairs = dict(zip(options[::2], options[1::2]))
        kind = pairs["--feature_type"]
        extra = {name: pairs[f"--{name}"] for name in ("model_name", "pretrained", "raft_model", "flow_type")
                 if f"--{name}" in pairs}
        key = (kind, tuple(sorted(extra.items())))
        if key not in written:
            write_random_weights(kind, folder, **extra)
            written.add(key)
    presets = {"clip_preset": "CLIP-ViT-B/32", "resnet152_preset": "resnet152"}
    for kind in {presets[name] for name in names if name in presets}:
        write_random_weights(kind, folder)


def inputs(folder: Path) -> dict[str, str]:
    """A CSV list of the samples and a folder of frame folders (every 3rd frame of the first sample, as JPEG)."""
    import av
    from PIL import Image

    csv = folder / "list.csv"
    csv.write_text("video_path,feature_path\n" + "".join(f"{path},{path.stem}_csv\n" for path in SAMPLES))
    frames = folder / "frames" / "clip_a"
    frames.mkdir(parents=True, exist_ok=True)
    with av.open(str(SAMPLES[0])) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index % 3 == 0 and index < 150:
                Image.fromarray(frame.to_ndarray(format="rgb24")).save(frames / f"{index:05d}.jpg", quality=95)
    return {"csv": str(csv), "frames": str(folder / "frames")}


def run(tree: Path, options: list[str], weights: Path, out: Path) -> float:
    command = [sys.executable, "main.py", *options, "--cpu", "--weights_dir", str(weights), "--output_path", str(out)]
    if not any(option in options for option in NEEDS_INPUTS):
        command += ["--video_paths", *map(str, SAMPLES)]
    if "--on_extraction" not in options:
        command += ["--on_extraction", "save_numpy"]
    started = time.perf_counter()
    result = subprocess.run(command, cwd=tree, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{tree}: {' '.join(options)} failed:\n{result.stderr[-2000:]}")
    return time.perf_counter() - started


def compared(before: Path, after: Path) -> str:
    """'identical (N files)', or what differs."""
    files = lambda root: sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file() and p.name != "manifest.json")
    names_before, names_after = files(before), files(after)
    if names_before != names_after:
        return f"different files: {sorted(set(map(str, names_before)) ^ set(map(str, names_after)))[:6]}"
    differing = [name for name in names_after if (before / name).read_bytes() != (after / name).read_bytes()]
    if not differing:
        return f"identical ({len(names_after)} files)"
    largest = 0.0
    for name in differing:
        if name.suffix == ".npy":
            largest = max(largest, float(np.abs(np.load(before / name).astype(np.float64)
                                                - np.load(after / name).astype(np.float64)).max()))
    return f"{len(differing)} of {len(names_after)} files differ (npy: max abs {largest:.3g})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="the revision to compare with (a commit, a tag)")
    parser.add_argument("--only", nargs="+", choices=sorted(MATRIX), help="these configurations only")
    args = parser.parse_args()
    names = args.only or list(MATRIX)
    with tempfile.TemporaryDirectory(prefix="identical_") as scratch:
        scratch = Path(scratch)
        before = scratch / "before"
        subprocess.run(["git", "worktree", "add", "--detach", str(before), args.before], cwd=ROOT, check=True,
                       capture_output=True)
        try:
            weights = scratch / "weights"
            write_weights(weights, names)
            values = inputs(scratch)
            print("| configuration | before s | after s | outputs |\n| --- | --- | --- | --- |")
            for name in names:
                options = [option.format(**values) for option in MATRIX[name]]
                outputs = {tag: scratch / "outputs" / tag / name for tag in ("before", "after")}
                seconds = [run(tree, options, weights, outputs[tag]) for tree, tag in ((before, "before"), (ROOT, "after"))]
                print(f"| {name} | {seconds[0]:.1f} | {seconds[1]:.1f} | {compared(*outputs.values())} |", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(before)], cwd=ROOT, capture_output=True)
            shutil.rmtree(before, ignore_errors=True)


if __name__ == "__main__":
    main()
