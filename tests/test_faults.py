"""Faults of the machine rather than of a video: an output folder that fills up; and inputs whose headers declare
absurd sizes (bounded before anything is decoded)."""
from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

import main
from io_utils.audio import AudioReader
from io_utils.claims import outputs_complete
from io_utils.errors import VideoError
from io_utils.limits import InputLimits
from io_utils.video import VideoReader
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


def write_wav_header(path: Path, sample_rate: int, channels: int, seconds: float = 0.01) -> Path:
    """A 16-bit PCM WAV file whose header declares ``sample_rate`` and ``channels`` (any numbers: it is hand-made)."""
    block = channels * 2
    data = bytes(int(sample_rate * seconds) * block)
    fmt = struct.pack("<HHIIHH", 1, channels, sample_rate, sample_rate * block, block, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def write_huge_frame(path: Path, width: int = 16000, height: int = 12000) -> Path:
    """One black PNG frame of ``width`` x ``height`` in a MOV file: 0.6 MB that decodes to 576 MB of RGB."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("png", rate=1)
        stream.width, stream.height, stream.pix_fmt = width, height, "rgb24"
        frame = av.VideoFrame.from_ndarray(np.zeros((height, width, 3), np.uint8), format="rgb24")
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return path


# Run by a fresh interpreter: a child's peak memory counts its parent's at the fork, so the test process (GBs
# after other tests) must not be that parent.
_MEASURED_RUN = """
import os, subprocess, sys
process = subprocess.Popen([sys.executable, "main.py", *sys.argv[1:]], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(process.pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss // 1024)
"""


def peak_rss_mib(argv: list[str]) -> tuple[int, int, str]:
    """Run main.py with ``argv``; its exit status, the peak resident memory of its largest process (MiB: the main
    process or a worker) and its standard error."""
    result = subprocess.run([sys.executable, "-c", _MEASURED_RUN, *argv], cwd=REPO, capture_output=True, text=True)
    code, peak_mib = map(int, result.stdout.split())
    return code, peak_mib, result.stderr


def test_a_header_declaring_huge_frames_fails_before_they_are_decoded(tmp_path):
    """16000x12000 frames (192 million pixels) are beyond the default bound of 8192x8192: the video fails with the
    numbers, and the run's peak memory is hundreds of MB below that of a run allowed to decode the frame."""
    huge = write_huge_frame(tmp_path / "huge.mov")
    checkpoint = write_tiny_clip(tmp_path / "tiny.pt")
    argv = ["--feature_type", "CLIP-ViT-B/32", "--cpu", "--checkpoint", str(checkpoint), "--extract_method", "uni_1",
            "--on_extraction", "save_numpy", "--output_path", str(tmp_path / "out"), "--video_paths", str(huge)]
    code, limited_mib, stderr = peak_rss_mib(argv)
    assert code == 1 and stderr.strip() == (
        f"FAILED {huge}: 192,000,000 pixels in frames of 16000x12000, beyond the limit of 67,108,864 (a damaged or "
        "hostile header; if it is real, raise it with --input_limits frame_pixels=...)")
    code, allowed_mib, stderr = peak_rss_mib([*argv, "--input_limits", "frame_pixels=200000000"])
    assert code == 0, stderr
    assert allowed_mib - limited_mib > 500, (limited_mib, allowed_mib)


def test_audio_declared_beyond_the_bounds_fails_before_decoding(tmp_path):
    fast = write_wav_header(tmp_path / "fast.wav", 1_000_000, 2)
    with pytest.raises(VideoError, match="^1,000,000 Hz audio, beyond the limit of 768,000 "):
        AudioReader(fast)
    with AudioReader(fast, limits=InputLimits(sample_rate=2_000_000)) as reader:  # a real rate, once allowed
        assert sum(len(chunk) for chunk in reader.chunks()) == 160  # 10 ms at the 16 kHz it is read at
    wide = write_wav_header(tmp_path / "wide.wav", 16000, 255)
    with pytest.raises(VideoError, match="^255 audio channels, beyond the limit of 64 "):
        AudioReader(wide)
    with AudioReader(wide, limits=InputLimits(channels=255)) as reader:  # past what libswresample takes
        with pytest.raises(VideoError, match=r"^the audio cannot be converted to 16000 Hz \(Invalid argument\)"):
            list(reader.chunks())


def test_a_stream_whose_timestamps_span_days_fails_before_sampling(tmp_path):
    """Two frames 800,000 s apart (a damaged time base): fix_1 would ask for 800,000 inputs."""
    path = write_clip(tmp_path / "days.mkv", num_frames=2, times_ms=[0, 800_000_000])
    with pytest.raises(VideoError, match=r"^800,000 seconds long, beyond the limit of 604,800 "):
        VideoReader(path)
    assert VideoReader(path, limits=InputLimits(duration_s=10**6)).num_frames == 2


@pytest.mark.parametrize("container", ["mp4", "mkv"])  # frames counted from the index, and by demuxing
def test_a_stream_with_more_frames_than_the_bound_fails(tmp_path, container):
    path = write_clip(tmp_path / f"thirty.{container}", num_frames=30)
    with pytest.raises(VideoError, match="beyond the limit"):
        VideoReader(path, limits=InputLimits(frames=29))
    assert VideoReader(path, limits=InputLimits(frames=30)).num_frames == 30


def test_limits_are_set_on_the_command_line(tmp_path, capsys):
    clip = write_clip(tmp_path / "two_seconds.mp4", num_frames=50)
    checkpoint = write_tiny_clip(tmp_path / "tiny.pt")
    argv = ["--feature_type", "CLIP-ViT-B/32", "--cpu", "--checkpoint", str(checkpoint), "--video_paths", str(clip)]
    assert main.main([*argv, "--input_limits", "duration_s=1.5"]) == 1
    assert "2 seconds long, beyond the limit of 1.50" in capsys.readouterr().err
    assert main.main([*argv, "--input_limits", "duration_s=2.5"]) == 0


SPOOL_INTO_A_FULL_FOLDER = """
import os, sys, threading
from pathlib import Path
from io_utils.errors import VideoError
from io_utils.sources import Spooled

pipe = Path(sys.argv[1])
os.mkfifo(pipe)

def write():
    try:
        with open(pipe, "wb") as handle:
            handle.write(bytes(1 << 20))
    except BrokenPipeError:
        pass

threading.Thread(target=write, daemon=True).start()
try:
    print(Spooled(pipe).size())
except VideoError as error:
    print(error)
"""


@needs_mounts
def test_a_pipe_larger_than_the_temporary_folder_fails_alone(tmp_path):
    """A pipe is copied to the temporary folder to be read; when that folder fills up, the input fails with the
    reason (it is not the output folder: the run must not stop as if it were)."""
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    command = (f'mount -t tmpfs -o size=100k tmpfs "{temporary}" && TMPDIR="{temporary}" '
               f'"{sys.executable}" -c "$0" "{tmp_path / "pipe.mp4"}"')
    result = subprocess.run(["unshare", "-m", "sh", "-c", command, SPOOL_INTO_A_FULL_FOLDER], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == (f"a pipe is copied to {temporary} to be read, and that failed (No space left "
                                     "on device)"), result.stderr
