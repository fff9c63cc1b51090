"""Inputs from object storage, URLs and WebDataset shards, against real servers on loopback: SeaweedFS's S3 gateway
and an HTTP server with ranged GETs (tests/storage.py). The reference for every feature is the same file read from
the local disk."""
from __future__ import annotations

import csv
import io
import os
import importlib.util
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import fsspec
import numpy as np
import pytest
import webdataset

from extractors.config import resolve_config
from io_utils.errors import UsageError, VideoError
from io_utils.sources import RemoteFile, list_shard
from io_utils.video import VideoReader
from tests.checkpoints import write_tiny_clip
from tests.clips import write_clip
from tests.conftest import REPO, SAMPLE_19FPS, SAMPLE_30FPS
from tests.storage import free_ports, http_server, s3_environment, seaweedfs

FEATURES = "CLIP-ViT-B_32"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """A SeaweedFS S3 endpoint, in the environment as a user would set it (workers inherit it)."""
    with seaweedfs(tmp_path_factory.mktemp("weed")) as endpoint, pytest.MonkeyPatch.context() as patch:
        for name, value in s3_environment(endpoint).items():
            patch.setenv(name, value)
        fsspec.filesystem("s3").clear_instance_cache()
        yield endpoint
        fsspec.filesystem("s3").clear_instance_cache()


@pytest.fixture(scope="module")
def s3(store):
    """The store, with one bucket for every test (a bucket is a SeaweedFS collection, with volumes of its own)."""
    store = fsspec.filesystem("s3", skip_instance_cache=True)
    store.mkdir("videos")
    return store


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    return write_tiny_clip(tmp_path_factory.mktemp("tiny") / "tiny.pt")


def write_shard(path: Path, samples: dict[str, bytes], metadata: bool = True) -> Path:
    """A shard as video2dataset writes it: ``key.mp4``, ``key.json``, ``key.txt`` per sample (webdataset's
    TarWriter)."""
    with webdataset.TarWriter(str(path)) as writer:
        for key, video in samples.items():
            sample = {"__key__": key, "mp4": video, "txt": f"caption of {key}"}
            if metadata:
                sample["json"] = {"key": key, "url": f"https://example.com/{key}"}
            writer.write(sample)
    return path


def extract(checkpoint: Path, out: Path | str, *inputs: str, method: str = "uni_4") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "main.py", "--feature_type", "CLIP-ViT-B/32", "--cpu", "--clip_checkpoint",
                           str(checkpoint), "--extract_method", method, "--on_extraction", "save_numpy",
                           "--output_path", str(out), *inputs], cwd=REPO, capture_output=True, text=True, timeout=300)


def saved(folder: Path, stem: str) -> dict[str, bytes]:
    return {key: (folder / FEATURES / f"{stem}_{key}.npy").read_bytes() for key in ("clip", "fps", "timestamps_ms")}


def failures(out: Path) -> dict[str, str]:
    with (out / FEATURES / "failures.tsv").open() as handle:
        return {row["path"]: row["reason"] for row in csv.DictReader(handle, delimiter="\t")}


def test_s3_http_and_shard_inputs_give_the_features_of_the_files_on_disk_bit_for_bit(store, s3, tiny_checkpoint,
                                                                                        tmp_path):
    s3.put(str(SAMPLE_19FPS), "videos/in/a.mp4")
    s3.put(str(SAMPLE_30FPS), "videos/in/b.mp4")
    samples = {"000000000": SAMPLE_19FPS.read_bytes(), "000000001": SAMPLE_30FPS.read_bytes()}
    s3.put(str(write_shard(tmp_path / "00000.tar", samples)), "videos/shards/00000.tar")
    write_shard(tmp_path / "00001.tar", {"000010000": SAMPLE_30FPS.read_bytes()})
    s3.put(str(tmp_path / "00001.tar"), "videos/shards/00001.tar")

    local = extract(tiny_checkpoint, tmp_path / "local", "--video_paths", str(SAMPLE_19FPS), str(SAMPLE_30FPS))
    with http_server(REPO / "sample") as http:
        remote = extract(tiny_checkpoint, tmp_path / "remote", "--video_paths", "s3://videos/in/a.mp4",
                         f"{http.url}/{SAMPLE_30FPS.name}")
    shards = extract(tiny_checkpoint, tmp_path / "shards", "--shards", "s3://videos/shards/{00000..00001}.tar")
    for run in (local, remote, shards):
        assert run.returncode == 0, run.stderr
    assert saved(tmp_path / "remote", "a") == saved(tmp_path / "local", SAMPLE_19FPS.stem)
    assert saved(tmp_path / "remote", SAMPLE_30FPS.stem) == saved(tmp_path / "local", SAMPLE_30FPS.stem)
    assert saved(tmp_path / "shards", "000000000") == saved(tmp_path / "local", SAMPLE_19FPS.stem)
    for key in ("000000001", "000010000"):
        assert saved(tmp_path / "shards", key) == saved(tmp_path / "local", SAMPLE_30FPS.stem)

    record = json.loads((tmp_path / "shards" / FEATURES / "manifest.json").read_text())["videos"]["000010000"]
    assert record["source"] == "s3://videos/shards/00001.tar" and record["member"] == "000010000.mp4"
    assert record["metadata"] == {"key": "000010000", "url": "https://example.com/000010000"}
    assert record["member_size"] == SAMPLE_30FPS.stat().st_size
    remote_record = json.loads((tmp_path / "remote" / FEATURES / "manifest.json").read_text())["videos"]["a"]
    assert remote_record["source"] == "s3://videos/in/a.mp4" and remote_record["size"] == SAMPLE_19FPS.stat().st_size


