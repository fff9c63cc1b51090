"""Input modes: paths, a directory, a list file, a HowTo100M CSV; missing paths and colliding outputs."""
from __future__ import annotations

from pathlib import Path, PurePath

import pytest

from io_utils.errors import UsageError
from io_utils.outputs import OutputLayout
from io_utils.video_list import VideoJob, list_jobs, split_jobs


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_list_file_tolerates_blank_lines_crlf_and_trailing_spaces(tmp_path):
    a, b = touch(tmp_path / "a.mp4"), touch(tmp_path / "b.mkv")
    list_file = tmp_path / "videos.txt"
    list_file.write_bytes(f"\r\n{a}  \r\n\r\n{b}\t\r\n   \r\n".encode())
    jobs, missing = split_jobs(list_jobs(file_with_video_paths=str(list_file)))
    assert [job.path for job in jobs] == [a, b] and missing == []


def test_missing_paths_are_all_listed_and_the_rest_go_on(tmp_path):
    a = touch(tmp_path / "a.mp4")
    jobs, missing = split_jobs(list_jobs(video_paths=[str(a), str(tmp_path / "x.mp4"), str(tmp_path / "y.mp4")]))
    assert [job.path for job in jobs] == [a]
    assert missing == [tmp_path / "x.mp4", tmp_path / "y.mp4"]


def test_video_dir_by_extension_and_recursive_mirrors_folders(tmp_path):
    touch(tmp_path / "top.MP4")
    touch(tmp_path / "notes.txt")
    touch(tmp_path / "a" / "clip.mp4")
    touch(tmp_path / "b" / "clip.mp4")
    flat, _ = split_jobs(list_jobs(video_dir=str(tmp_path)))
    assert [job.output_stem for job in flat] == [PurePath("top")]
    deep, _ = split_jobs(list_jobs(video_dir=str(tmp_path), recursive=True))
    assert sorted(map(str, (job.output_stem for job in deep))) == ["a/clip", "b/clip", "top"]


def test_recursive_listing_does_not_follow_a_symlink_loop(tmp_path):
    touch(tmp_path / "a" / "b" / "clip.mp4")
    (tmp_path / "a" / "b" / "back").symlink_to(tmp_path / "a", target_is_directory=True)  # a/b/back -> a
    deep, _ = split_jobs(list_jobs(video_dir=str(tmp_path), recursive=True))
    assert [str(job.output_stem) for job in deep] == ["a/b/clip"]


def test_same_stem_from_different_folders_is_refused_listing_collisions(tmp_path):
    a, b = touch(tmp_path / "a" / "clip.mp4"), touch(tmp_path / "b" / "clip.mp4")
    with pytest.raises(UsageError, match=r"1 output name\(s\).*a/clip.mp4 and .*b/clip.mp4 -> clip"):
        split_jobs(list_jobs(video_paths=[str(a), str(b)]))


def test_same_video_twice_is_done_once(tmp_path):
    a = touch(tmp_path / "a.mp4")
    jobs, _ = split_jobs(list_jobs(video_paths=[str(a), str(a)]))
    assert len(jobs) == 1


def test_csv_names_each_videos_feature_file(tmp_path):
    a, b = touch(tmp_path / "a.mp4"), touch(tmp_path / "sub" / "a.mp4")
    csv_file = tmp_path / "list.csv"
    csv_file.write_text(f"video_path,feature_path\n{a},feats/a.npy\n{b},feats/a_sub.npy\n")
    jobs, _ = split_jobs(list_jobs(file_with_video_paths=str(csv_file)))
    assert [job.feature_path for job in jobs] == [Path("feats/a.npy"), Path("feats/a_sub.npy")]
    layout = OutputLayout(tmp_path / "out", ("clip", "fps", "timestamps_ms"), "save_numpy")
    paths = layout.paths(jobs[0])
    assert paths["clip"] == tmp_path / "out" / "feats" / "a.npy"
    assert paths["fps"] == tmp_path / "out" / "feats" / "a_fps.npy"
    assert list(paths)[-1] == "clip"  # written last: its presence means the video is complete
    assert layout.claim(jobs[0]) == tmp_path / "out" / "feats" / "a.npy.lock"
    earlier = layout.in_folder(tmp_path / "earlier")  # another run's outputs, named the same way
    assert earlier.path(jobs[1], "timestamps_ms") == tmp_path / "earlier" / "feats" / "a_sub_timestamps_ms.npy"


def test_csv_with_missing_field_is_refused(tmp_path):
    csv_file = tmp_path / "list.csv"
    csv_file.write_text("video_path,feature_path\nx.mp4,\n")
    with pytest.raises(UsageError, match="line 2: both video_path and feature_path are required"):
        split_jobs(list_jobs(file_with_video_paths=str(csv_file)))


def test_default_output_layout(tmp_path):
    job = VideoJob(Path("v.mp4"), PurePath("sub/v"))
    paths = OutputLayout(tmp_path, ("rgb", "flow", "fps"), "save_pickle").paths(job)
    assert paths == {"flow": tmp_path / "sub" / "v_flow.pkl", "fps": tmp_path / "sub" / "v_fps.pkl",
                     "rgb": tmp_path / "sub" / "v_rgb.pkl"}
    assert OutputLayout(tmp_path, ("rgb", "fps"), "print").paths(job) == {}
    images = OutputLayout(tmp_path, ("flow", "fps"), "save_flow_images")
    assert images.paths(job) == {"flow": tmp_path / "sub" / "v"}
    assert images.in_folder(tmp_path, "save_flow_viz").paths(job) == {"flow": tmp_path / "sub" / "v_viz"}


def test_saved_videos_are_the_complete_ones_named_as_written(tmp_path):
    layout = OutputLayout(tmp_path, ("clip", "fps", "timestamps_ms"), "save_numpy")
    for stem in ("a", "sub/b", "partial"):
        for key in ("clip", "fps", "timestamps_ms") if stem != "partial" else ("clip",):
            touch(layout.path(VideoJob(Path("x.mp4"), PurePath(stem)), key))
    saved = list(layout.saved_videos())
    assert [name for name, _ in saved] == ["a", "sub/b"]
    assert saved[1][1]["fps"] == tmp_path / "sub" / "b_fps.npy"
