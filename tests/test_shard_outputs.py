"""``--on_extraction save_parquet`` and ``save_webdataset``: the shards against the ``.npy`` outputs of the same
videos, read with pyarrow, pandas and webdataset's own loaders; a shard complete or absent when a run is killed;
resume from one listing."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas
import pyarrow.parquet as pq
import pytest
import webdataset

from extractors import open_features
from io_utils.errors import UsageError
from tests.checkpoints import write_tiny_clip
from tests.clips import write_clip
from tests.conftest import REPO, SAMPLE_19FPS, SAMPLE_30FPS

FEATURES = "CLIP-ViT-B_32"
KEYS = ("clip", "fps", "timestamps_ms")


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    return write_tiny_clip(tmp_path_factory.mktemp("tiny") / "tiny.pt")


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """The two samples, three short clips (one with a dot in its name) and a file that is not a video."""
    folder = tmp_path_factory.mktemp("videos")
    for sample in (SAMPLE_19FPS, SAMPLE_30FPS):
        os.link(sample, folder / sample.name)
    for index, name in enumerate(("a.b", "c", "d")):
        write_clip(folder / f"{name}.mp4", num_frames=30 + 10 * index, size=(96, 64))
    (folder / "broken.mp4").write_bytes(b"not a video")
    return folder


def extract(checkpoint: Path, out: Path, mode: str, *options: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "main.py", "--feature_type", "CLIP-ViT-B/32", "--cpu", "--clip_checkpoint",
                           str(checkpoint), "--extract_method", "uni_4", "--on_extraction", mode, "--output_path",
                           str(out), *options], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def npy_outputs(folder: Path) -> dict[str, dict[str, np.ndarray]]:
    """Every video's arrays of a save_numpy folder, read file by file with NumPy."""
    names = sorted(path.name[: -len("_clip.npy")] for path in folder.glob("*_clip.npy"))
    return {name: {key: np.load(folder / f"{name}_{key}.npy") for key in KEYS} for name in names}


def assert_same(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray], where: str) -> None:
    assert sorted(actual) == sorted(expected), where
    for key, value in expected.items():
        assert actual[key].dtype == value.dtype and actual[key].shape == value.shape, (where, key)
        assert actual[key].tobytes() == value.tobytes(), (where, key)


