"""Limits and option values, checked before any work: the input pixel limit (read from the image header;
set by flag, environment or API), the pixel-limit environment variables, whole counts, and the CLI options
whose bad values end in a one-line error."""
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import COMIC, one_error_line, run_cli
from liif import LiifError, api, limits


def png_header_only(path: Path, w: int, h: int) -> None:
    """A small 1-bit PNG whose header declares w x h (its data would inflate to far more)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
                     + chunk(b"IEND", b""))


@pytest.mark.parametrize("w,h", [(60000, 60000), (8000, 8000)])
def test_cli_refuses_huge_input_from_header(tmp_path, capsys, w, h):
    src = tmp_path / "bomb.png"
    png_header_only(src, w, h)
    rc, _, err = run_cli(["upscale", str(src), "-o", str(tmp_path / "o.png"), "--size", "8x8"], capsys)
    assert rc == 1 and "above the input limit of 50,000,000" in one_error_line(err)
    assert not (tmp_path / "o.png").exists()


def test_input_limit_flag_env_and_api(tmp_path, capsys, monkeypatch, upscaler, comic):
    rc, _, err = run_cli(["upscale", str(COMIC), "-o", str(tmp_path / "o.png"), "--scale", "2",
                      "--max-input-pixels", "1000"], capsys)
    assert rc == 1 and "above the input limit of 1,000" in one_error_line(err)
    monkeypatch.setenv("LIIF_MAX_INPUT_PIXELS", "1e3")  # an integral float is a count
    rc, _, err = run_cli(["upscale", str(COMIC), "-o", str(tmp_path / "o.png"), "--scale", "2"], capsys)
    assert rc == 1 and "above the input limit of 1,000" in one_error_line(err)
    with pytest.raises(LiifError, match="input limit"):
        api.Upscaler(upscaler.model, upscaler.spec, max_input_pixels=1000).upscale(comic, scale=2)
    monkeypatch.delenv("LIIF_MAX_INPUT_PIXELS")
    # The API refuses a lazily opened PIL image on its header, without decoding it.
    bomb = tmp_path / "bomb.png"
    png_header_only(bomb, 8000, 8000)
    with Image.open(bomb) as im, pytest.raises(LiifError, match="input limit"):  # decoding would fail otherwise
        upscaler.upscale(im, size=(8, 8))


@pytest.mark.parametrize("args,message", [
    (["--max-memory", "inf"], "--max-memory must be a finite size"),
    (["--max-memory", "nan"], "--max-memory must be a finite size"),
    (["--max-memory", ""], "--max-memory must look like"),
    (["--device", "bogus"], "unknown device 'bogus'"),
    (["--max-pixels", "abc"], "--max-pixels must be a whole number"),
    (["--max-pixels", "1500.5"], "--max-pixels must be a whole number"),
])
def test_cli_option_errors_are_one_line(tmp_path, capsys, args, message):
    rc, _, err = run_cli(["upscale", str(COMIC), "-o", str(tmp_path / "o.png"), "--scale", "2", *args], capsys)
    assert rc == 1 and message in one_error_line(err)
    assert not (tmp_path / "o.png").exists()


def test_env_pixel_limits(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LIIF_MAX_PIXELS", "abc")
    rc, _, err = run_cli(["upscale", str(COMIC), "-o", str(tmp_path / "o.png"), "--scale", "2"], capsys)
    assert rc == 1 and "LIIF_MAX_PIXELS must be a whole number" in one_error_line(err)
    monkeypatch.setenv("LIIF_MAX_PIXELS", "1e9")  # integral floats are accepted
    assert limits.max_pixels() == 1_000_000_000
    monkeypatch.setenv("LIIF_MAX_PIXELS", "2.5")
    with pytest.raises(LiifError, match="whole number"):
        limits.max_pixels()


def test_train_max_minutes_must_be_finite(tmp_path, capsys):
    for bad in ("nan", "inf", "0"):
        rc, _, err = run_cli(["train", str(tmp_path / "none.yaml"), "--max-minutes", bad], capsys)
        assert rc == 1 and "--max-minutes must be a finite number > 0" in one_error_line(err)


def test_parse_count_rules():
    assert limits.parse_count("n", "100_000") == 100_000 and limits.parse_count("n", np.float32(8.0)) == 8
    for bad in ("0", "-1", "inf", "nan", "1.5", "", True, np.bool_(False), 2.5):
        with pytest.raises(LiifError):
            limits.parse_count("n", bad)