def test_the_python_api_reads_urls_and_a_prefix_is_listed_with_its_sub_prefixes(s3, clip_extractor):
    s3.put(str(SAMPLE_19FPS), "videos/data/x/clip.mp4")
    s3.put(str(SAMPLE_30FPS), "videos/data/y/clip.mp4")
    s3.pipe("videos/data/notes.txt", b"not a video")
    on_disk = clip_extractor.extract(SAMPLE_19FPS)
    from_store = clip_extractor.extract("s3://videos/data/x/clip.mp4")
    assert all(np.array_equal(on_disk[key], from_store[key]) for key in on_disk)

    from io_utils.video_list import list_jobs

    flat = list_jobs(video_dir="s3://videos/data/x/")
    deep = list_jobs(video_dir="s3://videos/data", recursive=True)
    assert [(str(job.path), str(job.output_stem)) for job in flat] == [("s3://videos/data/x/clip.mp4", "clip")]
    assert [str(job.output_stem) for job in deep] == ["x/clip", "y/clip"]
    with pytest.raises(UsageError, match="no video objects"):
        list_jobs(video_dir="s3://videos/data")  # not recursive: the prefix itself holds only notes.txt


def test_bad_remote_inputs_fail_alone_each_with_its_reason(store, s3, tiny_checkpoint, tmp_path):
    s3.put(str(SAMPLE_19FPS), "videos/bad/good.mp4")
    s3.pipe("videos/bad/empty.mp4", b"")
    s3.pipe("videos/bad/junk.mp4", b"\x00junk" * 1000)
    (tmp_path / "served").mkdir()
    (tmp_path / "served" / "denied").mkdir()
    (tmp_path / "served" / "denied" / "v.mp4").write_bytes(SAMPLE_19FPS.read_bytes())
    closed_port = free_ports(1)[0]
    with http_server(tmp_path / "served") as http:
        http.forbidden = "/denied/"
        run = extract(tiny_checkpoint, tmp_path / "out", "--video_paths", "s3://videos/bad/good.mp4", "s3://videos/bad/missing.mp4",
                      "s3://no-such-bucket/nobucket.mp4", "s3://videos/bad/empty.mp4", "s3://videos/bad/junk.mp4",
                      f"{http.url}/denied/v.mp4", f"{http.url}/gone.mp4", f"http://127.0.0.1:{closed_port}/closed.mp4")
    assert run.returncode == 1, run.stderr
    assert "done: 1, skipped: 0, failed: 7" in run.stdout
    reasons = failures(tmp_path / "out")
    assert reasons["s3://videos/bad/missing.mp4"] == "no such object"
    assert reasons["s3://no-such-bucket/nobucket.mp4"] == "no such object"
    assert reasons["s3://videos/bad/empty.mp4"] == "empty file (0 bytes)"
    assert reasons["s3://videos/bad/junk.mp4"].startswith("not a readable video")
    assert reasons[f"{http.url}/denied/v.mp4"].startswith("access denied")
    assert reasons[f"{http.url}/gone.mp4"] == "no such object"
    assert reasons[f"http://127.0.0.1:{closed_port}/closed.mp4"].startswith("cannot reach")
    assert all("\n" not in reason and "Traceback" not in reason for reason in reasons.values())
    assert "Traceback" not in run.stderr


