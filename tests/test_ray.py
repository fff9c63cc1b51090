"""``--backend ray`` on a local cluster of three nodes (a head and two one-CPU workers), in a network namespace of
its own with only loopback up (every node is 127.0.0.1, no traffic leaves it); and ``--shard``."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import main
from io_utils.claims import outputs_complete
from io_utils.video_list import in_shard
from extractors.catalog import write_random_weights
from tests.checkpoints import write_tiny_clip
from tests.clips import write_clip
from tests.conftest import REPO

FOLDER = "CLIP-ViT-B_32"
STALL_TIMEOUT_S = 5
CAPACITY_TIMEOUT_S = 20
needs_namespaces = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                                      reason="the Ray cluster runs in a network namespace of its own (root, unshare)")


@pytest.fixture(scope="module")
def cluster_runs(tmp_path_factory) -> tuple[Path, dict, list[str]]:
    """Three runs on the cluster (tests/ray_cluster.py): plain, with a node removed mid-run, with a poison video."""
    folder = tmp_path_factory.mktemp("ray")
    checkpoint = write_tiny_clip(folder / "tiny.pt")
    videos = [str(write_clip(folder / "videos" / f"clip{i}.mp4", num_frames=60, size=(160, 120), noise=False))
              for i in range(4)]
    poison = str(write_clip(folder / "poison" / "poison.mp4", num_frames=10))
    common = ["--feature_type", "CLIP-ViT-B/32", "--cpu", "--num_workers", "2", "--checkpoint", str(checkpoint),
              "--extract_method", "fix_10", "--on_extraction", "save_numpy", "--verbose"]
    runs = {"plain": [*common, "--output_path", str(folder / "ray"), "--video_paths", *videos],
            "node_lost": [*common, "--output_path", str(folder / "lost"), "--video_paths", *videos],
            "poison": [*common, "--output_path", str(folder / "poisoned"), "--video_paths", videos[0], poison,
                       videos[1]],
            "store_node_lost": [*common, "--video_dir", "s3://videos/in/", "--output_path", "s3://videos/out"],
            "stall": [*common, "--output_path", str(folder / "stall"), "--stall_timeout", str(STALL_TIMEOUT_S),
                      "--video_paths", videos[0], "{http}/stalls.mp4", videos[1]],
            "capacity_lost": [*common, "--output_path", str(folder / "capacity"), "--stall_timeout",
                              str(CAPACITY_TIMEOUT_S), "--video_paths", *videos],
            "resume": [*common, "--output_path", str(folder / "capacity"), "--video_paths", *videos],
            "joint": ["--feature_type", "CLIP-ViT-B/32", "resnet18", "--cpu", "--num_workers", "2", "--per_type",
                      f"CLIP-ViT-B/32:checkpoint={checkpoint}", "--weights_dir", str(folder / "weights"),
                      "--extract_method", "fix_10", "--on_extraction", "save_numpy", "--verbose", "--output_path",
                      str(folder / "joint"), "--video_paths", *videos]}
    write_random_weights("resnet18", folder / "weights")
    store = {"folder": str(folder / "weed"), "uploads": {video: f"videos/in/{Path(video).name}" for video in videos},
             "download": "videos/out", "download_to": str(folder / "from_store")}
    (folder / "weed").mkdir()
    (folder / "served").mkdir()
    shutil.copy(videos[2], folder / "served" / "stalls.mp4")
    (folder / "runs.json").write_text(json.dumps({"runs": runs, "store": store, "served": str(folder / "served")}))
    command = f"ip link set lo up && {sys.executable} -m tests.ray_cluster {folder / 'runs.json'}"
    result = subprocess.run(["unshare", "-n", "sh", "-c", command], cwd=REPO, capture_output=True, text=True,
                            timeout=600)
    (folder / "cluster.log").write_text(result.stderr + result.stdout)  # the runs' lines, then their results
    assert result.returncode == 0, result.stderr[-3000:]
    return folder, json.loads(result.stdout.strip().splitlines()[-1]), [*common, "--video_paths", *videos]


def no_partial_files(folder: Path) -> bool:
    names = [path.name for path in folder.rglob("*")]
    return not any(name.endswith((".tmp", ".lock")) for name in names) and outputs_complete(folder.rglob("*.npy"))


@needs_namespaces
def test_ray_features_equal_the_local_backends_bit_for_bit(cluster_runs, tmp_path):
    folder, results, local_argv = cluster_runs
    assert results["plain"][:2] == [0, "done: 4, skipped: 0, failed: 0"]
    assert main.main([*local_argv, "--output_path", str(tmp_path)]) == 0
    ray_files = sorted(path for path in (folder / "ray" / FOLDER).iterdir() if path.name != "manifest.json")
    local_names = sorted(path.name for path in (tmp_path / FOLDER).iterdir() if path.name != "manifest.json")
    assert [path.name for path in ray_files] == local_names
    assert len(ray_files) == 12 and all(path.read_bytes() == (tmp_path / FOLDER / path.name).read_bytes()
                                        for path in ray_files)
    recorded = json.loads((folder / "ray" / FOLDER / "manifest.json").read_text())["videos"]
    assert len(recorded) == 4 and all(entry["outputs"]["clip"][1] == 32 for entry in recorded.values())  # via Ray


@needs_namespaces
def test_several_types_from_one_decode_on_ray_equal_each_alone(cluster_runs):
    folder, results, _ = cluster_runs
    assert results["joint"][:2] == [0, "resnet18: done: 4, skipped: 0, failed: 0"]
    joint_clip, plain_clip = folder / "joint" / FOLDER, folder / "ray" / FOLDER
    names = sorted(path.name for path in joint_clip.glob("*.npy"))
    assert len(names) == 12 and names == sorted(path.name for path in plain_clip.glob("*.npy"))
    assert all((joint_clip / name).read_bytes() == (plain_clip / name).read_bytes() for name in names)
    assert len(list((folder / "joint" / "resnet18").glob("*_resnet.npy"))) == 4 and no_partial_files(folder / "joint")


@needs_namespaces
def test_a_node_lost_mid_run_loses_no_video(cluster_runs):
    folder, results, _ = cluster_runs
    code, summary, actors_lost = results["node_lost"]
    # The lost actor may have finished writing its video before it died, without reporting it: the retry then
    # finds the outputs complete and skips it. Either way no video is lost and none fails.
    assert code == 0 and actors_lost == 1
    assert summary in ("done: 4, skipped: 0, failed: 0", "done: 3, skipped: 1, failed: 0"), summary
    assert len(list((folder / "lost" / FOLDER).glob("*_clip.npy"))) == 4 and no_partial_files(folder / "lost")
    records = json.loads((folder / "lost" / FOLDER / "manifest.json").read_text())["videos"]
    skipped = int(summary.split("skipped: ")[1].split(",")[0])
    assert len(records) == 4 and sum("found_complete" in record for record in records.values()) == skipped


@needs_namespaces
def test_a_cluster_without_a_shared_folder_reads_and_writes_object_storage_and_loses_no_video(cluster_runs,
                                                                                               tmp_path):
    """Inputs listed from a prefix, outputs and claims in the store, each actor staging in a private folder; one
    node is removed after its first video."""
    folder, results, local_argv = cluster_runs
    code, summary, actors_lost = results["store_node_lost"]
    assert code == 0 and actors_lost == 1
    assert summary in ("done: 4, skipped: 0, failed: 0", "done: 3, skipped: 1, failed: 0"), summary
    assert main.main([*local_argv, "--output_path", str(tmp_path)]) == 0
    stored = folder / "from_store" / FOLDER
    names = sorted(path.name for path in stored.iterdir())
    local_names = sorted(path.name for path in (tmp_path / FOLDER).iterdir())
    assert names == local_names  # manifest.json and the outputs: no claim, journal segment or failures file left
    assert all((stored / name).read_bytes() == (tmp_path / FOLDER / name).read_bytes()
               for name in names if name.endswith(".npy"))
    records = json.loads((stored / "manifest.json").read_text())["videos"]
    assert sorted(records) == [f"clip{i}" for i in range(4)]
    assert all(record["source"] == f"s3://videos/in/{name}.mp4" for name, record in records.items())


@needs_namespaces
def test_a_video_that_kills_two_actors_fails_alone(cluster_runs):
    folder, results, _ = cluster_runs
    code, summary, actors_lost = results["poison"]
    assert (code, summary, actors_lost) == (1, "done: 2, skipped: 0, failed: 1", 2)
    failures = (folder / "poisoned" / FOLDER / "failures.tsv").read_text().splitlines()
    assert len(failures) == 2 and failures[1].startswith(f"{folder / 'poison' / 'poison.mp4'}\tthe Ray actor died")
    assert no_partial_files(folder / "poisoned")


@needs_namespaces
def test_a_stalled_input_fails_alone_on_ray_and_its_actor_is_replaced(cluster_runs):
    folder, results, _ = cluster_runs
    code, summary, _ = results["stall"]
    assert (code, summary) == (1, "done: 2, skipped: 0, failed: 1")
    path, reason = (folder / "stall" / FOLDER / "failures.tsv").read_text().splitlines()[1].split("\t")
    assert path.endswith("/stalls.mp4")
    seconds = re.fullmatch(r"stalled for (\d+) s at fetching bytes 0-\d+ of the input", reason)
    assert seconds and STALL_TIMEOUT_S <= int(seconds[1]) <= STALL_TIMEOUT_S + 2, reason
    assert no_partial_files(folder / "stall")


@needs_namespaces
def test_a_cluster_that_loses_every_node_says_so_stops_and_resumes(cluster_runs):
    """Every worker node is removed after the first video: the run says so within a minute, stops with the reason
    after the timeout, and a run on a cluster with a node again does the rest."""
    folder, results, _ = cluster_runs
    code, line, _, reported_after, ended_after = results["capacity_lost"]
    assert code == 1 and line.startswith("error: the Ray cluster has 0 CPU and 0 GPU on 1 node(s) alive, and an "
                                         "actor needs 1 CPU; stopped after waiting"), line
    assert reported_after is not None and reported_after < 60
    assert CAPACITY_TIMEOUT_S <= ended_after - reported_after < CAPACITY_TIMEOUT_S + 15
    code, summary, _ = results["resume"]
    done, skipped = (int(part.split(": ")[1]) for part in summary.split(", ")[:2])
    assert code == 0 and done + skipped == 4 and skipped >= 1, summary
    assert no_partial_files(folder / "capacity") and len(list((folder / "capacity" / FOLDER).glob("*_clip.npy"))) == 4


def test_shards_split_the_list_and_keep_their_videos_when_it_grows():
    videos = [Path(f"videos/part{i // 50}/clip{i}.mp4") for i in range(400)]
    shards = [[video for video in videos if in_shard(video, (index, 4))] for index in range(4)]
    assert sorted(video for shard in shards for video in shard) == sorted(videos)  # each in exactly one
    assert min(map(len, shards)) > 70  # and evenly, by the hash
    grown = [Path(f"videos/new/clip{i}.mp4") for i in range(100)] + videos
    for index, shard in enumerate(shards):
        assert [video for video in grown if in_shard(video, (index, 4)) and video in videos] == shard


def test_shard_runs_cover_the_list_once(tmp_path, capsys):
    videos = [str(write_clip(tmp_path / f"v{i}.mp4", num_frames=6, size=(64, 48))) for i in range(6)]
    checkpoint = write_tiny_clip(tmp_path / "tiny.pt")
    common = ["--feature_type", "CLIP-ViT-B/32", "--cpu", "--checkpoint", str(checkpoint), "--extract_method",
              "uni_2", "--on_extraction", "save_numpy", "--output_path", str(tmp_path / "out"), "--video_paths", *videos]
    done = 0
    for index in range(3):
        assert main.main([*common, "--shard", f"{index}/3"]) == 0
        done += int(capsys.readouterr().out.strip().splitlines()[-1].split(",")[0].split(": ")[1])
    assert done == 6 and len(list((tmp_path / "out" / FOLDER).glob("*_clip.npy"))) == 6
    assert main.main([*common, "--shard", "1/3"]) == 0  # a repeated shard redoes nothing
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("done: 0, skipped: ")
