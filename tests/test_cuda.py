"""CUDA against the CPU, for every feature type (``pytest -m cuda`` on a machine with a GPU; skipped without one).

Random weights in the official formats, the 19.62 fps sample (it has an audio track for the audio models), each
feature type with its default options (those it cannot run without at their example). On CUDA some models run in
fp16 (OpenAI's CLIP weights are fp16) and the kernels differ, so the features are compared by the cosine of each
row with the CPU's: at least 0.999, and the same timestamps.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from extractors import extractor_class, feature_types
from extractors.catalog import default_config, write_random_weights
from tests.conftest import SAMPLE_19FPS

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="compares CUDA with the CPU: needs CUDA")]


def row_cosines(expected: np.ndarray, got: np.ndarray) -> np.ndarray:
    """The cosine of each row (everything after the first axis flattened) of ``got`` with ``expected``'s."""
    a, b = expected.reshape(len(expected), -1).astype(np.float64), got.reshape(len(got), -1).astype(np.float64)
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)


def features_on(device: dict, name: str, options: dict, weights: Path) -> dict[str, np.ndarray]:
    extractor = extractor_class(name)({**options, **device, "feature_type": name, "weights_dir": str(weights)},
                                      external_call=True)
    return extractor.extract(SAMPLE_19FPS)


@pytest.mark.parametrize("name", feature_types())
def test_cuda_features_equal_the_cpus(name, tmp_path):
    options = {key: value for key, value in default_config(name).given().items() if key != "feature_type"}
    write_random_weights(name, tmp_path, **options)
    on_cpu = features_on({"cpu": True}, name, options, tmp_path)
    on_cuda = features_on({"device_ids": [0]}, name, options, tmp_path)
    assert sorted(on_cuda) == sorted(on_cpu)
    np.testing.assert_array_equal(on_cuda["timestamps_ms"], on_cpu["timestamps_ms"])
    for key, expected in on_cpu.items():
        if key not in ("fps", "timestamps_ms"):
            assert on_cuda[key].shape == expected.shape, key
            assert row_cosines(expected, on_cuda[key]).min() >= 0.999, key
