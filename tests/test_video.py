"""Sampling and decoding: exact frames, presentation-time semantics, formats, cost."""
from __future__ import annotations

import bisect
import threading
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from io_utils import forward_decoder
from io_utils import video as video_module
from io_utils.errors import VideoError
from io_utils.sampling import parse_extract_method
from io_utils.video import VideoReader
from tests.clips import sequential_decode, set_mp4_rotation, write_clip
from tests.conftest import SAMPLE_19FPS

VFR_TIMES_MS = np.cumsum([0] + [20, 40, 70, 33, 100, 17] * 12).tolist()  # 73 frames, irregular spacing


def assert_sampled_equal_sequential(path, method_text, threads: bool = True):
    """Each sampled frame is the sequential decode's frame with the last pts <= target, bit for bit."""
    reference_pts, reference_frames = sequential_decode(path)
    with VideoReader(path, threads=threads) as video:
        targets = parse_extract_method(method_text).target_pts(video.start_pts, video.end_pts, video.time_base)
        sampled = list(video.read_at(targets))
        assert (video.num_frames, video.start_pts) == (len(reference_pts), reference_pts[0])
        time_base, start = video.time_base, video.start_pts
    assert len(sampled) == len(targets)
    for target, frame in zip(targets, sampled):
        position = bisect.bisect_right(reference_pts, target) - 1
        assert frame.pts == reference_pts[position]
        assert np.array_equal(frame.rgb, reference_frames[position])
        assert frame.time_ms == pytest.approx(float((frame.pts - start) * time_base * 1000))
    return sampled


@pytest.mark.parametrize("method", ["uni_12", "uni_100", "fix_1", "fix_0.5", "fix_19.62", "fix_40"])
def test_sample_video_frames_equal_sequential_decode(method):
    assert_sampled_equal_sequential(SAMPLE_19FPS, method)


@pytest.mark.parametrize("method", ["uni_7", "uni_73", "fix_3", "fix_0.7", "fix_60"])
def test_variable_frame_rate_frames_equal_sequential_decode(tmp_path, method):
    path = write_clip(tmp_path / "vfr.mp4", num_frames=len(VFR_TIMES_MS), times_ms=VFR_TIMES_MS, gop=8)
    assert_sampled_equal_sequential(path, method)


def test_variable_frame_rate_picks_frame_on_screen(tmp_path):
    """Frames at 0, 20, 60, 130 ms...: at 100 ms the frame shown since 60 ms is on screen."""
    path = write_clip(tmp_path / "vfr.mp4", num_frames=len(VFR_TIMES_MS), times_ms=VFR_TIMES_MS, gop=8)
    with VideoReader(path) as video:
        ticks_per_ms = 1 / (1000 * video.time_base)
        frames = list(video.read_at([round(100 * ticks_per_ms), round(129 * ticks_per_ms), round(130 * ticks_per_ms)]))
    assert [frame.time_ms for frame in frames] == [60.0, 60.0, 130.0]


def test_index_duration_and_frame_count(tmp_path):
    path = write_clip(tmp_path / "cfr.mp4", num_frames=50, rate=25)
    with VideoReader(path) as video:
        assert video.num_frames == 50
        assert float((video.end_pts - video.start_pts) * video.time_base) == pytest.approx(2.0)
        assert video.fps == 25.0
    with VideoReader(SAMPLE_19FPS) as video:
        assert (video.num_frames, round(video.fps, 2)) == (355, 19.62)


def test_target_formulas():
    uni = parse_extract_method("uni_4")
    assert [float(t) for t in uni.target_offsets(Fraction(10))] == [1.25, 3.75, 6.25, 8.75]
    fix = parse_extract_method("fix_0.5")
    assert [float(t) for t in fix.target_offsets(Fraction(5))] == [0.0, 2.0, 4.0]
    assert len(parse_extract_method("fix_1").target_offsets(Fraction(3))) == 3


