"""The stall watchdog with the local pool: an input whose reads block (a URL whose server stops sending, a named
pipe whose writer stops writing), a model that hangs, a worker that stops answering; and pipes as inputs. The Ray
backend's stalls and lost capacity are in tests/test_ray.py."""
from __future__ import annotations

import os
import re
import shutil
import threading
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

import main
from extractors.cli import parse_options
from extractors.config import resolve_config
from extractors.pool import LocalPoolExecutor
from extractors.runner import run
from tests.checkpoints import write_tiny_clip
from tests.clips import write_clip
from tests.storage import http_server
from tests.test_pool import assert_no_partial_files

FOLDER = "CLIP-ViT-B_32"
TIMEOUT_S = 3


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("stall_clips")
    return [write_clip(folder / f"clip{i}.mp4", num_frames=50, size=(160, 120), gop=10) for i in range(3)]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_tiny_clip(tmp_path_factory.mktemp("stall_tiny") / "tiny.pt")


def argv(checkpoint: Path, out: Path, inputs: list, *extra: str) -> list[str]:
    return ["--feature_type", "CLIP-ViT-B/32", "--cpu", "--checkpoint", str(checkpoint), "--extract_method", "fix_5",
            "--on_extraction", "save_numpy", "--output_path", str(out), "--stall_timeout", str(TIMEOUT_S),
            "--video_paths", *map(str, inputs), *extra]


def failures(out: Path) -> dict[str, str]:
    lines = (out / FOLDER / "failures.tsv").read_text().splitlines()[1:]
    return dict(line.split("\t") for line in lines)


def stalled_seconds(reason: str) -> int:
    match = re.match(r"stalled for (\d+) s", reason)
    assert match, reason
    return int(match[1])


def same_features(out: Path, reference: Path, names: list[str]) -> bool:
    return all(np.array_equal(np.load(out / FOLDER / f"{name}_clip.npy"), np.load(reference / FOLDER / f"{name}_clip.npy"))
               for name in names)


@pytest.fixture
def pipe(tmp_path) -> Iterator[tuple[Path, threading.Event]]:
    """A named pipe and the event that lets its writer go; the writer is started by :func:`write_into`."""
    path = tmp_path / "piped.mp4"
    os.mkfifo(path)
    release = threading.Event()
    yield path, release
    release.set()


def write_into(pipe: Path, data: bytes, release: threading.Event, stop_after: int | None = None) -> None:
    """Write ``data`` into ``pipe`` from a thread; with ``stop_after``, only that many bytes, then keep the pipe open
    without writing until ``release`` is set."""
    def writer():
        try:
            with open(pipe, "wb") as handle:
                handle.write(data[:stop_after])
                handle.flush()
                if stop_after is not None:
                    release.wait(120)
        except BrokenPipeError:
            pass  # the reader was killed

    threading.Thread(target=writer, daemon=True).start()


