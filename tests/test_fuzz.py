"""A small fixed-seed fuzzing run (tests/fuzz.py): 30 mutations of clips in five containers and codecs, through the
command line with two workers."""
from __future__ import annotations

from tests.fuzz import MUTATIONS, base_clips, mutated_inputs, run_fuzz, summary


def test_every_damaged_input_ends_done_or_failed_with_a_reason_and_nothing_is_left_behind(tmp_path):
    sources = base_clips(tmp_path / "clips")
    inputs = mutated_inputs(sources, len(sources) * len(MUTATIONS), seed=0, folder=tmp_path / "inputs")
    report = run_fuzz(inputs, tmp_path, timeout_s=300)
    print(summary(report))
    assert report.exit_status in (0, 1), report.stderr[-3000:]
    assert report.unaccounted == 0 and report.tracebacks == 0, summary(report)
    assert not report.leftovers and not report.incomplete, summary(report)
    assert not report.bare_reasons, report.bare_reasons
    assert report.seconds < 240, summary(report)
