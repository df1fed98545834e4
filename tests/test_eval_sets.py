"""Dataset fetch (resumable, checked), extraction to the standard layout, and verification,
all on local files: a generated archive served by a local HTTP server with Range support."""
from __future__ import annotations

import hashlib
import http.server
import io
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import DATA
from liif import cli
from liif.data import eval_sets
from liif.data.eval_sets import Archive, DatasetInfo
from liif.download import download, sha256_check, size_check
from liif.errors import LiifError


def _png(h: int, w: int, seed: int) -> bytes:
    a = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def _benchmark_tar(path: Path, n: int = 2) -> bytes:
    """A benchmark.tar look-alike: benchmark/Tiny/HR/<k>.png + LR_bicubic/X<s>/<k>x<s>.png (EDSR names)."""
    with tarfile.open(path, "w") as t:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
        for i in range(n):
            hr_h, hr_w = 24 + 2 * i, 36
            add(f"benchmark/Tiny/HR/im{i}.png", _png(hr_h, hr_w, i))
            for s in (2, 3, 4):
                add(f"benchmark/Tiny/LR_bicubic/X{s}/im{i}x{s}.png", _png(hr_h // s, hr_w // s, 10 * i + s))
        add("benchmark/Other/HR/x.png", _png(8, 8, 99))  # another set in the same archive: ignored
    return path.read_bytes()


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    ranges: list[str | None] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        data = self.files.get(self.path)
        rng = self.headers.get("Range")
        type(self).ranges.append(rng)
        if data is None:
            self.send_error(404)
            return
        start = int(rng.split("=")[1].split("-")[0]) if rng else 0
        self.send_response(206 if rng else 200)
        self.send_header("Content-Length", str(len(data) - start))
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        self.wfile.write(data[start:])

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def server() -> Iterator[str]:
    _RangeHandler.files, _RangeHandler.ranges = {}, []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
    th = threading.Thread(target=httpd.serve_forever, daemon=True)
    th.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _registry(url: str, sha: str | None, size: int | None = None) -> dict[str, DatasetInfo]:
    arch = Archive(url, "bench.tar", sha, size, {"benchmark/Tiny": ""})
    return {"tiny": DatasetInfo("tiny", "Tiny", 2, (arch,))}


def test_fetch_over_http_extracts_standard_layout(tmp_path: Path, server: str) -> None:
    data = _benchmark_tar(tmp_path / "src.tar")
    _RangeHandler.files["/bench.tar"] = data
    reg = _registry(server + "/bench.tar", hashlib.sha256(data).hexdigest())
    ds = eval_sets.fetch("tiny", tmp_path / "root", progress=False, registry=reg)
    assert ds.path == tmp_path / "root" / "Tiny"
    assert [p.name for p in ds.hr_files] == ["im0.png", "im1.png"]
    assert sorted(p.name for p in (ds.path / "LR_bicubic" / "X3").iterdir()) == ["im0x3.png", "im1x3.png"]
    assert ds.lr_file(ds.hr_files[1], 4) == ds.path / "LR_bicubic" / "X4" / "im1x4.png"
    assert not (tmp_path / "root" / "Other").exists()
    assert eval_sets.verify_folder(ds, 2, (2, 3, 4)) == []
    assert (tmp_path / "root" / "downloads" / "bench.tar").read_bytes() == data
    # a second fetch reuses the verified folder without downloading
    n = len(_RangeHandler.ranges)
    eval_sets.fetch("tiny", tmp_path / "root", progress=False, registry=reg)
    assert len(_RangeHandler.ranges) == n


def test_download_resumes_with_http_range(tmp_path: Path, server: str) -> None:
    data = bytes(range(256)) * 4000
    _RangeHandler.files["/blob.bin"] = data
    dest = tmp_path / "blob.bin"
    (tmp_path / "blob.bin.part").write_bytes(data[:300_001])
    download(server + "/blob.bin", dest, sha256_check(hashlib.sha256(data).hexdigest(), "blob.bin"), progress=False)
    assert _RangeHandler.ranges == ["bytes=300001-"]
    assert dest.read_bytes() == data
    assert not (tmp_path / "blob.bin.part").exists()


def test_corrupt_download_leaves_no_file(tmp_path: Path, server: str) -> None:
    data = _benchmark_tar(tmp_path / "src.tar")
    _RangeHandler.files["/bench.tar"] = data
    reg = _registry(server + "/bench.tar", "0" * 64)
    with pytest.raises(LiifError, match="checksum mismatch for bench.tar"):
        eval_sets.fetch("tiny", tmp_path / "root", progress=False, registry=reg)
    assert not (tmp_path / "root" / "downloads" / "bench.tar").exists()
    assert not (tmp_path / "root" / "downloads" / "bench.tar.part").exists()
    assert not (tmp_path / "root" / "Tiny").exists()
    assert [p.name for p in (tmp_path / "root").iterdir()] == ["downloads"]


def test_size_check_when_no_checksum_is_known(tmp_path: Path) -> None:
    src = tmp_path / "src.tar"
    data = _benchmark_tar(src)
    with pytest.raises(LiifError, match="size mismatch"):
        download(src.as_uri(), tmp_path / "out.tar", size_check(len(data) + 1, "out.tar"), progress=False)
    assert list(tmp_path.glob("out.tar*")) == []
    download(src.as_uri(), tmp_path / "out.tar", size_check(len(data), "out.tar"), progress=False)
    assert (tmp_path / "out.tar").read_bytes() == data


def test_fetch_from_file_url_zip_with_renamed_members(tmp_path: Path) -> None:
    z = tmp_path / "valid.zip"
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("DIV2K_valid_HR/0801.png", _png(12, 12, 1))
        f.writestr("DIV2K_valid_LR_bicubic/X2/0801x2.png", _png(6, 6, 2))
    arch = Archive(z.as_uri(), "valid.zip", hashlib.sha256(z.read_bytes()).hexdigest(), None,
                   {"DIV2K_valid_HR": "HR", "DIV2K_valid_LR_bicubic/X2": "LR_bicubic/X2"})
    reg = {"mini": DatasetInfo("mini", "Mini", 1, (arch,), scales=(2,))}
    ds = eval_sets.fetch("mini", tmp_path / "root", progress=False, registry=reg)
    assert (ds.path / "HR" / "0801.png").is_file()
    assert ds.lr_file(ds.hr_files[0], 2) == ds.path / "LR_bicubic" / "X2" / "0801x2.png"


def test_extracted_tree_that_fails_verification_is_not_kept(tmp_path: Path) -> None:
    src = tmp_path / "src.tar"
    _benchmark_tar(src)
    arch = Archive(src.as_uri(), "bench.tar", None, None, {"benchmark/Tiny": ""})
    reg = {"tiny": DatasetInfo("tiny", "Tiny", 3, (arch,))}  # archive holds 2 images, not 3
    with pytest.raises(LiifError, match="2 images, expected 3"):
        eval_sets.fetch("tiny", tmp_path / "root", progress=False, registry=reg)
    assert sorted(p.name for p in (tmp_path / "root").iterdir()) == ["downloads"]


def test_verify_reports_size_mismatch_and_missing_files(tmp_path: Path) -> None:
    root = tmp_path / "Set"
    (root / "HR").mkdir(parents=True)
    (root / "LR_bicubic" / "X2").mkdir(parents=True)
    (root / "HR" / "a.png").write_bytes(_png(20, 20, 0))
    (root / "HR" / "b.png").write_bytes(_png(20, 20, 1))
    (root / "LR_bicubic" / "X2" / "a.png").write_bytes(_png(9, 10, 2))
    problems = eval_sets.verify_folder(eval_sets.open_folder(root), 2, (2,))
    assert any("9" in p and "not HR 20x20 / 2" in p for p in problems)
    assert any("no LR image for b.png" in p for p in problems)
    with pytest.raises(LiifError, match="failed verification"):
        eval_sets.verify(str(root))


def test_verify_fixture_sets_and_resolve_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["data", "verify", str(DATA / "Set5")]) == 0
    assert "OK (5 HR images; LR scales x2, x3, x4)" in capsys.readouterr().out
    assert eval_sets.verify(str(DATA / "Set14")).key == "set14"
    with pytest.raises(LiifError, match="unknown dataset 'set99'"):
        eval_sets.resolve("set99", tmp_path)
    with pytest.raises(LiifError, match="run `liif data fetch set14`"):
        eval_sets.resolve("set14", tmp_path)
    with pytest.raises(LiifError, match="no HR/ subfolder"):
        eval_sets.resolve(str(tmp_path))
    assert cli.main(["data", "verify", "nope", "--root", str(tmp_path)]) == 1
    assert "liif: error: unknown dataset 'nope'" in capsys.readouterr().err


def test_registry_urls_and_checksums_are_well_formed() -> None:
    for d in eval_sets.REGISTRY.values():
        for a in d.archives:
            assert a.url.startswith("https://") and a.url.endswith(a.filename)
            assert a.sha256 is None or (len(a.sha256) == 64 and int(a.sha256, 16) >= 0)
            assert a.sha256 is not None or d.note  # an unknown checksum is always explained
