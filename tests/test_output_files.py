"""Output files: an output never replaces an input, unwritable outputs fail before the model loads, missing
folders are created, eval writes files only with -o, and PNGs are streamed band by band (same pixels as
the in-memory render, memory that does not grow with the image)."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import COMIC, one_error_line, run_cli
from liif import LiifError, api, imaging, pipeline


def test_output_never_replaces_an_input(tmp_path, capsys, weights_arg):
    src = tmp_path / "a.png"
    src.write_bytes(COMIC.read_bytes())
    before = src.read_bytes()
    for out in (src, tmp_path, tmp_path / "." / "a.png"):
        rc, _, err = run_cli(["upscale", str(src), "-o", str(out), "--scale", "2", *weights_arg], capsys)
        assert rc == 1 and "refusing to overwrite an input" in one_error_line(err)
    link = tmp_path / "b.png"
    os.link(src, link)  # the same file under another name
    rc, _, err = run_cli(["upscale", str(src), "-o", str(link), "--scale", "2", *weights_arg], capsys)
    assert rc == 1 and "refusing to overwrite an input" in one_error_line(err)
    assert src.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png"]


def test_unwritable_output_fails_before_loading_the_model(tmp_path, capsys, monkeypatch):
    def no_load(*a, **kw):
        raise AssertionError("the model was loaded before the output was checked")

    monkeypatch.setattr(api, "load", no_load)
    afile = tmp_path / "file"
    afile.write_text("x")
    for out, why in ((afile / "o.png", "is not a folder"), (afile / "sub" / "o.png", "is not a folder")):
        rc, _, err = run_cli(["upscale", str(COMIC), "-o", str(out), "--scale", "2"], capsys)
        assert rc == 1 and why in one_error_line(err)
    real_mkstemp = imaging.files.tempfile.mkstemp

    def denied(*a, **kw):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(imaging.files.tempfile, "mkstemp", denied)
    rc, _, err = run_cli(["upscale", str(COMIC), "-o", str(tmp_path / "o.png"), "--scale", "2"], capsys)
    assert rc == 1 and "cannot write" in one_error_line(err) and "Permission denied" in err
    monkeypatch.setattr(imaging.files.tempfile, "mkstemp", real_mkstemp)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_missing_output_folders_are_created(tmp_path, capsys, weights_arg):
    out = tmp_path / "new" / "deeper" / "o.png"
    rc, _, _ = run_cli(["upscale", str(COMIC), "-o", str(out), "--scale", "1", *weights_arg], capsys)
    assert rc == 0 and Image.open(out).size == (40, 32)


def test_eval_writes_files_only_with_output(tmp_path, capsys, monkeypatch, official_path):
    ds = tmp_path / "Tiny" / "HR"
    ds.mkdir(parents=True)
    Image.open(COMIC).convert("RGB").save(ds / "comic.png")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    args = ["eval", "--weights", str(official_path), "--dataset", str(ds.parent), "--scales", "2",
            "--protocol", "mmagic"]
    rc, out, _ = run_cli(args, capsys)
    assert rc == 0 and "x2" in out and list(work.iterdir()) == []
    rc, out, _ = run_cli([*args, "-o", str(tmp_path / "res")], capsys)
    assert rc == 0 and len(list((tmp_path / "res").iterdir())) == 3 and list(work.iterdir()) == []


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "I;16"])
def test_streamed_png_equals_upscale(upscaler, comic, tmp_path, monkeypatch, mode):
    if mode == "I;16":
        im = Image.fromarray(np.asarray(comic.convert("L"), np.uint16) * 257)
    else:
        im = comic.convert(mode)
    if mode in ("RGBA", "LA"):
        a = np.zeros((32, 40), np.uint8)
        a[:, 20:] = 255
        im.putalpha(Image.fromarray(a))
    monkeypatch.setattr(pipeline, "band_rows", lambda *a: 17)  # many bands, the last one short
    kw = dict(size=(150, 90), region=(3, 2, 85, 141))
    wh = upscaler.upscale_to_png(im, tmp_path / "o.png", **kw)
    got = Image.open(tmp_path / "o.png")
    want = upscaler.upscale(im, **kw)
    assert wh == got.size == want.size == (85, 141) and got.mode == want.mode
    assert np.array_equal(np.asarray(got), np.asarray(want))


def test_cli_output_memory_does_not_grow_with_the_image(tmp_path, capsys):
    """The CLI streams rows to the PNG: the NumPy memory it holds (traced) stays a fraction of the
    output, where it used to allocate the whole output array."""
    import tracemalloc

    from liif import checkpoints
    from liif.models import ModelSpec, build

    torch.manual_seed(0)
    spec = ModelSpec(encoder_args={"n_resblocks": 1, "n_feats": 8}, hidden=[16])
    ck = checkpoints.save(build(spec).eval(), spec, tmp_path / "tiny.safetensors")
    Image.open(COMIC).convert("RGB").save(tmp_path / "in.png")
    out = tmp_path / "o.png"
    tracemalloc.start()
    try:
        rc, _, err = run_cli(["upscale", str(tmp_path / "in.png"), "-o", str(out), "--size", "1200x2400",
                          "--weights", str(ck), "--max-memory", "4M", "--precision", "fp32"], capsys)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert rc == 0, err
    assert Image.open(out).size == (1200, 2400)
    assert peak < 0.5 * 1200 * 2400 * 3, peak
    print(f"traced peak {peak / 2**20:.1f} MiB for a {1200 * 2400 * 3 / 2**20:.1f} MiB output")


def test_png_onto_a_folder_is_refused_before_rendering(upscaler, comic, tmp_path, monkeypatch):
    def no_render(*a, **kw):
        raise AssertionError("rendered before the output was checked")

    monkeypatch.setattr(pipeline.Pipeline, "bands", no_render)
    (tmp_path / "out.png").mkdir()
    with pytest.raises(LiifError, match=f"cannot write {tmp_path / 'out.png'}: it is a folder"):
        upscaler.upscale_to_png(comic, tmp_path / "out.png", scale=2)
    (tmp_path / "file").write_text("x")
    with pytest.raises(LiifError, match=f"cannot write {tmp_path / 'file' / 'o.png'}: {tmp_path / 'file'} is not a"):
        upscaler.upscale_to_png(comic, tmp_path / "file" / "o.png", scale=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "out.png"]  # no .out.png.*.tmp
    assert not any((tmp_path / "out.png").iterdir())


def test_a_failed_rename_leaves_no_temp_file(tmp_path):
    """The target became a folder while the file was written: the rename fails and the temp file goes."""
    from liif.fileio import atomic_path

    with pytest.raises(IsADirectoryError), atomic_path(tmp_path / "o.png") as tmp:
        tmp.write_bytes(b"data")
        (tmp_path / "o.png").mkdir()
        (tmp_path / "o.png" / "inside").write_text("x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.png"]
