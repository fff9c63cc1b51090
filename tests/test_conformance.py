"""Every valid file FFmpeg plays, the tool reads exactly: the corpus of ``tests/conformance.py`` (late starts,
negative timestamps, edit lists, a dozen codecs and pixel formats, display matrices, timestamp jumps, several
video streams, cover art...) against the ``ffmpeg`` command line's own sequential decode."""
from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

import main
from extractors import extractor_class
from io_utils.errors import VideoError
from io_utils.sampling import parse_extract_method
from io_utils.video import VideoReader
from tests.conformance import KINDS, Kind, ffmpeg, ffprobe, make_all, reference_frames

VISUAL = [kind for kind in KINDS if kind.video and not kind.refused]
METHODS = ("uni_7", "fix_1", "fix_3", "fix_25")


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> dict[str, Path]:
    return make_all(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("conformance_weights")
    for feature_type in ("resnet18", "r21d", "vggish"):
        assert main.main(["random_weights", str(folder), "--feature_type", feature_type]) == 0
    return folder


def test_the_corpus_has_25_kinds_or_more_each_with_an_output_name_of_its_own():
    assert len(KINDS) >= 25 and len({Path(kind.name).stem for kind in KINDS}) == len(KINDS)  # one output name each


@pytest.mark.parametrize("kind", VISUAL, ids=lambda kind: kind.name)
def test_frames_equal_ffmpegs_sequential_decode(corpus, kind: Kind):
    """For uni_N, fix_N (sparse and dense: seeking and decoding forward) and every frame: the same frames, bit
    for bit, at the same presentation times, from the stream FFmpeg picks."""
    reference = reference_frames(kind, corpus[kind.name])
    with VideoReader(corpus[kind.name]) as video:
        assert video.facts()["stream"] == kind.stream
        assert (video.time_base, video.start_pts, video.end_pts, video.num_frames) == \
            (reference.time_base, reference.start_pts, reference.end_pts, reference.num_frames)
        for method in METHODS:
            targets = parse_extract_method(method).target_pts(video.start_pts, video.end_pts, video.time_base)
            taken = list(video.read_at(targets))
            assert [frame.pts for frame in taken] == [frame.pts for frame in reference.read_at(targets)], method
            for frame, expected in zip(taken, reference.read_at(targets)):
                assert np.array_equal(frame.rgb, expected.rgb), (method, frame.pts)
        every = list(video.read_all())
        assert [frame.pts for frame in every] == reference.pts == video.frame_pts()
        assert all(np.array_equal(frame.rgb, expected) for frame, expected in zip(every, reference.frames))


@pytest.mark.parametrize("kind", [kind for kind in KINDS if kind.refused], ids=lambda kind: kind.name)
def test_a_file_whose_frames_cannot_be_placed_in_time_is_refused_in_words(corpus, kind: Kind):
    """Not wrong frames: the reason, on opening."""
    with pytest.raises(VideoError) as raised:
        VideoReader(corpus[kind.name])
    assert str(raised.value) == kind.refused


@pytest.mark.parametrize("name, rotation, mirrored", [("rotate_90.mp4", -90, False), ("rotate_180.mp4", -180, False),
                                                      ("rotate_270.mp4", 90, False), ("mirrored.mp4", 0, True),
                                                      ("video_only.mp4", 0, False)])
def test_display_matrices_are_shown_as_ffmpeg_shows_them_and_recorded(corpus, name, rotation, mirrored):
    """The same matrices written on one clip: each frame is the upright one turned (and mirrored) as stated."""
    with VideoReader(corpus[name]) as video, VideoReader(corpus["video_only.mp4"]) as upright:
        shown, plain = next(video.read_at([video.start_pts])), next(upright.read_at([upright.start_pts]))
        assert (video.facts()["rotation"], video.facts()["mirrored"]) == (rotation, mirrored)
    expected = plain.rgb[:, ::-1] if mirrored else plain.rgb
    assert np.array_equal(shown.rgb, np.rot90(expected, rotation // 90))


def test_anamorphic_frames_are_read_as_coded_and_their_pixel_aspect_recorded(corpus):
    with VideoReader(corpus["anamorphic.mp4"]) as video:
        frame = next(video.read_at([video.start_pts]))
        assert frame.rgb.shape == (64, 96, 3) and video.facts()["pixel_aspect"] == "4/3"
    with VideoReader(corpus["video_only.mp4"]) as video:
        assert video.facts()["pixel_aspect"] == "1"


def test_a_file_with_only_a_cover_picture_has_no_video(tmp_path, corpus):
    """An audio file with album art: the cover is not a video."""
    path = tmp_path / "song.m4a"
    subprocess.run([ffmpeg(), "-v", "error", "-i", str(corpus["audio_only.m4a"]), "-i",
                    str(corpus["cover_art_first.mp4"].parent / "cover.png"), "-map", "0", "-map", "1", "-c:a", "copy",
                    "-c:v", "png", "-disposition:v", "attached_pic", str(path)], check=True)
    with pytest.raises(VideoError, match=r"^no video stream \(only a cover picture and audio\)$"):
        VideoReader(path)


def _run(feature_type: str, options: list[str], corpus: dict[str, Path], weights: Path, output: Path
         ) -> dict[str, str]:
    """The command line over the whole corpus: its failures, by file name."""
    paths = [str(corpus[kind.name]) for kind in KINDS]
    code = main.main(["--feature_type", feature_type, *options, "--cpu", "--weights_dir", str(weights),
                      "--video_paths", *paths, "--on_extraction", "save_numpy", "--output_path", str(output)])
    failures_file = output / feature_type / "failures.tsv"
    failures = {}
    if failures_file.exists():
        with failures_file.open() as handle:
            failures = {Path(row["path"]).name: row["reason"] for row in csv.DictReader(handle, delimiter="\t")}
    assert code == (1 if failures else 0)
    return failures


@pytest.mark.parametrize("feature_type, options", [("resnet18", {"extract_method": "uni_5"}),
                                                   ("r21d", {"extraction_fps": 4, "stack_size": 8, "step_size": 8})])
def test_a_frame_wise_and_a_clip_type_through_the_command_line_equal_the_reference(
        corpus, weights, tmp_path, feature_type, options):
    """The features of each file equal the same model's on FFmpeg's frames (its reader swapped for
    :class:`FfmpegFrames`), or the file fails with the line the reference run gives."""
    flags = [item for key, value in options.items() for item in (f"--{key}", str(value))]
    failures = _run(feature_type, flags, corpus, weights, tmp_path)
    extractor = extractor_class(feature_type)(dict(feature_type=feature_type, cpu=True, weights_dir=str(weights),
                                                   **options), external_call=True)
    done = 0
    for kind in KINDS:
        if not kind.video or kind.refused:
            assert failures.pop(kind.name) == (kind.refused or "no video stream (only audio)")
            continue
        extractor.open_reader = lambda path, kind=kind: reference_frames(kind, Path(path))
        try:
            expected = extractor.extract(corpus[kind.name])
        except VideoError as error:
            assert failures.pop(kind.name) == str(error)
            continue
        stem = Path(kind.name).stem
        for key in set(expected) - {"fps"}:  # the container's average rate, which FFmpeg versions compute apart
            saved = np.load(tmp_path / feature_type / f"{stem}_{key}.npy")
            np.testing.assert_allclose(saved, expected[key], rtol=1e-5, atol=1e-6, err_msg=f"{kind.name} {key}")
        done += 1
    assert failures == {}
    assert done >= len(VISUAL) - 3  # r21d: the three clips under 2 s are too short for an 8-frame window


def test_an_audio_type_through_the_command_line(corpus, weights, tmp_path):
    """VGGish on every file: features on the visual timeline where there is audio (its start, relative to the
    video's first frame, as ffprobe states the two streams' starts), one line where there is none."""
    failures = _run("vggish", [], corpus, weights, tmp_path)
    manifest = json.loads((tmp_path / "vggish" / "manifest.json").read_text())["videos"]
    extractor = extractor_class("vggish")(dict(feature_type="vggish", cpu=True, weights_dir=str(weights)),
                                          external_call=True)
    for kind in KINDS:
        if not kind.audio:
            assert failures.pop(kind.name) == f"no audio stream (only {'a cover picture and ' * kind.cover}video)"
            continue
        stem = Path(kind.name).stem
        saved = np.load(tmp_path / "vggish" / f"{stem}_vggish.npy")
        assert saved.shape[1] == 128 and len(saved) >= 1
        np.testing.assert_allclose(saved, extractor.extract(corpus[kind.name])["vggish"], rtol=1e-5, atol=1e-6)
        video_start = reference_frames(kind, corpus[kind.name]).start_s if kind.video else None
        audio_start = _first_audio_frame_s(corpus[kind.name]) - (video_start or 0.0)
        assert manifest[stem]["stream"]["audio_start_s"] == pytest.approx(audio_start, abs=0.01), kind.name
    assert failures == {}


def _first_audio_frame_s(path: Path) -> float:
    """When the audio starts, as ffprobe decodes it: the first decoded frame's time (an encoder's priming
    samples, before it, are not heard)."""
    listing = subprocess.run([ffprobe(), "-v", "error", "-select_streams", "a:0", "-show_entries", "frame=pts_time",
                              "-read_intervals", "%+#4", "-of", "csv=p=0", str(path)],
                             check=True, capture_output=True, text=True).stdout
    return float(listing.split()[0].strip(","))