def test_a_damaged_member_fails_alone_and_a_damaged_shard_keeps_the_members_before_the_damage(tiny_checkpoint,
                                                                                              tmp_path):
    good = SAMPLE_19FPS.read_bytes()
    write_shard(tmp_path / "00000.tar", {"k0": good, "k1": b"\x00not a video" * 100, "k2": good})
    whole = write_shard(tmp_path / "whole.tar", {"k3": good, "k4": good, "k5": good}).read_bytes()
    damaged = bytearray(whole)
    header_of_k4 = whole.index(b"k4.", len(good))
    damaged[header_of_k4 + 148: header_of_k4 + 156] = b"garbage!"  # the header's checksum
    (tmp_path / "00001.tar").write_bytes(bytes(damaged))

    listing = list_shard(tmp_path / "00001.tar", frozenset({".mp4"}))
    assert [member.member for member in listing.members] == ["k3.mp4"]
    assert listing.problem and "damaged shard" in listing.problem

    run = extract(tiny_checkpoint, tmp_path / "out", "--shards", str(tmp_path / "{00000..00002}.tar"))
    assert run.returncode == 1
    assert "done: 3, skipped: 0, failed: 3" in run.stdout, run.stdout + run.stderr
    reasons = failures(tmp_path / "out")
    assert reasons[str(tmp_path / "00002.tar")] == "no such file"  # a shard that is not there is not "damaged"
    assert reasons[f"{tmp_path / '00000.tar'}#k1.mp4"].startswith("not a readable video")
    assert reasons[str(tmp_path / "00001.tar")].startswith("damaged shard, listing stopped after 1 video(s)")
    assert saved(tmp_path / "out", "k0") == saved(tmp_path / "out", "k2") == saved(tmp_path / "out", "k3")


def test_a_sparse_read_fetches_a_fraction_of_the_object_and_a_cut_off_transfer_is_retried(tmp_path, monkeypatch):
    """40 keyframe intervals of 0.27 MB, 4 targets: what is fetched is what is decoded; 100 targets in every
    interval: about each byte once, though 4 decoders read at once (with 64 KiB blocks here,
    so that the 1 MiB blocks of the default do not dominate an 11 MB file; bench/remote.py measures the default on
    a 1 GiB object)."""
    from io_utils import sources

    monkeypatch.setattr(sources, "READ_BLOCK", 64 << 10)
    monkeypatch.setattr(sources, "WHOLE_OBJECT_BYTES", 0)  # read in place, as an object of gigabytes is
    video = write_clip(tmp_path / "long.mp4", num_frames=1000, size=(240, 136), gop=25, noise=True)
    size = video.stat().st_size
    with VideoReader(video) as reader:
        targets = np.linspace(reader.start_pts, reader.end_pts - 1, 4).astype(int).tolist()
        expected = [frame.rgb for frame in reader.read_at(targets)]
    with http_server(tmp_path) as http:
        with VideoReader(RemoteFile(f"{http.url}/long.mp4")) as reader:
            frames = [frame.rgb for frame in reader.read_at(targets)]
        sparse = http.sent_bytes
        http.sent_bytes, http.cut_off = 0, 2
        with VideoReader(RemoteFile(f"{http.url}/long.mp4")) as reader:
            retried = [frame.rgb for frame in reader.read_at(targets)]
        assert http.cut_off == 0  # both cut-off transfers happened
        http.sent_bytes = 0
        with VideoReader(RemoteFile(f"{http.url}/long.mp4")) as reader:
            every = np.linspace(reader.start_pts, reader.end_pts - 1, 100).astype(int).tolist()
            assert len(list(reader.read_at(every))) == 100  # every interval, 4 decoded at once, 4 views
        dense = http.sent_bytes
    assert all(np.array_equal(a, b) for a, b in zip(frames, expected)) and len(frames) == 4
    assert all(np.array_equal(a, b) for a, b in zip(retried, expected))
    assert sparse < 0.25 * size, (sparse, size)
    # The decoders share their blocks: each byte is fetched once, but for the header and index blocks, which each
    # decoder's demuxer reads again after the cache has moved on (2% here).
    assert size <= dense < 1.05 * size, (dense, size)
    print(f"uni_4 on a {size / 1e6:.1f} MB object fetched {sparse / 1e6:.2f} MB ({sparse / size:.0%})")


