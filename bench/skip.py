"""Decode-only time of dense-but-subsampled reads: as the reader was before issue 14 (every frame it passes
decoded, one decoder), with the non-reference frames between the frames taken skipped (one decoder), and as it
is (skipping, and keyframe intervals decoded at once), with how many frames the decoder produced for how many taken.

Rows: ``uni_12`` (sparse: seeks), ``fix_1`` and ``fix_4`` (the reader alone: seeking, decoding, RGB conversion),
and an R(2+1)D at ``--extraction_fps 4`` (its windows' frames, decoded and preprocessed), on the 10-minute 720p
clip (16 Mb/s, noisy) and on a 3-minute 720p clip of typical bitrate. Each figure is the best of ``--repeats``
runs.

    python bench/skip.py                                   # every row
    python bench/skip.py --clips long --reads fix_1        # one
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.inputs import make_long_clip, make_typical_clip  # noqa: E402
from extractors.catalog import write_random_weights  # noqa: E402
from extractors.models.r21d import ExtractR21D  # noqa: E402
from io_utils import forward_decoder  # noqa: E402
from io_utils.sampling import parse_extract_method  # noqa: E402
from io_utils.video import VideoReader  # noqa: E402


class DecodedFrames:
    """Counts the frames that come out of the decoder while it is in use."""

    def __enter__(self) -> DecodedFrames:
        self.count, original, lock = 0, forward_decoder.ForwardDecoder.next_frame, threading.Lock()

        def counting(decoder):
            frame = original(decoder)
            with lock:  # intervals decoded at once count on several threads
                self.count += frame is not None
            return frame

        self._original, forward_decoder.ForwardDecoder.next_frame = original, counting
        return self

    def __exit__(self, *exc_info) -> None:
        forward_decoder.ForwardDecoder.next_frame = self._original


# (skip_unshown, decoders): before issue 14; skipping on one decoder; as the reader is (skipping, intervals at once)
READERS = {"before": (False, 1), "skipping": (True, 1), "now": (True, None)}


def read(path: Path, method: str, reader: str) -> int:
    skip, decoders = READERS[reader]
    with VideoReader(path, skip_unshown=skip, decoders=decoders) as video:
        targets = parse_extract_method(method).target_pts(video.start_pts, video.end_pts, video.time_base)
        return sum(1 for _ in video.read_at(targets))


def windows(extractor: ExtractR21D, path: Path, reader: str) -> int:
    skip, decoders = READERS[reader]
    with VideoReader(path, skip_unshown=skip, decoders=decoders) as video:
        return 16 * sum(1 for _ in extractor.model_inputs(video, extractor.video_job(path)))


def best_of(repeats: int, function, *args) -> tuple[float, int, int]:
    """Seconds (the best run), frames taken, frames decoded."""
    runs = []
    for _ in range(repeats):
        with DecodedFrames() as decoded:
            start = time.perf_counter()
            taken = function(*args)
            runs.append((time.perf_counter() - start, taken, decoded.count))
    return min(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--clips", nargs="+", choices=("typical", "long"), default=["typical", "long"])
    parser.add_argument("--reads", nargs="+", choices=("uni_12", "fix_1", "fix_4", "r21d"),
                        default=["uni_12", "fix_1", "fix_4", "r21d"], help="rows to run (r21d: its windows)")
    args = parser.parse_args()
    folder = ROOT / "bench" / "data" / "weights"
    write_random_weights("r21d", folder)
    r21d = ExtractR21D(dict(feature_type="r21d", cpu=True, weights_dir=str(folder), extraction_fps=4))
    print("| clip | read | frames taken | decoded before | s before | decoded skipping | s skipping, one decoder "
          "| s now (intervals at once) | speed-up now / before |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    makers = {"typical": make_typical_clip, "long": make_long_clip}
    for clip in (makers[name]() for name in args.clips):
        cases = {"uni_12": ("uni_12", read, (clip, "uni_12")), "fix_1": ("fix_1", read, (clip, "fix_1")),
                 "fix_4": ("fix_4", read, (clip, "fix_4")), "r21d": ("r21d --extraction_fps 4", windows, (r21d, clip))}
        for name, function, case in (cases[read_name] for read_name in args.reads):
            before, skipping, now = (best_of(args.repeats, function, *case, reader) for reader in READERS)
            print(f"| {clip.name} | {name} | {now[1]} | {before[2]} | {before[0]:.1f} | {skipping[2]} | {skipping[0]:.1f} "
                  f"| {now[0]:.1f} | {before[0] / now[0]:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
