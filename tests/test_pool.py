"""The worker pool: equal results whatever the worker count, resume, concurrent runs, crashes, interrupts."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path, PurePath
from types import SimpleNamespace

import pytest

import main
from extractors.cli import parse_options
from extractors.config import output_layout, resolve_config
from extractors.pool import STOP_GRACE_S, LocalPoolExecutor
from extractors.runner import run
from extractors.scheduling import Assign
from extractors.worker import _ENDING, Extraction, _Worker
from io_utils.claims import Claim, outputs_complete
from io_utils.video_list import VideoJob
from tests.checkpoints import write_tiny_clip
from tests.clips import write_clip
from tests.conftest import REPO
from tests.poison import die_on_poison

FEATURE_FOLDER = "CLIP-ViT-B_32"


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    return write_tiny_clip(tmp_path_factory.mktemp("tiny") / "tiny.pt")


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> list[Path]:
    """Sixteen clips that take about a second each to extract with fix_25."""
    folder = tmp_path_factory.mktemp("videos")
    return [write_clip(folder / f"clip{i:02d}.mp4", num_frames=150, size=(320, 240), gop=25, noise=False)
            for i in range(16)]


def argv(checkpoint: Path, videos: list[Path], out: Path, *extra: str) -> list[str]:
    return ["--feature_type", "CLIP-ViT-B/32", "--cpu", "--clip_checkpoint", str(checkpoint), "--extract_method",
            "fix_25", "--on_extraction", "save_numpy", "--output_path", str(out), "--video_paths",
            *map(str, videos), *extra]


def start_run(checkpoint: Path, videos: list[Path], out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "main.py", *argv(checkpoint, videos, out, *extra)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    stdout, stderr = process.communicate(timeout=300)
    return process.returncode, stdout, stderr


def summary_counts(stdout: str) -> dict[str, int]:
    """``done: 3, skipped: 1, failed: 0`` -> {"done": 3, "skipped": 1, "failed": 0}."""
    line = stdout.strip().splitlines()[-1]
    return {name: int(value) for name, value in (part.split(": ") for part in line.split(", "))}


def output_state(out: Path) -> dict[str, bytes]:
    """Every output file's bytes; the manifest is left out (it records how long each video took)."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != "manifest.json"}


def main_outputs(out: Path) -> list[Path]:
    return sorted((out / FEATURE_FOLDER).glob("*_clip.npy"))


