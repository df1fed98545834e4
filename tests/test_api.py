"""The Python API: input kinds in = kinds out, channel policies, sizes (height, width), argument types."""
import math

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import GOLDEN
from liif import LiifError, api, output_size


@pytest.fixture(scope="module")
def small():
    return Image.open(GOLDEN / "set14_comic_in.png").convert("RGB")  # 40x32 (WxH)


def test_output_size_rules():
    assert output_size((32, 40), scale=2) == (64, 80)
    assert output_size((32, 40), scale=(1.5, 3)) == (48, 120)
    assert output_size((32, 40), size=(10, 20)) == (10, 20)
    assert output_size((3, 3), scale=0.5) == (2, 2)  # round half to even
    for bad in (0, -1, math.nan, math.inf):
        with pytest.raises(LiifError, match="scale must be a finite number > 0"):
            output_size((32, 40), scale=bad)
    with pytest.raises(LiifError, match="empty output"):
        output_size((32, 40), scale=0.001)
    with pytest.raises(LiifError, match="output size must be positive"):
        output_size((32, 40), size=(0, 5))
    with pytest.raises(LiifError, match="exactly one"):
        output_size((32, 40))


def test_pil_rgb(upscaler, small):
    out = upscaler.upscale(small, size=(50, 70))
    assert isinstance(out, Image.Image) and out.mode == "RGB" and out.size == (70, 50)


def test_numpy_and_tensor_agree(upscaler, small):
    arr = np.asarray(small)
    out = upscaler.upscale(arr, scale=2)
    assert out.dtype == np.uint8 and out.shape == (64, 80, 3)
    t = torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255
    ft = upscaler.upscale(t, scale=2)
    assert isinstance(ft, torch.Tensor) and ft.shape == (3, 64, 80) and 0 <= ft.min() and ft.max() <= 1
    assert np.array_equal(np.rint(ft.permute(1, 2, 0).numpy() * 255).astype(np.uint8), out)  # rounded to nearest
    batch = upscaler.upscale(torch.stack([t, t.flip(-1)]), scale=(1, 2))
    assert batch.shape == (2, 3, 32, 80)


def test_grayscale_policy(upscaler, small):
    gray = small.convert("L")
    out = upscaler.upscale(gray, scale=2)
    assert out.mode == "L" and out.size == (80, 64)
    rgb = upscaler.upscale(gray.convert("RGB"), scale=2)
    ref = np.asarray(rgb, dtype=np.float32) @ np.array([0.299, 0.587, 0.114])
    assert np.abs(np.asarray(out, dtype=np.float32) - ref).max() <= 1.5
    g2 = upscaler.upscale(np.asarray(gray), scale=2)
    assert g2.shape == (64, 80) and g2.dtype == np.uint8
    t = upscaler.upscale(torch.rand(1, 8, 8), scale=2)
    assert t.shape == (1, 16, 16)


def test_rgba_policy(upscaler, small):
    a = np.zeros((32, 40), np.uint8)
    a[:, 20:] = 255
    rgba = small.copy()
    rgba.putalpha(Image.fromarray(a))
    out = upscaler.upscale(rgba, scale=2)
    assert out.mode == "RGBA" and out.size == (80, 64)
    alpha = np.asarray(out)[..., 3]
    expect = np.asarray(Image.fromarray(a.astype(np.float32), mode="F").resize((80, 64), Image.Resampling.BICUBIC))
    assert np.abs(alpha.astype(np.float32) - np.clip(expect, 0, 255).astype(np.uint8)).max() <= 1
    assert alpha[:, :30].max() == 0 and alpha[:, 50:].min() == 255
    rgb_part = upscaler.upscale(small, scale=2)
    assert np.array_equal(np.asarray(out)[..., :3], np.asarray(rgb_part))