def test_folders_of_an_earlier_run_and_a_collected_pickle_must_be_local():
    with pytest.raises(UsageError, match="--timestamps_from s3://b/x: must be a local or shared folder"):
        resolve_config(dict(feature_type="vggish", video_paths=["a.mp4"], timestamps_from="s3://b/x"))
    with pytest.raises(UsageError, match="--collect_pickle .* give a local --output_path"):
        resolve_config(dict(feature_type="resnet18", video_paths=["a.mp4"], on_extraction="save_numpy",
                            output_path="s3://bucket/features", collect_pickle="all.pkl"))


def test_a_remote_shard_is_listed_from_its_headers_and_a_member_read_alone(tmp_path):
    big = write_clip(tmp_path / "big.mp4", num_frames=100, size=(320, 240), gop=50, noise=True).read_bytes()
    shard = write_shard(tmp_path / "s.tar", {f"{index:04d}": big for index in range(6)})
    with tarfile.open(shard) as archive:
        offsets = {info.name: info.offset_data for info in archive.getmembers()}
    with http_server(tmp_path) as http:
        listing = list_shard(RemoteFile(f"{http.url}/s.tar"), frozenset({".mp4"}))
        listed_bytes = http.sent_bytes
        with listing.members[3].open() as handle:
            assert handle.read() == big
    assert [member.member for member in listing.members] == [f"{index:04d}.mp4" for index in range(6)]
    assert listing.problem is None
    assert [member.offset for member in listing.members] == [offsets[f"{index:04d}.mp4"] for index in range(6)]
    assert listed_bytes < 0.1 * shard.stat().st_size, (listed_bytes, shard.stat().st_size)


def stored_objects(s3, prefix: str) -> dict[str, bytes]:
    s3.invalidate_cache()  # this instance's listings are stale once a run has written
    return {key[len(prefix) + 1:]: s3.cat_file(key) for key in s3.find(prefix)}


