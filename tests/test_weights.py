"""Checkpoint lookup: --weights_dir, the environment variable, the cache, a verified atomic download."""
from __future__ import annotations

import hashlib

import pytest

from io_utils.errors import UsageError
from io_utils.weights import WEIGHTS_DIR_ENV, Checkpoint, cache_dir, resolve_checkpoint


def checkpoint_for(tmp_path, payload: bytes = b"weights", sha256: str | None = None) -> Checkpoint:
    source = tmp_path / "server" / "model-1234.pt"
    source.parent.mkdir(exist_ok=True)
    source.write_bytes(payload)
    return Checkpoint(source.as_uri(), sha256 or hashlib.sha256(payload).hexdigest())


def test_weights_dir_then_env_then_cache(tmp_path, monkeypatch):
    checkpoint = checkpoint_for(tmp_path)
    local = tmp_path / "local"
    local.mkdir()
    (local / "model-1234.pt").write_bytes(b"local copy")
    assert resolve_checkpoint(checkpoint, local) == local / "model-1234.pt"
    monkeypatch.setenv(WEIGHTS_DIR_ENV, str(local))
    assert resolve_checkpoint(checkpoint) == local / "model-1234.pt"


def test_download_is_verified_and_cached(tmp_path):
    checkpoint = checkpoint_for(tmp_path)
    path = resolve_checkpoint(checkpoint)
    assert path == cache_dir() / "model-1234.pt" and path.read_bytes() == b"weights"
    (tmp_path / "server" / "model-1234.pt").unlink()  # the second lookup must not download
    assert resolve_checkpoint(checkpoint) == path


def test_wrong_hash_leaves_nothing_behind(tmp_path):
    checkpoint = checkpoint_for(tmp_path, sha256="0" * 64)
    with pytest.raises(UsageError, match="expected 0000"):
        resolve_checkpoint(checkpoint)
    assert list(cache_dir().iterdir()) == []


def test_offline_error_is_one_line_naming_file_url_and_where_to_put_it(tmp_path):
    checkpoint = Checkpoint("http://127.0.0.1:9/clip/ViT-B-32.pt", "0" * 64)
    with pytest.raises(UsageError) as caught:
        resolve_checkpoint(checkpoint)
    message = str(caught.value)
    assert "\n" not in message
    for part in ("ViT-B-32.pt", checkpoint.url, str(cache_dir()), "--weights_dir", WEIGHTS_DIR_ENV):
        assert part in message
    assert list(cache_dir().iterdir()) == []