def test_parquet_and_webdataset_shards_hold_the_npy_outputs_bit_for_bit_as_their_own_loaders_read_them(
        tiny_checkpoint, videos, tmp_path):
    inputs = ["--video_dir", str(videos)]
    reference = extract(tiny_checkpoint, tmp_path / "npy", "save_numpy", *inputs)
    parquet = extract(tiny_checkpoint, tmp_path / "parquet", "save_parquet", "--shard_size", "2", *inputs)
    tar = extract(tiny_checkpoint, tmp_path / "wds", "save_webdataset", "--shard_size", "2", *inputs)
    for result in (reference, parquet, tar):
        assert result.returncode == 1 and "done: 5, skipped: 0, failed: 1" in result.stdout, result.stderr
        assert "broken.mp4: not a readable video" in result.stderr
    expected = npy_outputs(tmp_path / "npy" / FEATURES)
    assert sorted(expected) == sorted(["a.b", "c", "d", SAMPLE_19FPS.stem, SAMPLE_30FPS.stem])

    # list order (sorted) in shards of two: [a.b, broken], [c, d], [sample_19, sample_30]; broken is left out
    folder = tmp_path / "parquet" / FEATURES
    assert sorted(path.name for path in folder.iterdir()) == ["000000.parquet", "000001.parquet", "000002.parquet",
                                                              "failures.tsv", "manifest.json"]
    for shard in sorted(folder.glob("*.parquet")):
        table = pq.read_table(shard)  # pyarrow
        frame = pandas.read_parquet(shard)  # pandas
        assert table.schema.field("clip").type.value_type.list_size == 32  # the tiny model's width
        for row, (name, key) in enumerate(zip(table.column("video").to_pylist(), table.column("key").to_pylist())):
            assert key == name.replace(".", "_")
            from_arrow = {"clip": np.array(table.column("clip")[row].as_py(), dtype=np.float32),
                          "fps": np.float64(table.column("fps")[row].as_py()),
                          "timestamps_ms": np.array(table.column("timestamps_ms")[row].as_py(), dtype=np.float64)}
            assert_same({k: np.asarray(v) for k, v in from_arrow.items()}, expected[name], f"pyarrow {shard.name}")
            from_pandas = {"clip": np.stack(frame["clip"][row]), "fps": np.asarray(frame["fps"][row]),
                           "timestamps_ms": frame["timestamps_ms"][row]}
            assert_same(from_pandas, expected[name], f"pandas {shard.name}")
            record = json.loads(table.column("record")[row].as_py())
            assert record["outputs"]["clip"] == list(expected[name]["clip"].shape) and record["shard"] == shard.stem
    rows = duckdb.sql(f"SELECT video, clip, fps, timestamps_ms FROM '{folder}/*.parquet' ORDER BY video").fetchall()
    assert [row[0] for row in rows] == sorted(expected)
    for name, clip, fps, timestamps in rows:  # DuckDB
        assert_same({"clip": np.array(clip, dtype=np.float32), "fps": np.asarray(fps, dtype=np.float64),
                     "timestamps_ms": np.array(timestamps, dtype=np.float64)}, expected[name], f"duckdb {name}")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["videos"]["broken"] == {"shard": "000000", "failed": "not a readable video (Invalid data found "
                                                                          "when processing input)"}

    folder = tmp_path / "wds" / FEATURES
    samples = list(webdataset.WebDataset(str(folder / "{000000..000002}.tar"), shardshuffle=False).decode())
    assert [sample["__key__"] for sample in samples] == ["a_b", "c", "d", SAMPLE_19FPS.stem, SAMPLE_30FPS.stem]
    for sample in samples:
        name = sample["json"]["video"]
        assert_same({key: sample[f"{key}.npy"] for key in KEYS}, expected[name], f"webdataset {name}")
        assert sample["json"]["source"] == str(videos / f"{name}.mp4")

    for where in (tmp_path / "parquet" / FEATURES, tmp_path / "wds" / FEATURES):  # and our own reader
        features = open_features(where)
        assert list(features) == ["a.b", "c", "d", SAMPLE_19FPS.stem, SAMPLE_30FPS.stem]
        for name, arrays in features.items():
            assert_same(arrays, expected[name], f"open_features {where.name} {name}")
            assert all(value.flags.writeable for value in arrays.values())  # as np.load gives them
        assert str(videos / "c.mp4") in features
    assert list(open_features(tmp_path / "wds" / FEATURES / "000001.tar")) == ["c", "d"]

    # pack converts between the formats: shards into HDF5, a .npy folder into one shard of either kind
    conversions = [(tmp_path / "parquet" / FEATURES, tmp_path / "from_parquet.h5"),
                   (tmp_path / "npy" / FEATURES, tmp_path / "from_npy.tar"),
                   (tmp_path / "wds" / FEATURES, tmp_path / "from_wds.parquet")]
    for source, destination in conversions:
        packed = subprocess.run([sys.executable, "main.py", "pack", str(source), "--to", str(destination)], cwd=REPO,
                                capture_output=True, text=True, timeout=120)
        assert packed.returncode == 0 and "5 videos added" in packed.stdout, packed.stderr
        features = open_features(destination)
        assert sorted(features) == sorted(expected)
        for name in expected:
            assert_same(features[name], expected[name], f"{destination.name} {name}")

    again = extract(tiny_checkpoint, tmp_path / "parquet", "save_parquet", "--shard_size", "2", *inputs)
    assert again.returncode == 1 and "done: 0, skipped: 5, failed: 1" in again.stdout, again.stderr
    assert "broken.mp4: not a readable video" in again.stderr  # as recorded: the shard is not written again


def write_input_shard(path: Path, videos: dict[str, Path]) -> Path:
    with webdataset.TarWriter(str(path)) as writer:
        for key, video in videos.items():
            writer.write({"__key__": key, "mp4": video.read_bytes()})
    return path


