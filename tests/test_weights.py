"""Checkpoint lookup: --weights_dir, the environment variable, the cache, a verified atomic download; weights
tables with their default named."""
from __future__ import annotations

import hashlib

import pytest
import torch

from extractors.weights import Weights, WeightsTable
from io_utils.checkpoints import WEIGHTS_DIR_ENV, cache_dir, resolve_checkpoint, sha256_in_file_name
from io_utils.errors import UsageError
from io_utils.hub import check_downloaded, hub_file


def checkpoint_for(tmp_path, payload: bytes = b"weights", sha256: str | None = None) -> Weights:
    source = tmp_path / "server" / "model-1234.pt"
    source.parent.mkdir(exist_ok=True)
    source.write_bytes(payload)
    return Weights("test", source.as_uri(), sha256 or hashlib.sha256(payload).hexdigest(), build=torch.nn.Identity)


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
    checkpoint = Weights("test", "http://127.0.0.1:9/clip/ViT-B-32.pt", "0" * 64, build=torch.nn.Identity)
    with pytest.raises(UsageError) as caught:
        resolve_checkpoint(checkpoint)
    message = str(caught.value)
    assert "\n" not in message
    for part in ("ViT-B-32.pt", checkpoint.url, str(cache_dir()), "--weights_dir", WEIGHTS_DIR_ENV):
        assert part in message
    assert list(cache_dir().iterdir()) == []


def test_a_torch_hub_file_name_gives_the_sha256_prefix_and_any_other_is_a_clear_error():
    assert sha256_in_file_name("https://download.pytorch.org/models/resnet18-f37072fd.pth") == "f37072fd"
    with pytest.raises(ValueError, match="model.pth: the file name does not end in -<SHA-256 prefix>"):
        sha256_in_file_name("https://example.org/model.pth")


def test_a_download_without_a_published_digest_is_kept_and_its_digest_printed(tmp_path, capsys):
    checkpoint = checkpoint_for(tmp_path)
    unpinned = Weights("test", checkpoint.url, None, build=torch.nn.Identity)
    assert resolve_checkpoint(unpinned).read_bytes() == b"weights"
    assert hashlib.sha256(b"weights").hexdigest() in capsys.readouterr().err


def test_a_weights_table_names_its_default_and_refuses_unknown_names_with_the_choices():
    first, second = (Weights(name, f"https://example.org/{name}.pt", None, build=torch.nn.Identity)
                     for name in ("first", "second"))
    table = WeightsTable([first, second], default="second", aliases={"short": "first", "elsewhere": "third"})
    assert table.choose(None, "toy") is second and table.choose("short", "toy") is first
    assert table.names() == ["second", "first", "short"]  # an alias of an entry that is not here is dropped
    with pytest.raises(UsageError, match="--weights third: not available for toy; choose one of second, first, short"):
        table.choose("third", "toy")
    with pytest.raises(ValueError, match="default weights 'third' are not among first, second"):
        WeightsTable([first, second], default="third")


def test_a_downloaded_hub_file_is_checked_against_its_published_sha256(tmp_path):
    """The hub cache names a large file's blob by the SHA-256 the hub publishes: a blob whose content differs is
    deleted with one line; a small file (named by its git hash) has no published digest to check."""
    blobs, snapshot = tmp_path / "blobs", tmp_path / "snapshots" / "revision"
    blobs.mkdir()
    snapshot.mkdir(parents=True)
    for name, content, blob_content in [("good.safetensors", b"weights", b"weights"),
                                        ("bad.safetensors", b"published", b"rewritten"),
                                        ("config.json", b"{}", b"{}")]:
        blob_name = hashlib.sha256(content).hexdigest() if name.endswith(".safetensors") else "a" * 40
        (blobs / blob_name).write_bytes(blob_content)
        (snapshot / name).symlink_to(blobs / blob_name)
    check_downloaded(snapshot / "good.safetensors", "org/repo/good.safetensors")
    check_downloaded(snapshot / "config.json", "org/repo/config.json")
    with pytest.raises(UsageError, match=r"^org/repo/bad.safetensors: the downloaded file has SHA-256 [0-9a-f]{64}, "
                                         r"the hub published [0-9a-f]{64}; it was deleted"):
        check_downloaded(snapshot / "bad.safetensors", "org/repo/bad.safetensors")
    assert not (snapshot / "bad.safetensors").resolve().exists() and (snapshot / "good.safetensors").resolve().exists()


def test_an_unreachable_hub_is_one_line_at_once(tmp_path, monkeypatch):
    """Not cached and the hub's name does not resolve: the message comes at once, not after huggingface_hub's
    retries (about 20 s per file, with a warning per try)."""
    import time

    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "https://hub.invalid")
    for proxy in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    start = time.perf_counter()
    with pytest.raises(UsageError, match=r"^model x: model.safetensors of https://hub.invalid/org/repo is not in the "
                                         r"Hugging Face cache \(.*\) and could not be downloaded \(hub.invalid does "
                                         r"not resolve: "):
        hub_file("org/repo", ("model.safetensors",), tmp_path, "model x")
    assert time.perf_counter() - start < 5
