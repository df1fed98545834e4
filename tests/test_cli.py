"""`liif upscale` / `liif weights` end to end, including every bad input of the issue."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import COMIC, GOLDEN, golden_cases, run_cli
from liif import imaging
from liif.cli import main


def no_outputs(folder: Path) -> bool:
    return not any(p.suffix == ".png" or p.name.endswith(".tmp") for p in folder.iterdir())


def test_upscale_matches_golden_png(tmp_path, capsys, weights_arg):
    case = golden_cases()[3]
    h, w = case["out_hw"]
    rc, out, _ = run_cli(["upscale", str(GOLDEN / case["input"]), "-o", str(tmp_path / "o.png"), "--size", f"{w}x{h}",
                          "--precision", "fp32", "--quantize", "truncate", *weights_arg], capsys)
    assert rc == 0 and "(480x384)" in out
    got = np.asarray(Image.open(tmp_path / "o.png"), dtype=np.int16)
    gold = np.asarray(Image.open(GOLDEN / case["png"]), dtype=np.int16)
    assert np.abs(got - gold).max() <= 1 and (got != gold).any(-1).mean() <= 0.001
    assert oct((tmp_path / "o.png").stat().st_mode & 0o777) != oct(0o600)


def test_scales_and_folder_output(tmp_path, capsys, weights_arg):
    jpg = tmp_path / "in.jpg"
    Image.open(COMIC).convert("RGB").save(jpg, quality=95)
    webp = tmp_path / "in2.webp"
    Image.open(COMIC).convert("RGB").save(webp)
    out = tmp_path / "out"
    rc, _, _ = run_cli(["upscale", str(jpg), str(webp), "-o", str(out), "--scale-x", "3", "--scale-y", "1.5",
                        *weights_arg], capsys)
    assert rc == 0
    assert Image.open(out / "in.png").size == (120, 48) and Image.open(out / "in2.png").size == (120, 48)
    rc, _, _ = run_cli(["upscale", str(COMIC), "-o", str(tmp_path / "s.png"), "--scale", "2.7", *weights_arg], capsys)
    assert rc == 0 and Image.open(tmp_path / "s.png").size == (108, 86)


def write_truncated(p: Path) -> None:
    data = COMIC.read_bytes()
    p.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("case,args,message", [
    ("missing", ["--scale", "2"], "input not found"),
    ("text", ["--scale", "2"], "not an image"),
    ("truncated", ["--scale", "2"], "cannot decode"),
    ("ok", ["--scale", "0"], "scale must be a finite number > 0"),
    ("ok", ["--scale", "-2"], "scale must be a finite number > 0"),
    ("ok", ["--scale", "nan"], "scale must be a finite number > 0"),
    ("ok", ["--scale", "two"], "--scale must be a number"),
    ("ok", ["--size", "0x10"], "--size must be positive"),
    ("ok", ["--size", "10by10"], "--size must be WIDTHxHEIGHT"),
    ("ok", ["--scale", "30", "--max-pixels", "100000"], "exceeds the limit of 100,000"),
    ("ok", ["--scale", "2", "--size", "5x5"], "exactly one of"),
    ("ok", ["--scale-x", "2"], "give both --scale-x and --scale-y"),
    ("ok", ["--scale", "2", "--region", "0,0,500,500"], "outside"),
    ("ok", ["--scale", "2", "--precision", "fp16", "--device", "cpu"], "fp16 needs a CUDA device"),
])
def test_bad_input_one_line_error_no_output(tmp_path, capsys, weights_arg, case, args, message):
    src = {"missing": tmp_path / "nope.png", "text": tmp_path / "t.png", "truncated": tmp_path / "tr.png",
           "ok": tmp_path / "ok.png"}[case]
    if case == "text":
        src.write_text("not an image")
    elif case == "truncated":
        write_truncated(src)
    elif case == "ok":
        shutil.copy(COMIC, src)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    rc, _, err = run_cli(["upscale", str(src), "-o", str(out_dir / "r.png"), *args, *weights_arg], capsys)
    assert rc != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("liif: error: ") and message in lines[0], err
    assert no_outputs(out_dir)


def test_bad_input_among_several_writes_nothing(tmp_path, capsys, weights_arg):
    bad = tmp_path / "bad.png"
    write_truncated(bad)
    out = tmp_path / "out"
    rc, _, err = run_cli(["upscale", str(COMIC), str(bad), "-o", str(out), "--scale", "2", *weights_arg], capsys)
    assert rc == 1 and "cannot decode" in err
    assert not out.exists() or no_outputs(out)


def test_wrong_checkpoint_and_output_kind(tmp_path, capsys):
    ck = tmp_path / "ck.pth"
    ck.write_bytes(b"\x00" * 100)
    rc, _, err = run_cli(["upscale", str(COMIC), "-o", str(tmp_path / "o.png"), "--scale", "2", "--weights", str(ck)],
                         capsys)
    assert rc == 1 and "not a PyTorch checkpoint" in err and not (tmp_path / "o.png").exists()
    rc, _, err = run_cli(["upscale", str(COMIC), "-o", str(tmp_path / "o.jpg"), "--scale", "2"], capsys)
    assert rc == 1 and "must be a .png file or a folder" in err


def test_failed_write_leaves_previous_output(tmp_path, capsys, weights_arg, monkeypatch):
    """An error during saving (disk full) is one line; it leaves neither a partial file nor a temp
    file, and an old output survives."""
    dst = tmp_path / "o.png"
    dst.write_bytes(b"old")

    def boom(self, rows):
        self.f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(imaging.PngWriter, "write", boom)
    rc, _, err = run_cli(["upscale", str(COMIC), "-o", str(dst), "--scale", "2", *weights_arg], capsys)
    assert rc == 1 and err.strip() == f"liif: error: cannot write {dst}: No space left on device"
    assert dst.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["o.png"]


def test_console_script_and_weights_list(tmp_path, official_path):
    env = {**os.environ, "LIIF_CACHE_DIR": str(official_path.parent.parent)}
    exe = Path(sys.executable).with_name("liif")
    res = subprocess.run([str(exe), "weights", "list"], capture_output=True, text=True, env=env)
    assert res.returncode == 0 and "edsr-baseline-liif\tcached" in res.stdout
    res = subprocess.run([str(exe), "upscale", str(tmp_path / "missing.png"), "-o", str(tmp_path / "x.png"),
                          "--scale", "2"], capture_output=True, text=True, env=env)
    assert res.returncode == 1 and res.stderr.strip() == f"liif: error: input not found: {tmp_path / 'missing.png'}"


def test_sigterm_unwinds_and_leaves_no_temp_file(tmp_path, official_path):
    """SIGTERM mid-render (a scheduler's kill, a closed terminal) unwinds like Ctrl-C: exit 143, one
    line, no output and no temp file left behind."""
    import signal
    import time

    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "liif.cli", "upscale", str(COMIC), "-o", str(out / "big.png"),
                             "--size", "3000x2400", "--weights", str(official_path), "--device", "cpu"],
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not any(out.iterdir()) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)  # the temp file appears when rendering starts
        assert any(out.iterdir()) and proc.poll() is None, "the render did not start"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143 and err.strip().splitlines()[-1] == "liif: terminated"
    assert list(out.iterdir()) == []


def photo_folder(root: Path) -> Path:
    """A folder as users have them: two images, a hidden copy, a text file and a subfolder."""
    folder = root / "photos"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(COMIC, folder / "a.png")
    Image.open(COMIC).convert("RGB").save(folder / "b.JPG", quality=95)
    shutil.copy(COMIC, folder / ".hidden.png")
    shutil.copy(COMIC, folder / "sub" / "c.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_folder_input_upscales_each_image_into_output_folder(tmp_path, capsys, weights_arg):
    folder = photo_folder(tmp_path)
    out = tmp_path / "new" / "out"  # created, parents too
    rc, stdout, err = run_cli(["upscale", str(folder), "-o", str(out), "--scale", "2", *weights_arg], capsys)
    assert rc == 0 and err == ""
    assert stdout.splitlines() == [f"{folder / 'a.png'} -> {out / 'a.png'} (80x64)",
                                   f"{folder / 'b.JPG'} -> {out / 'b.png'} (80x64)"]
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]  # no hidden, sub or text outputs
    assert Image.open(out / "b.png").format == "PNG" and Image.open(out / "a.png").size == (80, 64)


def test_folder_input_goes_on_past_a_corrupt_image(tmp_path, capsys, weights_arg):
    folder = photo_folder(tmp_path)
    write_truncated(folder / "bad.png")
    out = tmp_path / "out"
    rc, stdout, err = run_cli(["upscale", str(folder), "-o", str(out), "--size", "50x40", *weights_arg], capsys)
    assert rc == 1
    assert stdout.splitlines() == [f"{folder / 'a.png'} -> {out / 'a.png'} (50x40)",
                                   f"{folder / 'b.JPG'} -> {out / 'b.png'} (50x40)"]
    lines = err.splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"liif: error: cannot decode {folder / 'bad.png'}")
    assert lines[1] == f"liif: error: 1 of 3 images failed (named above); 2 written to {out}"
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]  # no bad.png, no temp file


@pytest.mark.parametrize("contents", [[], ["notes.txt", ".hidden.png"]])
def test_folder_without_images_is_one_line_error(tmp_path, capsys, weights_arg, contents):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in contents:
        shutil.copy(COMIC, folder / name)
    rc, stdout, err = run_cli(["upscale", str(folder), "-o", str(tmp_path / "out"), "--scale", "2", *weights_arg],
                              capsys)
    assert rc == 1 and stdout == ""
    assert err.splitlines() == [f"liif: error: no images in folder {folder} (looked for .bmp, .jpeg, .jpg, .png, "
                                ".tif, .tiff, .webp; hidden files are skipped)"]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name,exists,message", [
    ("out", True, "with a folder input the output must be a folder, got existing file"),
    ("big.png", False, "with a folder input the output must be a folder, got image file name"),
])
def test_folder_input_refuses_a_file_output(tmp_path, capsys, weights_arg, name, exists, message):
    folder = photo_folder(tmp_path)
    dst = tmp_path / name
    if exists:
        dst.write_bytes(b"keep")
    rc, _, err = run_cli(["upscale", str(folder), "-o", str(dst), "--scale", "2", *weights_arg], capsys)
    assert rc == 1 and err.splitlines() == [f"liif: error: {message} {dst}"]
    assert (dst.read_bytes() == b"keep") if exists else not dst.exists()


def help_text(args, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--help"])
    assert exit_info.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines: compare words


def test_upscale_help_names_folders_input_and_memory_default(capsys, monkeypatch):
    text = help_text(["upscale"], capsys)
    assert "Upscale an image, several images or a folder of images (PNG/JPEG/WebP/BMP/TIFF) with LIIF" in text
    assert "INPUT an image file, or a folder: every image directly in it (hidden files skipped)" in text
    assert "working-memory budget of the renderer, e.g. 512M (default 256M on the CPU" in text
    from liif import compute
    monkeypatch.setattr(compute, "DEFAULT_MAX_MEMORY", 3 << 30)  # the help shows the constant, not a copy
    assert "(default 3G on the CPU" in help_text(["upscale"], capsys)
    assert "upscale images (or a folder of images, or a video)" in help_text([], capsys)


@pytest.mark.parametrize("n,text", [(256 << 20, "256M"), (3 << 30, "3G"), (1536 << 20, "1536M"), (1000, "1000"),
                                    (4096, "4K")])
def test_format_memory_reads_back(n, text):
    from liif import limits
    assert limits.format_memory(n) == text and limits.parse_memory(text) == n


def test_weights_list_says_how_to_use_weights_it_cannot_download(capsys):
    rc, out, _ = run_cli(["weights", "list"], capsys)
    lines = out.splitlines()
    assert rc == 0 and "not fetchable" not in out
    i = next(k for k, line in enumerate(lines) if line.startswith("rdn-liif\t"))
    assert lines[i].startswith("rdn-liif\tdownload by hand\tRDN-LIIF")
    assert lines[i + 1] == ("\tofficial weights: Google Drive links in yinboc/liif. `liif weights fetch` cannot get "
                            "them: download the file yourself, then use --weights PATH")
    assert out.count("\tdownload by hand\t") == 3  # rdn-liif, edsr-baseline-lte, rdn-lte
