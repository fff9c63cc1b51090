from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# No test reads or writes the user's Hugging Face cache (read when huggingface_hub is imported, so set first).
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="video_features_hf_")
atexit.register(shutil.rmtree, os.environ["HF_HOME"], ignore_errors=True)

SAMPLE_19FPS = REPO / "sample" / "v_GGSY1Qvo990.mp4"  # 320x240, 19.62 fps, 355 frames
SAMPLE_30FPS = REPO / "sample" / "v_ZNVhz7ctTq0.mp4"  # 480x360, 30 fps, 420 frames


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """No test may touch the user's torch hub cache, or see another test's."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv("VIDEO_FEATURES_WEIGHTS_DIR", raising=False)


@pytest.fixture(scope="session")
def clip_checkpoint(tmp_path_factory) -> Path:
    """A random ViT-B/32 in OpenAI's release format (TorchScript archive, fp16 weights)."""
    from extractors.models.clip import CLIP_WEIGHTS

    return CLIP_WEIGHTS["CLIP-ViT-B/32"].write_random(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="session")
def clip_extractor(clip_checkpoint):
    from extractors import ExtractCLIP

    args = dict(feature_type="CLIP-ViT-B/32", cpu=True, clip_checkpoint=str(clip_checkpoint), extract_method="uni_4")
    return ExtractCLIP(args, external_call=True)