def test_pure_red_clip_is_red_in_rgb_order(tmp_path):
    path = write_clip(tmp_path / "red.mp4", num_frames=10, color=(255, 0, 0))
    with VideoReader(path) as video:
        frame = next(video.read_at([video.start_pts]))
    red, green, blue = frame.rgb[16:48, 16:80].reshape(-1, 3).mean(axis=0)
    assert red > 240 and green < 15 and blue < 15


@pytest.mark.parametrize(
    "name, options",
    [
        ("vp9.webm", dict(codec="libvpx-vp9")),
        ("mpeg4.avi", dict(codec="mpeg4")),
        ("h264.mkv", dict(codec="libx264")),
        ("hevc_10bit.mkv", dict(codec="libx265", pix_fmt="yuv420p10le")),
        ("h264_10bit.mp4", dict(codec="libx264", pix_fmt="yuv420p10le")),
        ("odd_size.mp4", dict(codec="libx264", pix_fmt="yuv444p", size=(97, 61))),
    ],
)
def test_formats(tmp_path, name, options):
    path = write_clip(tmp_path / name, num_frames=30, **options)
    sampled = assert_sampled_equal_sequential(path, "uni_5")
    width, height = options.get("size", (96, 64))
    assert sampled[0].rgb.shape == (height, width, 3) and sampled[0].rgb.dtype == np.uint8


def test_a_stream_whose_codec_is_unknown_fails_in_words(tmp_path):
    """Found by the fuzzing run: a damaged MKV header left a video stream without a codec, and the reader failed
    with a bare AttributeError."""
    data = write_clip(tmp_path / "a.mkv", num_frames=10).read_bytes()
    assert data.count(b"V_MPEG4/ISO/AVC") == 1
    unknown = tmp_path / "unknown.mkv"
    unknown.write_bytes(data.replace(b"V_MPEG4/ISO/AVC", b"V_ZZZZZ/ISO/ZZZ"))
    with pytest.raises(VideoError, match="^the video stream's codec is unknown"):
        VideoReader(unknown)


@pytest.mark.parametrize("encoding, text", [("gbk", "中文"), ("shift_jis", "日本")])
def test_tags_that_are_not_utf8_do_not_fail_a_good_video(tmp_path, encoding, text):
    """A GBK or Shift-JIS encoder tag (as older tools write in other locales): every frame decodes, equal to the
    same file's frames with a UTF-8 tag."""
    path = write_clip(tmp_path / "tagged.mp4", num_frames=12)
    _, expected = sequential_decode(path)
    data = path.read_bytes()
    assert data.count(b"Lavf") == 1 and len(text.encode(encoding)) == 4  # the muxer's encoder tag
    tagged = tmp_path / f"{encoding}.mp4"
    tagged.write_bytes(data.replace(b"Lavf", text.encode(encoding)))
    with pytest.raises(UnicodeDecodeError):
        b"Lavf".replace(b"Lavf", text.encode(encoding)).decode("utf-8")  # the tag is not UTF-8
    with VideoReader(tagged) as video:
        frames = [frame.rgb for frame in video.read_all()]
    assert len(frames) == 12 and all(np.array_equal(a, b) for a, b in zip(frames, expected))


@pytest.mark.parametrize("matrix, quarter_turns", [((0, 1, -1, 0), -1), ((-1, 0, 0, -1), 2), ((0, -1, 1, 0), 1)])
def test_rotation_metadata_is_applied(tmp_path, matrix, quarter_turns):
    """A portrait phone video (matrix 0 1 -1 0, "rotate 90") is turned clockwise, as FFmpeg's autorotate does.

    The reader's output was checked against the FFmpeg command line on files tagged rotate=90/180/270.
    """
    path = write_clip(tmp_path / "phone.mp4", num_frames=5, size=(96, 64), pix_fmt="yuv444p")
    _, (plain, *_) = sequential_decode(path)
    set_mp4_rotation(path, matrix)
    with VideoReader(path) as video:
        frame = next(video.read_at([video.start_pts]))
    assert np.array_equal(frame.rgb, np.rot90(plain, quarter_turns))


