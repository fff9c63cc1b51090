"""Faults of the machine rather than of a video: an output folder that fills up."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from io_utils.claims import outputs_complete
from tests.checkpoints import write_tiny_clip
from tests.clips import write_clip
from tests.conftest import REPO

needs_mounts = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("mount"),
                                  reason="the small disk is a tmpfs mounted in a mount namespace (root, unshare)")

FULL_DISK_RUNS = """
set -u
mount -t tmpfs -o size=100k tmpfs "$OUT"
"$PYTHON" main.py "$@" > "$LOGS/first.out" 2> "$LOGS/first.err"; echo $? > "$LOGS/first.rc"
cp -a "$OUT" "$LOGS/first"
mount -o remount,size=20m "$OUT"
"$PYTHON" main.py "$@" > "$LOGS/second.out" 2> "$LOGS/second.err"; echo $? > "$LOGS/second.rc"
cp -a "$OUT" "$LOGS/second"
"""


@needs_mounts
def test_a_full_disk_stops_the_run_once_and_a_rerun_after_freeing_space_completes(tmp_path):
    videos = [write_clip(tmp_path / "videos" / f"clip{i}.mp4", num_frames=150, size=(160, 120), gop=25, noise=False)
              for i in range(8)]
    checkpoint = write_tiny_clip(tmp_path / "tiny.pt")
    out, logs = tmp_path / "out", tmp_path / "logs"
    out.mkdir()
    logs.mkdir()
    argv = ["--feature_type", "CLIP-ViT-B/32", "--cpu", "--num_workers", "2", "--clip_checkpoint", str(checkpoint),
            "--extract_method", "fix_25", "--on_extraction", "save_numpy", "--output_path", str(out), "--video_dir",
            str(videos[0].parent)]
    environment = {**os.environ, "OUT": str(out), "LOGS": str(logs), "PYTHON": sys.executable}
    result = subprocess.run(["unshare", "-m", "sh", "-c", FULL_DISK_RUNS, "runs", *argv], cwd=REPO, env=environment,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr

    first_error = (logs / "first.err").read_text()
    assert (logs / "first.rc").read_text().strip() == "1"
    lines = [line for line in first_error.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {out / 'CLIP-ViT-B_32'}: No space left on device ("), \
        first_error
    assert " free); the run stops here" in lines[0]
    assert (logs / "first.out").read_text() == ""  # no summary: no video is called done or skipped
    folder = logs / "first" / "CLIP-ViT-B_32"
    left = [path.name for path in folder.rglob("*")]
    assert not any(name.endswith((".tmp", ".lock")) for name in left), left  # (a journal would be folded in later)
    done_first = sorted(path.name[: -len("_clip.npy")] for path in folder.glob("*_clip.npy"))
    assert 0 < len(done_first) < 8 and outputs_complete(folder.glob("*.npy"))

    assert (logs / "second.rc").read_text().strip() == "0", (logs / "second.err").read_text()
    summary = (logs / "second.out").read_text().strip().splitlines()[-1]
    assert summary == f"done: {8 - len(done_first)}, skipped: {len(done_first)}, failed: 0"
    folder = logs / "second" / "CLIP-ViT-B_32"
    assert len(list(folder.glob("*_clip.npy"))) == 8 and outputs_complete(folder.glob("*.npy"))
    assert "Traceback" not in first_error + (logs / "second.err").read_text()