def test_output_shards_follow_the_input_shards(tiny_checkpoint, videos, tmp_path):
    write_input_shard(tmp_path / "in-0.tar", {"x": videos / "c.mp4", "y": videos / "d.mp4"})
    write_input_shard(tmp_path / "in-1.tar", {"z": SAMPLE_19FPS})
    result = extract(tiny_checkpoint, tmp_path / "out", "save_webdataset", "--shards", str(tmp_path / "in-{0..1}.tar"))
    assert result.returncode == 0, result.stderr
    reference = extract(tiny_checkpoint, tmp_path / "npy", "save_numpy", "--video_paths", str(videos / "c.mp4"),
                        str(videos / "d.mp4"), str(SAMPLE_19FPS))
    assert reference.returncode == 0, reference.stderr
    expected = npy_outputs(tmp_path / "npy" / FEATURES)
    folder = tmp_path / "out" / FEATURES
    assert sorted(path.name for path in folder.glob("*.tar")) == ["in-0.tar", "in-1.tar"]
    keys = {shard: [sample["__key__"] for sample in webdataset.WebDataset(str(folder / shard), shardshuffle=False)]
            for shard in ("in-0.tar", "in-1.tar")}
    assert keys == {"in-0.tar": ["x", "y"], "in-1.tar": ["z"]}
    features = open_features(folder)
    for name, source in (("x", "c"), ("y", "d"), ("z", SAMPLE_19FPS.stem)):
        assert_same(features[name], expected[source], name)

    refused = extract(tiny_checkpoint, tmp_path / "out", "save_webdataset", "--shards", str(tmp_path / "in-0.tar"),
                      "--shard_size", "5")
    assert refused.returncode == 1 and "--shard_size sizes the output shards" in refused.stderr


def test_a_run_killed_mid_shard_leaves_no_partial_shard_and_the_rerun_has_every_video_once(tiny_checkpoint, tmp_path):
    clips = tmp_path / "clips"
    for index in range(8):
        write_clip(clips / f"v{index}.mp4", num_frames=100, size=(96, 64))
    out = tmp_path / "out"
    command = [sys.executable, "main.py", "--feature_type", "CLIP-ViT-B/32", "--cpu", "--clip_checkpoint",
               str(tiny_checkpoint), "--extract_method", "uni_16", "--on_extraction", "save_parquet", "--shard_size",
               "4", "--output_path", str(out), "--video_dir", str(clips)]
    run = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    pending = out / FEATURES / ".pending"
    deadline = time.monotonic() + 120
    try:  # killed once the first shard is written and a video of the second is staged
        while time.monotonic() < deadline and not (list(pending.glob("000001/*_clip.npy"))
                                                   and (out / FEATURES / "000000.parquet").exists()):
            time.sleep(0.05)
    finally:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
    assert list(pending.glob("000001/*_clip.npy")), "the run ended before the second shard was half done"
    folder = out / FEATURES
    assert [path.name for path in folder.glob("*.parquet")] == ["000000.parquet"]
    assert pq.read_table(folder / "000000.parquet").column("video").to_pylist() == ["v0", "v1", "v2", "v3"]
    assert not list(folder.glob("*.tmp")) and not list(folder.glob(".*.parquet*"))

    rerun = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    done, skipped = (int(part.split(": ")[1]) for part in rerun.stdout.strip().splitlines()[-1].split(", ")[:2])
    assert skipped >= 5 and done + skipped == 8  # the first shard's four, and what the second had staged
    assert sorted(path.name for path in folder.iterdir()) == ["000000.parquet", "000001.parquet", "manifest.json"]
    names = [name for shard in ("000000", "000001")
             for name in pq.read_table(folder / f"{shard}.parquet").column("video").to_pylist()]
    assert names == [f"v{index}" for index in range(8)]


def test_a_list_naming_feature_files_is_refused_with_shards(tiny_checkpoint, tmp_path):
    listing = tmp_path / "list.csv"
    listing.write_text(f"video_path,feature_path\n{SAMPLE_19FPS},a.npy\n")
    result = extract(tiny_checkpoint, tmp_path / "out", "save_parquet", "--file_with_video_paths", str(listing))
    assert result.returncode == 1 and "the list gives a feature_path" in result.stderr
    with pytest.raises(UsageError, match="nor a shard"):
        open_features(tmp_path / "list.csv")
