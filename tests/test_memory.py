"""Memory is bounded by one batch, whatever the video length: measured as the peak RSS of a fresh process."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import av
import numpy as np

from extractors.models.optical_flow import RAFT_WEIGHTS

ROOT = Path(__file__).resolve().parents[1]
# Measured on the 2-core CI machine: 3636 and 4034 MiB in two runs at --flow_batch_size 1. Nearly all of
# it is RAFT itself: the correlation of one 720p pair is a 14400 x 14400 float32 volume (830 MB, built with
# a scaled copy, then pooled into a pyramid); raft_small alone, in a fresh process, peaks at 2.4 GB on its
# first pair and 3.5-3.6 GB from its second (the allocator keeps freed blocks). The whole video's flow held in
# memory would add 7.4 MB per 720p pair; that it is not is checked at scale by the .npy sink test below.
RAFT_720P_RSS_BOUND_MB = 5000


_PRINT_PEAK = """
import resource
print("{label}", max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)))
"""


def peak_rss_mb(code: str, setup: str = "") -> tuple[float, float]:
    """Run ``setup`` then ``code`` in a fresh interpreter: the peak RSS (MiB) of it and every process it
    started, after ``setup`` and at the end."""
    probe = "\n".join([textwrap.dedent(setup), _PRINT_PEAK.format(label="BASE"), textwrap.dedent(code),
                        _PRINT_PEAK.format(label="PEAK")])
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    base, peak = (int(result.stdout.split(label)[-1].split()[0]) / 1024 for label in ("BASE", "PEAK"))
    return base, peak


def write_two_minute_720p_clip(path: Path, rate: int = 24) -> Path:
    """2 minutes of a moving gradient at 1280x720 (about 16 s to encode: 48 distinct frames, repeated)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = 1280, 720, "yuv420p"
        stream.codec_context.gop_size = 2 * rate
        frames = []
        for index in range(2 * rate):
            image = np.zeros((720, 1280, 3), np.uint8)
            image[..., 0] = ((np.arange(1280) * 2 + index * 3) % 256)[None]
            image[..., 1] = ((np.arange(720) + index) % 256)[:, None]
            frames.append(av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p"))
        for index in range(120 * rate):
            frame = frames[index % len(frames)]
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def test_two_minute_720p_clip_through_raft_stays_under_a_fixed_rss(tmp_path):
    clip = write_two_minute_720p_clip(tmp_path / "long_720p.mp4")
    RAFT_WEIGHTS["small"]["C_T_V2"].write_random(tmp_path)
    _, peak = peak_rss_mb(f"""
        import subprocess, sys
        command = [sys.executable, "main.py", "--feature_type", "raft", "--cpu", "--raft_model", "small",
                   "--raft_iters", "1", "--flow_batch_size", "1", "--extraction_fps", "0.1",
                   "--weights_dir", {str(tmp_path)!r}, "--video_paths", {str(clip)!r},
                   "--on_extraction", "save_numpy", "--output_path", {str(tmp_path / "out")!r}]
        assert subprocess.run(command).returncode == 0
    """)
    flow = np.load(tmp_path / "out" / "raft" / "long_720p_flow.npy", mmap_mode="r")
    assert flow.shape == (11, 2, 720, 1280)  # 12 frames over 2 minutes at 0.1 fps
    print(f"peak RSS {peak:.0f} MiB")
    assert peak < RAFT_720P_RSS_BOUND_MB, peak


def test_streamed_npy_output_does_not_grow_with_its_size(tmp_path):
    """2 GiB of flow-sized batches through the .npy sink: the process stays near its start-up size."""
    base, peak = peak_rss_mb(setup="""
        from pathlib import Path
        import numpy as np
        from io_utils.outputs import NpyStreamSink
    """, code=f"""
        paths = {{"flow": Path({str(tmp_path / "v_flow.npy")!r}), "fps": Path({str(tmp_path / "v_fps.npy")!r}),
                 "timestamps_ms": Path({str(tmp_path / "v_timestamps_ms.npy")!r})}}
        sink = NpyStreamSink(paths)
        batch = np.ones((8, 2, 720, 1280), np.float32)  # 59 MB
        for index in range(36):
            sink.add({{"flow": batch * index}}, [float(index)] * 8)
        sink.close(24.0)
    """)
    flow = np.load(tmp_path / "v_flow.npy", mmap_mode="r")
    assert flow.shape == (288, 2, 720, 1280) and flow[-1, 1, 719, 1279] == 35 and flow[8, 0, 0, 0] == 1
    assert np.load(tmp_path / "v_timestamps_ms.npy").shape == (288,)
    assert peak - base < 300, (base, peak)  # two 59 MB batches at most; the whole array would be 2 GiB
