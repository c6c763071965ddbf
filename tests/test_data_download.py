"""Downloads against a local HTTP server on 127.0.0.1: no real network, ever."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import socket
import threading
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from handgrad.data import DataError, download_mnist, find_mnist, load_mnist, payload_sha256
from handgrad.data import mnist as mnist_mod
from handgrad.data.mnist import MNIST_FILES
from tests.conftest import umask
from tests.test_data_idx import write_fake_mnist


class FakeMirrors:
    """Serves ``routes[path] = (status, body)`` and logs every requested path."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, bytes]] = {}
        self.requests: list[str] = []
        mirrors = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                mirrors.requests.append(self.path)
                status, body = mirrors.routes.get(self.path, (404, b"not found"))
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # keep test output clean

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        # A short poll interval makes shutdown() quick.
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def serve(self, prefix: str, files: dict[str, bytes]) -> str:
        """Serve ``files`` under ``/prefix/``; returns that mirror's base URL."""
        for name, body in files.items():
            self.routes[f"/{prefix}/{name}"] = (200, body)
        return f"{self.base}/{prefix}/"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """urllib honours *_proxy variables; requests must go straight to 127.0.0.1."""
    for scheme in ("http", "https", "all"):
        monkeypatch.delenv(f"{scheme}_proxy", raising=False)
        monkeypatch.delenv(f"{scheme.upper()}_PROXY", raising=False)
    monkeypatch.setenv("no_proxy", "*")


@pytest.fixture
def server() -> Iterator[FakeMirrors]:
    mirrors = FakeMirrors()
    yield mirrors
    mirrors.close()


@pytest.fixture
def fake_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, bytes]:
    """Small fake MNIST .gz files; MNIST_SHA256 patched to their payload hashes."""
    source = tmp_path / "source"
    write_fake_mnist(source)
    files = {name: (source / name).read_bytes() for name in MNIST_FILES}
    hashes = {name: payload_sha256(source / name) for name in MNIST_FILES}
    monkeypatch.setattr(mnist_mod, "MNIST_SHA256", hashes)
    return files


def payload_sha256_bytes(blob: bytes) -> str:
    return hashlib.sha256(gzip.decompress(blob)).hexdigest()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/mnist/"  # nothing listens there any more


def test_good_download_lands_atomically(
    server: FakeMirrors, fake_files: dict[str, bytes], tmp_path: Path
) -> None:
    mirror = server.serve("m1", fake_files)
    dest = download_mnist(tmp_path / "dest", mirrors=[mirror], timeout=5)
    assert sorted(p.name for p in dest.iterdir()) == sorted(MNIST_FILES)  # no temp files
    for name, body in fake_files.items():
        assert (dest / name).read_bytes() == body
    np.testing.assert_array_equal(load_mnist(dest).x_train, load_mnist(tmp_path / "source").x_train)
    # Files already there with the right hash are not fetched again.
    server.requests.clear()
    download_mnist(dest, mirrors=[mirror], timeout=5)
    assert server.requests == []


@pytest.mark.parametrize("mask", [0o022, 0o027], ids=oct)
def test_downloaded_files_have_the_mode_a_plain_open_gives(
    server: FakeMirrors, fake_files: dict[str, bytes], tmp_path: Path, mask: int
) -> None:
    with umask(mask):
        dest = download_mnist(tmp_path / "dest", mirrors=[server.serve("m1", fake_files)])
    modes = {p.name: p.stat().st_mode & 0o777 for p in dest.iterdir()}
    assert modes == dict.fromkeys(MNIST_FILES, 0o666 & ~mask)


def test_recompressed_mirror_still_verifies(
    server: FakeMirrors, fake_files: dict[str, bytes], tmp_path: Path
) -> None:
    recompressed = {
        name: gzip.compress(gzip.decompress(body), compresslevel=1, mtime=12345)
        for name, body in fake_files.items()
    }
    assert recompressed != fake_files
    download_mnist(tmp_path / "dest", mirrors=[server.serve("m1", recompressed)], timeout=5)
    assert len(list((tmp_path / "dest").iterdir())) == 4


def test_checksum_mismatch_names_file_and_hashes(
    server: FakeMirrors, fake_files: dict[str, bytes], tmp_path: Path
) -> None:
    name = MNIST_FILES[0]
    wrong = gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x01\x07")
    mirrors = [server.serve("m1", {name: wrong}), server.serve("m2", {name: wrong})]
    dest = tmp_path / "dest"
    with pytest.raises(DataError, match=rf"{name}: could not download") as info:
        download_mnist(dest, mirrors=mirrors, timeout=5)
    message = str(info.value)
    expected = mnist_mod.MNIST_SHA256[name]
    actual = payload_sha256_bytes(wrong)
    assert message.count(f"checksum mismatch: expected sha256 {expected}, got {actual}") == 2
    assert list(dest.iterdir()) == []  # temp files removed, nothing renamed into place


