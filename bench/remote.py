"""Reading videos from object storage and URLs: bytes fetched against the object's size, and time against the same
file on disk.

The large object is the 3-minute typical 720p clip (``bench/inputs.py``) repeated, by stream copy, until it passes
1 GiB (so its keyframe intervals are those of real footage). It is served by an HTTP server with ranged GETs that
counts the body bytes it sends (``tests/storage.py``), and by a SeaweedFS S3 gateway on loopback. Each row reads
the frames a sampling method takes, through the reader alone (demuxing, decoding, RGB conversion). ``fix_1`` and
``all`` run on the 3-minute clip itself: with keyframes 8 s apart both decode nearly every frame, which on the
4.6-hour object would take hours here. The clip is read twice: "whole" as the tool reads an object of its size
(fetched in one request, ``WHOLE_OBJECT_BYTES``), "ranged" as it reads a larger one (ranged requests in place).

    python bench/remote.py
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import av

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.inputs import DATA, make_typical_clip  # noqa: E402
from io_utils.sampling import parse_extract_method  # noqa: E402
from io_utils import sources  # noqa: E402
from io_utils.sources import RemoteFile  # noqa: E402
from io_utils.video import VideoReader  # noqa: E402
from tests.storage import http_server, s3_environment, seaweedfs  # noqa: E402

LARGE_OBJECT = DATA / "typical_720p_1gib.mp4"
DEFAULT_WHOLE_OBJECT_BYTES = sources.WHOLE_OBJECT_BYTES


def make_large_object(target_bytes: int = 1 << 30, path: Path = LARGE_OBJECT) -> Path:
    """The typical clip repeated by stream copy (timestamps shifted) until the file passes ``target_bytes``."""
    if path.exists():
        return path
    segment = make_typical_clip()
    repeats = -(-target_bytes // segment.stat().st_size)
    partial = path.with_suffix(".part.mp4")
    with av.open(str(segment)) as source, av.open(str(partial), "w") as output:
        stream_in = source.streams.video[0]
        stream_out = output.add_stream_from_template(stream_in)
        packets = [packet for packet in source.demux(stream_in) if packet.size]
        span = max(p.pts + p.duration for p in packets) - min(p.pts for p in packets)
        for repeat in range(repeats):
            for packet in packets:
                copy = av.Packet(bytes(packet))
                copy.pts, copy.dts = packet.pts + repeat * span, packet.dts + repeat * span
                copy.duration, copy.is_keyframe, copy.time_base = packet.duration, packet.is_keyframe, packet.time_base
                copy.stream = stream_out
                output.mux(copy)
    partial.rename(path)
    return path


def read_frames(source, method: str) -> tuple[int, float]:
    start = time.perf_counter()
    with VideoReader(source) as reader:
        targets = parse_extract_method(method).target_pts(reader.start_pts, reader.end_pts, reader.time_base) \
            if method != "all" else None
        frames = sum(1 for _ in (reader.read_all() if targets is None else reader.read_at(targets)))
    return frames, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--large", nargs="+", default=["uni_12"], help="methods run on the 1 GiB object")
    parser.add_argument("--small", nargs="+", default=["uni_12", "fix_1", "all"], help="methods run on the clip")
    args = parser.parse_args()
    large, small = make_large_object(), make_typical_clip()
    print(f"large object: {large.stat().st_size / 2**30:.2f} GiB; clip: {small.name} "
          f"({small.stat().st_size / 2**20:.1f} MiB)")
    print("| method | object, read | frames | disk s | HTTP s | HTTP bytes fetched | fetched / size | S3 s |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    with http_server(DATA) as http, tempfile.TemporaryDirectory() as folder, seaweedfs(Path(folder)) as endpoint:
        import os

        import fsspec

        os.environ.update(s3_environment(endpoint))
        store = fsspec.filesystem("s3")
        store.mkdir("bench")
        for path in (large, small):
            store.put(str(path), f"bench/{path.name}")
        runs = [*((method, large, "ranged") for method in args.large),
                *((method, small, how) for how in ("whole", "ranged") for method in args.small)]
        for method, path, how in runs:
            sources.WHOLE_OBJECT_BYTES = DEFAULT_WHOLE_OBJECT_BYTES if how == "whole" else 0
            frames, disk_s = read_frames(path, method)
            http.sent_bytes = 0
            _, http_s = read_frames(RemoteFile(f"{http.url}/{path.name}"), method)
            fetched = http.sent_bytes
            _, s3_s = read_frames(RemoteFile(f"s3://bench/{path.name}"), method)
            size = path.stat().st_size
            print(f"| {method} | {size / 2**20:.1f} MiB, {how} | {frames} | {disk_s:.2f} | {http_s:.2f} | "
                  f"{fetched / 2**20:.1f} MiB | {fetched / size:.2%} | {s3_s:.2f} |", flush=True)


if __name__ == "__main__":
    main()