def test_sparse_sampling_decodes_only_from_keyframes(tmp_path, monkeypatch):
    """uni_3 on 300 frames with a keyframe every 30 decodes at most 3 GOPs, not the whole video."""
    path = write_clip(tmp_path / "long.mp4", num_frames=300, gop=30)
    decoded = count_decoded_frames(monkeypatch)
    frames = read_with(path, "uni_3")
    assert [frame.time_ms for frame in frames] == [2000, 6000, 10000]  # frames 50, 150, 250
    assert decoded[0] <= 3 * 30 + 3


def test_dense_sampling_is_one_pass(tmp_path, monkeypatch):
    path = write_clip(tmp_path / "long.mp4", num_frames=300, gop=30)
    decoded = count_decoded_frames(monkeypatch)
    frames = read_with(path, "fix_12.5")  # every other frame
    assert [frame.time_ms for frame in frames] == [80.0 * i for i in range(150)]
    assert decoded[0] <= 300


def read_with(path, method_text, decoders: int | None = None):
    with VideoReader(path, decoders=decoders) as video:
        targets = parse_extract_method(method_text).target_pts(video.start_pts, video.end_pts, video.time_base)
        return list(video.read_at(targets))


def count_decoded_frames(monkeypatch) -> list[int]:
    """Count the frames that come out of the decoders, on every decoding thread (a one-element list, updated in
    place)."""
    counter, lock = [0], threading.Lock()
    original = forward_decoder.ForwardDecoder.next_frame

    def counting_next(self):
        frame = original(self)
        with lock:
            counter[0] += frame is not None
        return frame

    monkeypatch.setattr(forward_decoder.ForwardDecoder, "next_frame", counting_next)
    return counter


def test_too_many_uni_frames_is_a_video_error(clip_extractor, tmp_path):
    path = write_clip(tmp_path / "short.mp4", num_frames=3)
    uni_4 = clip_extractor.config
    clip_extractor.config = uni_4.with_options(extract_method=parse_extract_method("uni_12"))
    try:
        with pytest.raises(VideoError, match="too short: 3 frames, fewer than the 12"):
            clip_extractor.extract(path)
    finally:
        clip_extractor.config = uni_4


# Streams where the reader lets the decoder drop non-reference frames (H.264, HEVC, MPEG-4 part 2 with B-frames),
# and where it cannot (no B-frames, VP9), open GOPs and variable frame rates.
SKIPPING_STREAMS = {
    "h264_b_pyramid.mp4": dict(codec_options={"x264-params": "bframes=3:b-pyramid=normal"}),
    "h264_no_b.mp4": dict(codec_options={"x264-params": "bframes=0"}),
    "h264_open_gop.mkv": dict(codec_options={"x264-params": "bframes=3:open-gop=1:keyint=30:min-keyint=30"}),
    "h264_annex_b.ts": dict(codec_options={"x264-params": "bframes=3:b-pyramid=normal"}),  # start codes, no avcC
    "hevc_b.mkv": dict(codec="libx265", codec_options={"x265-params": "log-level=error"}),
    "hevc_10bit_b.mkv": dict(codec="libx265", pix_fmt="yuv420p10le", codec_options={"x265-params": "log-level=error"}),
    "mpeg4_b.avi": dict(codec="mpeg4", b_frames=2),
    "vp9.webm": dict(codec="libvpx-vp9"),
    "vfr_b.mp4": dict(times_ms=VFR_TIMES_MS[:72]),
}