def test_inputs_whose_reads_block_fail_as_stalled_and_the_others_complete(clips, checkpoint, tmp_path, pipe):
    """A URL whose server stops sending halfway and a pipe whose writer stops writing halfway, beside two good
    videos, with two workers: both fail as stalled about ``TIMEOUT_S`` after the reads stop, the good ones are
    extracted as in a run without them, and nothing partial is left."""
    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(clips[0], served / "stalls.mp4")
    fifo, release = pipe
    write_into(fifo, clips[1].read_bytes(), release, stop_after=clips[1].stat().st_size // 2)
    out, reference = tmp_path / "out", tmp_path / "reference"
    with http_server(served) as server:
        server.stalls = "/stalls"
        url = f"{server.url}/stalls.mp4"
        started = time.monotonic()
        code = main.main(argv(checkpoint, out, [clips[2], url, fifo, clips[0]], "--num_workers", "2"))
        elapsed = time.monotonic() - started
    assert code == 1
    reasons = failures(out)
    assert sorted(reasons) == sorted([url, str(fifo)])
    assert re.fullmatch(r"stalled for \d+ s at fetching bytes 0-\d+ of the input", reasons[url])
    assert re.fullmatch(r"stalled for \d+ s at reading the input \([\d,]+ bytes so far\)", reasons[str(fifo)])
    assert all(TIMEOUT_S <= stalled_seconds(reason) <= TIMEOUT_S + 2 for reason in reasons.values())
    assert elapsed < 60
    assert_no_partial_files(out)
    # Two workers as above, so each runs the model on one thread: a worker of two threads sums in another order
    # (and, on a loaded machine, the math library may use fewer threads than it is given).
    assert main.main(argv(checkpoint, reference, [clips[2], clips[0]], "--num_workers", "2")) == 0
    assert same_features(out, reference, ["clip2", "clip0"])


def hangs_on_clip1(extraction, device, threads, connection):
    """A worker whose model never returns from its first batch of clip1.mp4 (a device that hangs)."""
    from extractors import worker
    from extractors.base import BaseExtractor

    run_batch = BaseExtractor._run_batch

    def hang(self, *batch):
        if self_video[0] == "clip1.mp4":
            time.sleep(3600)
        return run_batch(self, *batch)

    self_video = [""]
    open_sink = worker._Worker._sink

    def note_video(self, assigned, name):
        self_video[0] = assigned.job.path.name
        return open_sink(self, assigned, name)

    worker._Worker._sink, BaseExtractor._run_batch = note_video, hang
    worker.worker_main(extraction, device, threads, connection)


def test_a_model_that_hangs_fails_its_video_and_a_new_worker_does_the_rest(clips, checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    config = resolve_config(parse_options(argv(checkpoint, out, clips)))
    assert run(config, LocalPoolExecutor(worker_target=hangs_on_clip1)) == 1
    assert capsys.readouterr().out.strip().splitlines()[-1] == "done: 2, skipped: 0, failed: 1"
    reason = failures(out)[str(clips[1])]
    assert re.fullmatch(r"stalled for \d+ s at running the model \(0\.000 s into the stream\)", reason)
    assert TIMEOUT_S <= stalled_seconds(reason) <= TIMEOUT_S + 2
    assert_no_partial_files(out)


def silent_worker(extraction, device, threads, connection):
    """A worker that never reports (as when a C library holds the interpreter's lock)."""
    from extractors import worker

    worker._Worker._report = lambda self, every_s: None
    worker.worker_main(extraction, device, threads, connection)


def test_a_worker_that_says_nothing_while_stuck_is_killed_after_the_grace(clips, checkpoint, tmp_path, capsys):
    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(clips[0], served / "stalls.mp4")
    out = tmp_path / "out"
    with http_server(served) as server:
        server.stalls = "/stalls"
        url = f"{server.url}/stalls.mp4"
        config = resolve_config(parse_options(argv(checkpoint, out, [url, clips[2]])))
        assert run(config, LocalPoolExecutor(worker_target=silent_worker)) == 1
    assert capsys.readouterr().out.strip().splitlines()[-1] == "done: 1, skipped: 0, failed: 1"
    reason = failures(out)[url]
    assert reason.endswith("s: its worker stopped responding")
    assert TIMEOUT_S + 10 <= stalled_seconds(reason) <= TIMEOUT_S + 13


def test_a_named_pipe_is_read_whole_and_gives_the_file_s_features(clips, checkpoint, tmp_path, pipe):
    fifo, release = pipe
    write_into(fifo, clips[1].read_bytes(), release)
    out, reference = tmp_path / "out", tmp_path / "reference"
    assert main.main(argv(checkpoint, out, [fifo])) == 0
    assert main.main(argv(checkpoint, reference, [clips[1]])) == 0
    assert np.array_equal(np.load(out / FOLDER / "piped_clip.npy"), np.load(reference / FOLDER / "clip1_clip.npy"))
    assert np.array_equal(np.load(out / FOLDER / "piped_timestamps_ms.npy"),
                          np.load(reference / FOLDER / "clip1_timestamps_ms.npy"))