def wait_for_outputs(out: Path, count: int, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while len(main_outputs(out)) < count:
        assert process.poll() is None, "the run ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.02)


def children_of(pid: int) -> list[int]:
    """Worker processes of a run (its spawned children that are not multiprocessing's resource tracker)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == pid and b"resource_tracker" not in cmdline:
            found.append(int(stat.parent.name))
    return found


def assert_no_partial_files(out: Path) -> None:
    """Every visible output loads; no temporary or lock file is left."""
    leftovers = [p.name for p in out.rglob("*") if p.name.endswith((".tmp", ".lock", ".new")) or ".stale-" in p.name]
    assert leftovers == []
    for path in (out / FEATURE_FOLDER).glob("*.npy"):
        assert outputs_complete([path]), path


def test_two_workers_write_exactly_what_one_writes(tiny_checkpoint, videos, tmp_path):
    assert main.main(argv(tiny_checkpoint, videos[:6], tmp_path / "one")) == 0
    assert main.main(argv(tiny_checkpoint, videos[:6], tmp_path / "two", "--num_workers", "2")) == 0
    one, two = output_state(tmp_path / "one"), output_state(tmp_path / "two")
    assert len(one) == 18 and one == two


def test_killed_run_leaves_no_truncated_output_and_resumes(tiny_checkpoint, videos, tmp_path):
    out = tmp_path / "out"
    process = start_run(tiny_checkpoint, videos, out)
    wait_for_outputs(out, 2, process)
    workers = children_of(process.pid)
    os.kill(process.pid, signal.SIGKILL)
    for worker in workers:
        os.kill(worker, signal.SIGKILL)
    process.communicate(timeout=60)
    completed = {p: p.stat().st_mtime_ns for p in main_outputs(out)}
    assert 2 <= len(completed) < len(videos)
    for path in (out / FEATURE_FOLDER).glob("*.npy"):  # temporaries and a stale lock may remain, never a bad file
        assert outputs_complete([path]), path

    code, stdout, stderr = finish(start_run(tiny_checkpoint, videos, out))
    assert code == 0, stderr
    counts = summary_counts(stdout)
    assert counts["skipped"] == len(completed) and counts["done"] == len(videos) - len(completed)
    assert all(path.stat().st_mtime_ns == mtime for path, mtime in completed.items())  # not redone
    assert len(main_outputs(out)) == len(videos)
    assert_no_partial_files(out)


def test_two_concurrent_runs_extract_each_video_once(tiny_checkpoint, videos, tmp_path):
    out = tmp_path / "out"
    first, second = start_run(tiny_checkpoint, videos, out), start_run(tiny_checkpoint, videos, out)
    results = [finish(first), finish(second)]
    assert [code for code, _, _ in results] == [0, 0], results
    counts = [summary_counts(stdout) for _, stdout, _ in results]
    assert counts[0]["done"] + counts[1]["done"] == len(videos)
    assert counts[0]["skipped"] + counts[1]["skipped"] == len(videos)
    assert len(main_outputs(out)) == len(videos)
    assert_no_partial_files(out)


def test_corrupt_output_is_extracted_again_and_overwrite_redoes_all(tiny_checkpoint, videos, tmp_path, capsys):
    out = tmp_path / "out"
    assert main.main(argv(tiny_checkpoint, videos[:3], out)) == 0
    good = output_state(out)
    victim = main_outputs(out)[1]
    victim.write_bytes(victim.read_bytes()[:100])
    capsys.readouterr()
    assert main.main(argv(tiny_checkpoint, videos[:3], out)) == 0
    assert summary_counts(capsys.readouterr().out) == {"done": 1, "skipped": 2, "failed": 0}
    assert output_state(out) == good
    assert main.main(argv(tiny_checkpoint, videos[:3], out, "--overwrite")) == 0
    assert summary_counts(capsys.readouterr().out) == {"done": 3, "skipped": 0, "failed": 0}


def dies_on_poison(extraction, device, threads, connection):
    """A worker process that is killed when it starts on poison.mp4."""
    from extractors import worker

    die_on_poison()
    worker.worker_main(extraction, device, threads, connection)


def test_a_video_that_kills_its_worker_is_reported_and_the_run_completes(tiny_checkpoint, videos, tmp_path, capsys):
    poison = write_clip(tmp_path / "poison.mp4", num_frames=10)
    out = tmp_path / "out"
    config = resolve_config(parse_options(argv(tiny_checkpoint, [videos[0], poison, *videos[1:3]], out)))
    assert run(config, LocalPoolExecutor(worker_target=dies_on_poison)) == 1
    captured = capsys.readouterr()
    assert summary_counts(captured.out) == {"done": 3, "skipped": 0, "failed": 1}
    assert f"FAILED {poison}: the worker process died (killed by SIGKILL), 2 times on this video" in captured.err
    failures = (out / FEATURE_FOLDER / "failures.tsv").read_text().splitlines()
    assert failures[0] == "path\treason" and failures[1].startswith(f"{poison}\tthe worker process died")
    assert len(main_outputs(out)) == 3


ILLEGAL_ACCESS = "CUDA error: an illegal memory access was encountered"


def device_breaks_on_clip01(extraction, device, threads, connection):
    """A worker whose device breaks on clip01.mp4 as a CUDA context does after an illegal memory access: that
    batch and every later call fail, and the device check after the failed video says so."""
    from extractors import worker
    from extractors.base import BaseExtractor

    run_batch, open_sink, current, broken = BaseExtractor._run_batch, worker._Worker._sink, [""], []

    def note_video(self, assigned, name):
        current[0] = assigned.job.path.name
        return open_sink(self, assigned, name)

    def run_or_fail(self, *batch):
        if current[0] == "clip01.mp4" or broken:
            broken.append(True)
            raise RuntimeError(ILLEGAL_ACCESS)
        return run_batch(self, *batch)

    worker._Worker._sink, BaseExtractor._run_batch = note_video, run_or_fail
    worker.device_problem = lambda device: f"AcceleratorError: {ILLEGAL_ACCESS}" if broken else None
    worker.worker_main(extraction, device, threads, connection)


def test_a_worker_whose_device_breaks_is_replaced_and_only_that_video_fails(tiny_checkpoint, videos, tmp_path,
                                                                           capsys):
    out = tmp_path / "out"
    config = resolve_config(parse_options(argv(tiny_checkpoint, videos[:4], out)))
    assert run(config, LocalPoolExecutor(worker_target=device_breaks_on_clip01)) == 1
    assert summary_counts(capsys.readouterr().out) == {"done": 3, "skipped": 0, "failed": 1}
    failures = (out / FEATURE_FOLDER / "failures.tsv").read_text().splitlines()[1:]
    assert failures == [f"{videos[1]}\tRuntimeError: {ILLEGAL_ACCESS} (then cpu failed a check: AcceleratorError: "
                        f"{ILLEGAL_ACCESS}; its worker was replaced)"]
    assert len(main_outputs(out)) == 3
    assert_no_partial_files(out)


def test_a_worker_ending_while_its_decoding_thread_claims_leaves_no_lock(tiny_checkpoint, videos, tmp_path):
    """The decoding thread may be handed a video as the worker ends (its device broke): the claim it takes then
    is released by itself, and the video is not answered, so the scheduler gives it to the next worker."""
    config = resolve_config(parse_options(argv(tiny_checkpoint, videos[:1], tmp_path / "out")))
    member = SimpleNamespace(feature_type=config.feature_type, config=config, layout=output_layout(config))
    worker = _Worker(SimpleNamespace(members=[member]), connection=None)
    job = VideoJob(videos[0], PurePath(videos[0].stem))
    outputs = worker.outputs[config.feature_type]
    take = outputs.claim
    outputs.claim = lambda job: (take(job), worker._stopped.set())[0]  # the worker ends meanwhile
    assert worker._claim(Assign(0, job)) is _ENDING
    assert worker._claim(Assign(1, job)) is _ENDING
    assert list((tmp_path / "out").rglob("*.lock")) == []


def test_a_claimer_killed_midway_leaves_no_lock_that_keeps_the_video_away(tmp_path):
    """A process that dies while taking a claim (here: after writing the token, before it is in place) leaves
    no lock file; an empty one would keep every run away from the video for HEARTBEAT_S."""
    lock = tmp_path / "clip.npy.lock"
    dies_midway = ("import os, sys; from pathlib import Path; from io_utils.claims import Claim; "
                   "os.link = lambda *_: os._exit(9); Claim.acquire(Path(sys.argv[1]))")
    assert subprocess.run([sys.executable, "-c", dies_midway, str(lock)], cwd=REPO).returncode == 9
    assert not lock.exists()
    [draft] = tmp_path.glob("clip.npy.lock.*.new")  # what it left: its token, never under the lock's name
    os.utime(draft, (time.time() - 60, time.time() - 60))
    claim = Claim.acquire(lock)
    assert claim is not None and Claim.acquire(lock) is None
    assert not draft.exists()  # a draft older than any live claimer's is removed by the next claim
    claim.release()
    assert not lock.exists()


SIGTERM_IN_A_FINALIZER = """
import os, signal, sys, threading, time
from extractors import worker

def serve(*_):
    def slow_to_close():
        try:
            yield
        finally:
            time.sleep(5)
    generator = slow_to_close()
    next(generator)
    threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM)).start()
    del generator  # closed by its finalizer, where the SIGTERM lands
    print("went on")