def test_sixteen_bit_gray(upscaler, tmp_path):
    g = (np.linspace(0, 65535, 24 * 20).reshape(24, 20)).astype(np.uint16)
    im = Image.fromarray(g)
    im.save(tmp_path / "g16.png")
    loaded = Image.open(tmp_path / "g16.png")
    out = upscaler.upscale(loaded, scale=2)
    assert out.mode in ("I;16", "I") and out.size == (40, 48)
    arr = np.asarray(out).astype(np.int64)
    assert arr.max() > 255  # full 16-bit range kept
    assert abs(int(arr.mean()) - int(g.mean())) < 2000
    n = upscaler.upscale(g, scale=2)
    assert n.dtype == np.uint16 and n.shape == (48, 40)


def test_region_equals_crop(upscaler, small):
    full = np.asarray(upscaler.upscale(small, size=(100, 130)))
    part = np.asarray(upscaler.upscale(small, size=(100, 130), region=(13, 7, 40, 29)))
    assert np.array_equal(part, full[7:36, 13:53])


def test_errors(upscaler, small):
    with pytest.raises(LiifError, match="outside"):
        upscaler.upscale(small, size=(10, 10), region=(5, 5, 10, 10))
    with pytest.raises(LiifError, match="unsupported image type"):
        upscaler.upscale([1, 2, 3], scale=2)
    with pytest.raises(LiifError, match="array dtype"):
        upscaler.upscale(np.zeros((4, 4, 3), np.int32), scale=2)
    with pytest.raises(LiifError, match="fp16 needs a CUDA device"):
        upscaler.upscale(small, scale=2, precision="fp16")
    with pytest.raises(LiifError, match="exceeds the limit"):
        type(upscaler)(upscaler.model, upscaler.spec, max_pixels=1000).upscale(small, scale=2)


def test_api_argument_types(upscaler, small):
    ref = np.asarray(upscaler.upscale(small, scale=2))
    assert np.array_equal(np.asarray(upscaler.upscale(small, scale=np.float32(2.0))), ref)
    assert np.array_equal(np.asarray(upscaler.upscale(small, size=(64.0, np.int64(80)))), ref)
    assert np.array_equal(np.asarray(upscaler.upscale(small, scale=2, region=(3.0, 4, 10, 12))), ref[4:16, 3:13])
    for bad in (np.bool_(True), True, "2", "22", (2,), (2, 2, 2), 1j):
        with pytest.raises(LiifError, match="scale"):
            upscaler.upscale(small, scale=bad)
    for size in ((64.5, 80), (64, "80"), "64x80", (64, math.nan)):
        with pytest.raises(LiifError, match="size"):
            upscaler.upscale(small, size=size)
    with pytest.raises(LiifError, match="region"):
        upscaler.upscale(small, scale=2, region=(0.5, 0, 10, 10))
    for empty in (np.zeros((0, 5, 3), np.uint8), np.zeros((4, 0), np.float32)):
        with pytest.raises(LiifError, match="empty"):
            upscaler.upscale(empty, scale=2)
    with pytest.raises(LiifError, match="empty"):
        upscaler.upscale(torch.zeros(3, 0, 4), scale=2)
    with pytest.raises(LiifError, match="device meta"):
        upscaler.upscale(torch.zeros(3, 4, 4, device="meta"), scale=2)
    for sparse in (torch.rand(3, 4, 4).to_sparse(), torch.rand(1, 3, 4, 4).to_sparse()):
        with pytest.raises(LiifError, match=f"tensor input must be dense; got layout {sparse.layout} "
                                            r"\(convert it with t.to_dense\(\)\)"):
            upscaler.upscale(sparse, scale=2)
    with pytest.raises(LiifError, match="unknown method"):
        api.Upscaler(upscaler.model, upscaler.spec, method="bogus")
    with pytest.raises(LiifError, match="unknown device"):
        api.load("edsr-baseline-liif", device="bogus")
    if not torch.cuda.is_available():
        with pytest.raises(LiifError, match="CUDA is not available"):
            api.load("edsr-baseline-liif", device="cuda:0")