@pytest.mark.parametrize("status", [404, 500])
def test_http_error_falls_back_to_next_mirror(
    server: FakeMirrors, fake_files: dict[str, bytes], tmp_path: Path, status: int
) -> None:
    first = server.serve("m1", {})
    for name in MNIST_FILES:
        server.routes[f"/m1/{name}"] = (status, b"server trouble")
    second = server.serve("m2", fake_files)
    dest = download_mnist(tmp_path / "dest", mirrors=[first, second], timeout=5)
    assert sorted(p.name for p in dest.iterdir()) == sorted(MNIST_FILES)
    assert server.requests[:2] == [f"/m1/{MNIST_FILES[0]}", f"/m2/{MNIST_FILES[0]}"]


@pytest.mark.parametrize("damage", ["mismatch", "corrupt-gzip", "refused"])
def test_bad_first_mirror_falls_back(
    server: FakeMirrors, fake_files: dict[str, bytes], tmp_path: Path, damage: str
) -> None:
    if damage == "refused":
        first = closed_port_url()
    else:
        bad = {
            "mismatch": {n: gzip.compress(b"something else") for n in MNIST_FILES},
            "corrupt-gzip": {n: body[: len(body) // 2] for n, body in fake_files.items()},
        }[damage]
        first = server.serve("bad", bad)
    dest = download_mnist(
        tmp_path / "dest", mirrors=[first, server.serve("good", fake_files)], timeout=5
    )
    assert sorted(p.name for p in dest.iterdir()) == sorted(MNIST_FILES)


def test_every_mirror_failing_says_where_to_put_files(
    server: FakeMirrors, fake_files: dict[str, bytes], tmp_path: Path
) -> None:
    server.routes[f"/m1/{MNIST_FILES[0]}"] = (500, b"")
    mirrors = [f"{server.base}/m1/", closed_port_url()]
    dest = tmp_path / "dest"
    with pytest.raises(DataError) as info:
        download_mnist(dest, mirrors=mirrors, timeout=5)
    message = str(info.value)
    assert f"{MNIST_FILES[0]}: could not download a good copy from any mirror" in message
    assert "HTTP Error 500" in message and "refused" in message.lower()
    for needle in (str(dest), "HANDGRAD_DATA", "--data-dir", "data_dir="):
        assert needle in message
    assert isinstance(info.value.__cause__, urllib.error.URLError)  # chained, not swallowed
    assert list(dest.iterdir()) == []


def test_connection_refused_everywhere(fake_files: dict[str, bytes], tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"(?s)refused.*Put the four MNIST files"):
        download_mnist(tmp_path / "dest", mirrors=[closed_port_url()], timeout=5)


def test_find_mnist_downloads_into_cache_only_when_asked(
    server: FakeMirrors,
    fake_files: dict[str, bytes],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("HANDGRAD_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(mnist_mod, "SHIPPED_DIR", tmp_path / "not-shipped")
    monkeypatch.setattr(mnist_mod, "DEFAULT_MIRRORS", (server.serve("m1", fake_files),))
    with pytest.raises(DataError, match=r"MNIST not found"):
        find_mnist()
    assert server.requests == []
    cache = tmp_path / "cache" / "handgrad" / "mnist"
    assert find_mnist(download=True) == cache
    assert len(load_mnist().x_train) == 12
    assert len(server.requests) == 4


def test_download_into_explicit_dir(
    server: FakeMirrors,
    fake_files: dict[str, bytes],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(mnist_mod, "DEFAULT_MIRRORS", (server.serve("m1", fake_files),))
    data = load_mnist(tmp_path / "mine", download=True)
    assert len(data.y_test) == 5
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == sorted(MNIST_FILES)


def test_existing_wrong_file_is_never_overwritten(
    server: FakeMirrors, fake_files: dict[str, bytes], tmp_path: Path
) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    mine = dest / MNIST_FILES[1].removesuffix(".gz")
    mine.write_bytes(b"my own labels")
    with pytest.raises(
        DataError, match=r"train-labels-idx1-ubyte exists but is not the MNIST file.*delete it"
    ):
        download_mnist(dest, mirrors=[server.serve("m1", fake_files)], timeout=5)
    assert [p.name for p in dest.iterdir()] == [mine.name]  # nothing fetched, nothing touched
    assert mine.read_bytes() == b"my own labels"
    assert server.requests == []