worker.serve = serve
worker.worker_main(None, "cpu", 0, None)
"""


def test_a_sigterm_in_a_finalizer_ends_the_worker_quietly():
    """Python prints an exception raised in a finalizer and goes on: a worker stopped there must end, and say
    nothing (the scheduler stops workers with SIGTERM when a run ends early)."""
    result = subprocess.run([sys.executable, "-c", SIGTERM_IN_A_FINALIZER], cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert (result.returncode, result.stdout, result.stderr) == (128 + signal.SIGTERM, "", "")


@pytest.mark.parametrize("sent_signal", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_stops_cleanly_and_a_rerun_resumes(tiny_checkpoint, videos, tmp_path, sent_signal):
    out = tmp_path / "out"
    process = start_run(tiny_checkpoint, videos, out)
    wait_for_outputs(out, 1, process)
    sent_at = time.monotonic()
    if sent_signal == signal.SIGINT:
        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C reaches the whole process group
    else:
        os.kill(process.pid, signal.SIGTERM)
    code, _, stderr = finish(process)
    assert time.monotonic() - sent_at < STOP_GRACE_S + 3
    assert code == 130, stderr
    assert "Traceback" not in stderr
    assert_no_partial_files(out)
    done_before = len(main_outputs(out))
    code, stdout, stderr = finish(start_run(tiny_checkpoint, videos, out))
    assert code == 0, stderr
    assert summary_counts(stdout) == {"done": len(videos) - done_before, "skipped": done_before, "failed": 0}


def stuck_in_forward(extraction, device, threads, connection):
    """A worker whose second batch never returns and that SIGTERM does not stop, as inside a long forward pass
    (where Python runs no signal handler)."""
    from extractors import worker
    from extractors.base import BaseExtractor

    worker._exit_on_sigterm = signal.SIG_IGN
    run_batch, calls = BaseExtractor._run_batch, []

    def hang_on_the_second_batch(self, *batch):
        calls.append(1)
        if len(calls) == 2:
            time.sleep(3600)
        return run_batch(self, *batch)

    BaseExtractor._run_batch = hang_on_the_second_batch
    worker.worker_main(extraction, device, threads, connection)


def test_an_interrupt_ends_a_run_within_seconds_even_in_a_long_forward_pass(tiny_checkpoint, videos, tmp_path):
    """The worker is killed after the grace period; the main process removes its temporary file and its claim."""
    out = tmp_path / "out"
    config = resolve_config(parse_options(argv(tiny_checkpoint, videos[:1], out)))
    executor = LocalPoolExecutor(worker_target=stuck_in_forward)
    progress: list[tuple] = []

    def interrupt_once_started(report):
        progress.append((report, time.monotonic()))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        executor.run(Extraction.of(config), [VideoJob(videos[0], PurePath(videos[0].stem))], lambda result: None,
                     interrupt_once_started)
    report, reported_at = progress[0]
    stopped_after = time.monotonic() - reported_at
    assert report.job_id == 0 and 0 < report.done_s < report.total_s == pytest.approx(6.0)  # 150 frames at 25 fps
    assert STOP_GRACE_S <= stopped_after < STOP_GRACE_S + 2
    assert [path.name for path in out.rglob("*") if path.is_file()] == []