@pytest.fixture(scope="module")
def skipping_streams(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("skipping")
    return {name: write_clip(folder / name, num_frames=72, gop=36, noise=False, **options)
            for name, options in SKIPPING_STREAMS.items()}


@pytest.mark.parametrize("threads", [True, False], ids=["intervals_at_once", "one_thread"])
@pytest.mark.parametrize("name", SKIPPING_STREAMS)
def test_frames_taken_past_skipped_frames_equal_a_sequential_decode(skipping_streams, name, threads, monkeypatch):
    """With ``threads``, keyframe intervals are decoded at once, each on a decoder with frame threads. (fix_7 seeks
    into the MPEG-TS clip's last keyframe interval, where the demuxer lands past the keyframe.)"""
    parallel_reads = spy_on_parallel_reads(monkeypatch)
    methods = ("fix_0.5", "fix_1", "fix_4", "fix_7", "fix_12.5", "uni_5")
    for method in methods:
        assert_sampled_equal_sequential(skipping_streams[name], method, threads)
    assert len(parallel_reads) == (len(methods) if threads else 0)


def spy_on_parallel_reads(monkeypatch) -> list[tuple[int, int]]:
    """(decoders, intervals) of each read that decodes keyframe intervals at once."""
    reads = []
    original = video_module._ParallelIntervals.__init__

    def recording_init(self, reader, intervals, decoders, buffer_frames):
        original(self, reader, intervals, decoders, buffer_frames)
        reads.append((self._decoders, len(intervals)))

    monkeypatch.setattr(video_module._ParallelIntervals, "__init__", recording_init)
    return reads


def decoding_threads() -> list[str]:
    return [thread.name for thread in threading.enumerate() if thread.name.startswith("interval-decoder-")]


@pytest.fixture(scope="module")
def ten_intervals(tmp_path_factory) -> Path:
    return write_clip(tmp_path_factory.mktemp("intervals") / "ten.mp4", num_frames=120, gop=12, b_frames=2)


@pytest.mark.parametrize("decoders", [2, 3, 7])
def test_intervals_decoded_at_once_are_yielded_in_order(ten_intervals, decoders, monkeypatch):
    parallel_reads = spy_on_parallel_reads(monkeypatch)
    with VideoReader(ten_intervals, decoders=1) as video:
        targets = parse_extract_method("fix_3").target_pts(video.start_pts, video.end_pts, video.time_base)
        one_decoder = list(video.read_at(targets))
    with VideoReader(ten_intervals, decoders=decoders) as video:
        at_once = list(video.read_at(targets))
        intervals = len({video.index.keyframe_before(target) for target in targets})
    assert intervals >= 10 and parallel_reads == [(decoders, intervals)]
    assert [frame.pts for frame in at_once] == [frame.pts for frame in one_decoder]
    assert all(np.array_equal(a.rgb, b.rgb) for a, b in zip(at_once, one_decoder))
    assert not decoding_threads()


def test_intervals_larger_than_a_decoders_buffer_are_decoded_one_after_another(ten_intervals, monkeypatch):
    """Memory bound: 96x64 frames take 18,432 bytes; with room for 5 per decoder, intervals of 6 targets (fix_12.5
    on 25 fps, keyframes every 11 frames) go through one decoder, intervals of 2 or 3 (fix_5) through several."""
    monkeypatch.setattr(video_module, "DECODED_BYTES_PER_DECODER", 5 * 96 * 64 * 3)
    parallel_reads = spy_on_parallel_reads(monkeypatch)
    assert len(read_with(ten_intervals, "fix_12.5", decoders=2)) == 60
    assert parallel_reads == []
    assert len(read_with(ten_intervals, "fix_5", decoders=2)) == 24
    assert len(parallel_reads) == 1 and parallel_reads[0][1] >= 10


def test_an_error_in_a_later_interval_comes_after_the_frames_before_it(ten_intervals, monkeypatch):
    """The decoding threads fail in their own time; the consumer sees every frame before the failure, in order,
    then the error, and no thread is left behind."""
    original = forward_decoder.ForwardDecoder.frame_at
    with VideoReader(ten_intervals) as video:
        targets = parse_extract_method("fix_5").target_pts(video.start_pts, video.end_pts, video.time_base)

    def failing_at_the_seventh_interval(self, target, following=None):
        if target == targets[13]:
            raise VideoError("decoding failed (planted)")
        return original(self, target, following)

    monkeypatch.setattr(forward_decoder.ForwardDecoder, "frame_at", failing_at_the_seventh_interval)
    taken = []
    with VideoReader(ten_intervals, decoders=3) as video:
        with pytest.raises(VideoError, match="planted"):
            for frame in video.read_at(targets):
                taken.append(frame.pts)
    assert len(taken) == 13 and not decoding_threads()


def test_a_read_stopped_early_stops_its_decoding_threads(ten_intervals):
    with VideoReader(ten_intervals, decoders=3) as video:
        targets = parse_extract_method("fix_5").target_pts(video.start_pts, video.end_pts, video.time_base)
        frames = video.read_at(targets)
        next(frames)
        assert len(decoding_threads()) == 3
        frames.close()
        assert not decoding_threads()


@pytest.mark.parametrize("name, skipped", [("h264_b_pyramid.mp4", True), ("h264_annex_b.ts", True), ("hevc_b.mkv", True),
                                           ("mpeg4_b.avi", True), ("h264_no_b.mp4", False), ("vp9.webm", False)])
def test_non_reference_frames_between_samples_are_not_decoded(skipping_streams, monkeypatch, name, skipped):
    decoded = count_decoded_frames(monkeypatch)
    with VideoReader(skipping_streams[name], skip_unshown=False) as video:
        targets = parse_extract_method("fix_1").target_pts(video.start_pts, video.end_pts, video.time_base)
        everything = [frame.pts for frame in video.read_at(targets)]
    all_decoded, decoded[0] = decoded[0], 0
    with VideoReader(skipping_streams[name]) as video:
        assert [frame.pts for frame in video.read_at(targets)] == everything
    assert (decoded[0] < 0.8 * all_decoded) == skipped, (decoded[0], all_decoded)


def test_disposable_h264_packets_are_not_sent_to_the_decoder(skipping_streams, monkeypatch):
    """In MP4/MKV form, non-reference H.264 pictures between the frames taken never reach the decoder."""
    verdicts = []
    original = forward_decoder._disposable_h264
    monkeypatch.setattr(forward_decoder, "_disposable_h264", lambda *args: verdicts.append(original(*args)) or verdicts[-1])
    with VideoReader(skipping_streams["h264_b_pyramid.mp4"]) as video:
        targets = parse_extract_method("fix_1").target_pts(video.start_pts, video.end_pts, video.time_base)
        list(video.read_at(targets))
    assert verdicts.count(True) >= 10 and verdicts.count(False) >= 5, verdicts  # 72 frames, 3 taken
    with VideoReader(skipping_streams["h264_annex_b.ts"]) as video:
        assert forward_decoder._avcc_nal_length(video._stream) is None  # start codes: left to the decoder's skipping


def nal(kind: int, ref_idc: int, payload: bytes = b"\x88\x84", length_size: int = 4) -> bytes:
    body = bytes([(ref_idc << 5) | kind]) + payload
    return len(body).to_bytes(length_size, "big") + body


@pytest.mark.parametrize("packet, disposable", [
    (nal(9, 0) + nal(6, 0) + nal(1, 0), True),  # delimiter, SEI, a non-reference slice
    (nal(1, 0) + nal(1, 0), True),  # two slices of a non-reference picture
    (nal(1, 2), False),  # a reference picture
    (nal(5, 3), False),  # IDR
    (nal(1, 0) + nal(8, 3), False),  # a parameter set rides along: the decoder must see it
    (nal(9, 0) + nal(6, 0), False),  # no picture at all
    (nal(1, 0)[:-1], False),  # truncated
    (b"", False),
])
def test_disposable_h264_reads_every_nal_unit(packet, disposable):
    assert forward_decoder._disposable_h264(memoryview(packet), 4) is disposable


def test_disposable_h264_with_two_byte_lengths():
    assert forward_decoder._disposable_h264(memoryview(nal(6, 0, length_size=2) + nal(1, 0, length_size=2)), 2)
    assert not forward_decoder._disposable_h264(memoryview(nal(6, 0, length_size=2) + nal(1, 1, length_size=2)), 2)