def test_outputs_in_object_storage_equal_a_local_run_and_resume_and_pack_from_there(store, s3, tiny_checkpoint,
                                                                                   tmp_path):
    s3.put(str(SAMPLE_19FPS), "videos/o/a.mp4")
    local = extract(tiny_checkpoint, tmp_path / "local", "--video_paths", str(SAMPLE_19FPS), str(SAMPLE_30FPS))
    inputs = ["--video_paths", "s3://videos/o/a.mp4", str(SAMPLE_30FPS)]
    first = extract(tiny_checkpoint, "s3://videos/features", *inputs, str(tmp_path / "missing.mp4"))
    assert local.returncode == 0 and first.returncode == 1, first.stderr
    prefix = f"videos/features/{FEATURES}"
    objects = stored_objects(s3, prefix)
    assert sorted(objects) == sorted(["failures.tsv", "manifest.json", *(f"{stem}_{key}.npy" for key in
                                      ("clip", "fps", "timestamps_ms") for stem in ("a", SAMPLE_30FPS.stem))])
    assert {f"a_{key}": objects[f"a_{key}.npy"] for key in ("clip", "fps", "timestamps_ms")} == \
        {f"a_{key}": value for key, value in saved(tmp_path / "local", SAMPLE_19FPS.stem).items()}
    assert all(objects[f"{SAMPLE_30FPS.stem}_{key}.npy"] == value
               for key, value in saved(tmp_path / "local", SAMPLE_30FPS.stem).items())
    assert f"{tmp_path / 'missing.mp4'}\tno such file" in objects["failures.tsv"].decode()
    assert sorted(json.loads(objects["manifest.json"])["videos"]) == ["a", SAMPLE_30FPS.stem]

    from extractors import open_features

    features = open_features(f"s3://{prefix}")  # read where it is: listed once, each object fetched when asked for
    assert sorted(features) == ["a", SAMPLE_30FPS.stem]
    assert {key: features["a"][key].tobytes() for key in ("clip", "fps", "timestamps_ms")} == \
        {key: np.load(io.BytesIO(value)).tobytes() for key, value in saved(tmp_path / "local", SAMPLE_19FPS.stem).items()}

    again = extract(tiny_checkpoint, "s3://videos/features", *inputs)
    assert again.returncode == 0 and "done: 0, skipped: 2, failed: 0" in again.stdout, again.stderr
    assert "failures.tsv" not in stored_objects(s3, prefix)  # a run without failures removes the file

    packed = subprocess.run([sys.executable, "main.py", "pack", f"s3://{prefix}", "--to", str(tmp_path / "f.h5")],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert packed.returncode == 0, packed.stderr
    from io_utils.pack import read_packed

    arrays = read_packed(tmp_path / "f.h5", "a")
    assert np.array_equal(arrays["clip"], np.load(tmp_path / "local" / FEATURES / f"{SAMPLE_19FPS.stem}_clip.npy"))
    assert arrays["manifest"]["source"] == "s3://videos/o/a.mp4"


KILLED_WHILE_UPLOADING = """
import os, sys
from pathlib import Path, PurePath
import numpy as np
from extractors.config import output_layout, resolve_config
from io_utils.output_stores import ObjectStoreOutputs
from io_utils.remote_outputs import RemoteFolder
from io_utils.video_list import VideoJob

config = resolve_config(dict(feature_type="CLIP-ViT-B/32", clip_checkpoint=sys.argv[1], cpu=True,
                             video_paths=[sys.argv[2]], extract_method="uni_4", on_extraction="save_numpy",
                             output_path="s3://videos/killed"))
layout = output_layout(config).staged_here()
job = VideoJob(Path(sys.argv[2]), PurePath("a"))
outputs = ObjectStoreOutputs(layout)
assert outputs.claim(job) is not None
for key, path in layout.paths(job).items():
    np.save(path, np.zeros(3))
upload = RemoteFolder.upload

def upload_then_die(self, local, relative):
    upload(self, local, relative)
    os._exit(9)  # as a SIGKILL right after the first object is up

RemoteFolder.upload = upload_then_die
outputs.publish(job)
"""


def test_a_worker_killed_while_uploading_leaves_no_video_that_a_later_run_takes_as_complete(store, s3,
                                                                                           tiny_checkpoint,
                                                                                           tmp_path):
    video = tmp_path / "a.mp4"
    video.write_bytes(SAMPLE_19FPS.read_bytes())
    killed = subprocess.run([sys.executable, "-c", KILLED_WHILE_UPLOADING, str(tiny_checkpoint), str(video)],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert killed.returncode == 9, killed.stderr
    prefix = f"videos/killed/{FEATURES}"
    left = sorted(stored_objects(s3, prefix))
    assert left == ["a_clip.npy.lock", "a_fps.npy"]  # the other keys go first: the main features never did

    later = extract(tiny_checkpoint, "s3://videos/killed", "--video_paths", str(video))
    assert later.returncode == 0 and "done: 1, skipped: 0, failed: 0" in later.stdout, later.stdout + later.stderr
    reference = extract(tiny_checkpoint, tmp_path / "local", "--video_paths", str(video))
    assert reference.returncode == 0
    objects = stored_objects(s3, prefix)
    assert all(objects[f"a_{key}.npy"] == value for key, value in saved(tmp_path / "local", "a").items())
    assert "a_clip.npy.lock" not in objects  # the dead holder's claim was taken over, then released


def test_a_small_object_is_fetched_in_one_request_and_read_from_memory(tmp_path):
    (tmp_path / "v.mp4").write_bytes(SAMPLE_19FPS.read_bytes())
    with VideoReader(SAMPLE_19FPS) as reader:
        targets = np.linspace(reader.start_pts, reader.end_pts - 1, 12).astype(int).tolist()
        expected = [frame.rgb for frame in reader.read_at(targets)]
    with http_server(tmp_path) as http:
        with VideoReader(RemoteFile(f"{http.url}/v.mp4")) as reader:  # 12 targets in several keyframe intervals
            frames = [frame.rgb for frame in reader.read_at(targets)]
    assert all(np.array_equal(a, b) for a, b in zip(frames, expected)) and len(frames) == 12
    assert (http.gets, http.sent_bytes) == (1, SAMPLE_19FPS.stat().st_size)


def test_a_transfer_that_keeps_failing_fails_its_video_with_the_reason(tmp_path, monkeypatch):
    from io_utils import sources

    monkeypatch.setattr(sources, "RETRY_DELAYS_S", (0.01, 0.01, 0.01))
    monkeypatch.setattr(sources, "WHOLE_OBJECT_BYTES", 0)
    (tmp_path / "v.mp4").write_bytes(SAMPLE_19FPS.read_bytes())
    with http_server(tmp_path) as http:
        http.cut_off = 1000
        with pytest.raises(VideoError, match=r"^reading failed \(") as failure:
            with VideoReader(RemoteFile(f"{http.url}/v.mp4")) as reader:
                list(reader.read_at([reader.start_pts]))
        cut = 1000 - http.cut_off
    assert cut == 4  # the first try and three retries
    assert "\n" not in str(failure.value)


@pytest.mark.skipif(importlib.util.find_spec("gcsfs") is not None, reason="gcsfs is installed")
def test_a_scheme_whose_back_end_is_not_installed_names_the_package():
    with pytest.raises(VideoError, match="cannot read gs:// URLs: .*install gcsfs"):
        VideoReader(RemoteFile("gs://bucket/v.mp4"))


def sharded_run(checkpoint: Path, clips: Path, out: str) -> list[str]:
    return [sys.executable, "main.py", "--feature_type", "CLIP-ViT-B/32", "--cpu", "--clip_checkpoint", str(checkpoint),
            "--extract_method", "uni_16", "--on_extraction", "save_parquet", "--shard_size", "3", "--output_path", out,
            "--video_dir", str(clips)]


def test_parquet_shards_in_object_storage_are_whole_after_a_kill_and_equal_a_local_run(store, s3, tiny_checkpoint,
                                                                                      tmp_path):
    import os
    import signal
    import time

    import pyarrow.parquet as pq

    clips = tmp_path / "clips"
    for index in range(6):
        write_clip(clips / f"v{index}.mp4", num_frames=100, size=(96, 64))
    prefix = f"videos/sharded/{FEATURES}"
    run = subprocess.Popen(sharded_run(tiny_checkpoint, clips, "s3://videos/sharded"), cwd=REPO,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 180
    try:  # killed once the first shard is written and a video of the second is in the store
        while time.monotonic() < deadline and not half_done(stored_names(s3, prefix)):
            time.sleep(0.2)
    finally:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
    left = stored_names(s3, prefix)
    assert any(name.startswith(".pending/000001/") for name in left), left
    assert [name for name in left if name.endswith(".parquet")] == ["000000.parquet"]

    rerun = subprocess.run(sharded_run(tiny_checkpoint, clips, "s3://videos/sharded"), cwd=REPO, capture_output=True,
                           text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert stored_names(s3, prefix) == ["000000.parquet", "000001.parquet", "manifest.json"]
    local = subprocess.run(sharded_run(tiny_checkpoint, clips, str(tmp_path / "local")), cwd=REPO,
                           capture_output=True, text=True, timeout=300)
    assert local.returncode == 0, local.stderr
    for shard in ("000000.parquet", "000001.parquet"):
        stored = pq.read_table(f"{prefix}/{shard}", filesystem=s3).drop(["record", "source"])
        assert stored.equals(pq.read_table(tmp_path / "local" / FEATURES / shard).drop(["record", "source"])), shard
    from extractors import open_features

    remote, local = open_features(f"s3://{prefix}"), open_features(tmp_path / "local" / FEATURES)
    assert list(remote) == list(local) == [f"v{index}" for index in range(6)]
    assert all(np.array_equal(remote[name][key], local[name][key]) for name in local for key in local[name])
    assert list(open_features(f"s3://{prefix}/000001.parquet")) == ["v3", "v4", "v5"]


def half_done(names: list[str]) -> bool:
    return "000000.parquet" in names and any(name.startswith(".pending/000001/") and name.endswith("_clip.npy")
                                             for name in names)


def stored_names(s3, prefix: str) -> list[str]:
    s3.invalidate_cache()
    return sorted(key[len(prefix) + 1:] for key in s3.find(prefix))


def test_resuming_ten_thousand_finished_videos_in_object_storage_costs_a_listing_not_a_request_per_video(
        store, s3, tiny_checkpoint, tmp_path, monkeypatch, capsys):
    """Ten published shards of 1,000 videos (synthetic objects: only their names are read on resume)."""
    import s3fs

    import main

    clips = tmp_path / "clips"
    clip = write_clip(tmp_path / "clip.mp4", num_frames=10)
    clips.mkdir()
    for index in range(10_000):
        os.link(clip, clips / f"v{index:05d}.mp4")
    s3.pipe({f"videos/many/{FEATURES}/{shard:06d}.parquet": b"" for shard in range(10)})
    calls: list[str] = []
    call = s3fs.S3FileSystem._call_s3

    async def counted(self, method, *args, **kwargs):
        calls.append(getattr(method, "__name__", str(method)))
        return await call(self, method, *args, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "_call_s3", counted)
    status = main.main(sharded_run(tiny_checkpoint, clips, "s3://videos/many")[2:] + ["--shard_size", "1000"])
    assert status == 0 and capsys.readouterr().out.strip().splitlines()[-1] == "done: 0, skipped: 10000, failed: 0"
    assert len(calls) < 30, calls  # the listing, the write check, the manifest and its journal: not 10,000
