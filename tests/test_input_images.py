"""What becomes of an input image's extras: alpha resized for the rendered window only, EXIF orientation
applied, the first frame of a multi-frame file (with a warning), NaN or infinite values refused."""
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import run_cli
from liif import LiifError, imaging


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_resized_for_the_window_only(upscaler, comic, monkeypatch, mode):
    im = comic.convert(mode)
    a = np.zeros((32, 40), np.uint8)
    a[:, 20:] = 255
    im.putalpha(Image.fromarray(a))
    sizes = []
    real = Image.Image.resize

    def spy(self, size, *args, **kw):
        sizes.append(tuple(size))
        return real(self, size, *args, **kw)

    monkeypatch.setattr(Image.Image, "resize", spy)
    out = upscaler.upscale(im, size=(16000, 24000), region=(11990, 0, 20, 12))
    assert out.mode == mode and out.size == (20, 12)
    assert sizes and max(w * h for w, h in sizes) <= 20 * 12
    alpha = np.asarray(out)[..., -1]
    assert alpha[:, :8].max() < 128 and alpha[:, 12:].min() > 128  # the edge in the middle of the output


def test_window_alpha_equals_crop_of_full_resize():
    rng = np.random.default_rng(0)
    a = rng.random((32, 40), dtype=np.float32)
    for out_hw in ((300, 370), (20, 17), (64, 80)):
        full = imaging.resize_alpha(a, out_hw)
        for y, x, h, w in ((0, 0, *out_hw), (3, 4, out_hw[0] - 5, out_hw[1] - 6), (out_hw[0] - 1, 0, 1, 7)):
            part = imaging.resize_alpha(a, out_hw, (y, x, h, w))
            assert np.abs(part - full[y:y + h, x:x + w]).max() <= 1e-5


def test_non_finite_input_refused(upscaler):
    a = np.full((64, 80, 3), 0.5, np.float32)
    a[10, 10, 1] = np.nan
    for bad in (a, np.full((8, 8), np.nan, np.float32), np.where(a == a, a, np.inf).astype(np.float64)):
        with pytest.raises(LiifError, match="NaN or infinite"):
            upscaler.upscale(bad, scale=2)
    t = torch.full((3, 8, 8), 0.5)
    t[0, 1, 1] = float("nan")
    with pytest.raises(LiifError, match="NaN or infinite"):
        upscaler.upscale(t, scale=2)
    with pytest.raises(LiifError, match="NaN or infinite"):
        upscaler.upscale(Image.fromarray(np.full((8, 8), np.nan, np.float32), mode="F"), scale=2)


def test_exif_orientation_applied(tmp_path, capsys, weights_arg, upscaler, comic):
    stored = comic.resize((80, 64))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to show
    src = tmp_path / "o6.jpg"
    stored.save(src, quality=95, exif=exif.tobytes())
    # fp32 as the upscaler fixture: the CLI streams bands, the API renders in one call; in bf16 the two
    # routes' roundings differ (by a level here and there), and this test is about orientation
    rc, _, _ = run_cli(["upscale", str(src), "-o", str(tmp_path / "o.png"), "--scale", "2", "--precision", "fp32",
                    *weights_arg], capsys)
    out = Image.open(tmp_path / "o.png")
    assert rc == 0 and out.size == (128, 160)
    api_out = upscaler.upscale(Image.open(src), scale=2)
    assert api_out.size == (128, 160) and np.array_equal(np.asarray(api_out), np.asarray(out))
    assert 0x0112 not in out.getexif()


def test_multi_frame_input_warns(tmp_path, capsys, weights_arg, upscaler):
    frames = [Image.new("RGB", (16, 12), c) for c in ("red", "blue")]
    gif = tmp_path / "anim.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:])
    with pytest.warns(imaging.MultiFrameInput, match="2 frames"):
        out = upscaler.upscale(Image.open(gif), scale=2)
    assert out.size == (32, 24)
    rc, _, err = run_cli(["upscale", str(gif), "-o", str(tmp_path / "o.png"), "--scale", "2", *weights_arg], capsys)
    warn = [line for line in err.splitlines() if "frames" in line]
    assert rc == 0 and len(warn) == 1 and warn[0].startswith("liif: warning: ") and "only the first" in warn[0]


def test_premultiplied_gray_alpha_works_like_la(upscaler, comic, tmp_path):
    """Pillow's La (gray premultiplied by alpha) converts only to LA: it is un-premultiplied first, then
    upscaled as LA (gray, alpha resized), in memory and streamed to a PNG."""
    la = comic.convert("LA")
    a = np.zeros((32, 40), np.uint8)
    a[:, 20:] = 255
    a[:, 10:20] = 128
    la.putalpha(Image.fromarray(a))
    premultiplied = la.convert("La")
    assert premultiplied.mode == "La"
    out = upscaler.upscale(premultiplied, scale=2)
    want = upscaler.upscale(premultiplied.convert("LA"), scale=2)
    assert out.mode == "LA" and out.size == (80, 64) and np.array_equal(np.asarray(out), np.asarray(want))
    assert upscaler.upscale_to_png(premultiplied, tmp_path / "o.png", scale=2) == (80, 64)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "o.png")), np.asarray(want))
