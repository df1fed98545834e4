"""Training/validation data: folders, the implicit-downsampled wrapper, fixed-scale pairs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import DATA
from liif.coords import make_coord
from liif.data.folders import ImageFolder, PairedFolders, div2k
from liif.data.resize import resize_uint8
from liif.data.sampling import FixedScale, ImplicitDownsampled
from liif.errors import LiifError


def _write(folder: Path, name: str, hw: tuple[int, int], seed: int = 0, fmt: str = "PNG") -> np.ndarray:
    folder.mkdir(parents=True, exist_ok=True)
    a = np.random.default_rng(seed).integers(0, 256, (*hw, 3), dtype=np.uint8)
    Image.fromarray(a).save(folder / name, format=fmt)
    return a


def test_image_folder_sorted_repeat_cache(tmp_path: Path) -> None:
    b = _write(tmp_path, "b.png", (10, 12), 1)
    a = _write(tmp_path, "a.png", (8, 9), 2)
    (tmp_path / "notes.txt").write_text("not an image")
    _write(tmp_path, "c.jpg", (16, 16), 3, "JPEG")
    for cache in ("none", "memory"):
        ds = ImageFolder(tmp_path, repeat=3, cache=cache)
        assert [f.name for f in ds.files] == ["a.png", "b.png", "c.jpg"]
        assert len(ds) == 9
        np.testing.assert_array_equal(ds[0], a)
        np.testing.assert_array_equal(ds[4], b)  # index modulo the 3 files
        assert ds[2].shape == (16, 16, 3) and ds[2].dtype == np.uint8
        assert ds.sizes() == [(8, 9), (10, 12), (16, 16)]


def test_folder_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(LiifError, match="not found: .*nope"):
        ImageFolder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LiifError, match=r"empty holds no images \(\.bmp, \.jpeg, \.jpg, \.png, \.tif, \.tiff, \.webp"):
        ImageFolder(tmp_path / "empty")


def test_paired_folders_and_div2k_layout(tmp_path: Path) -> None:
    root = tmp_path / "DIV2K"
    hr = _write(root / "DIV2K_valid_HR", "0801.png", (16, 24), 1)
    lr = _write(root / "DIV2K_valid_LR_bicubic" / "X4", "0801x4.png", (4, 6), 2)
    pair = div2k(root, "valid", scale=4)
    got_lr, got_hr = pair[0]
    np.testing.assert_array_equal(got_lr, lr)
    np.testing.assert_array_equal(got_hr, hr)
    assert len(div2k(root, "valid")) == 1
    _write(tmp_path / "lr", "x.png", (4, 4))
    _write(tmp_path / "hr", "y.png", (8, 8))
    with pytest.raises(LiifError, match="same file names"):
        PairedFolders(tmp_path / "lr", tmp_path / "hr")


FLIPS = [(a, b, c) for a in (0, 1) for b in (0, 1) for c in (0, 1)]


def _apply(a: np.ndarray, f: tuple[int, int, int]) -> np.ndarray:
    a = a[::-1] if f[0] else a
    a = a[:, ::-1] if f[1] else a
    return a.transpose(1, 0, 2) if f[2] else a


def _undo(a: np.ndarray, f: tuple[int, int, int]) -> np.ndarray:
    a = a.transpose(1, 0, 2) if f[2] else a
    a = a[:, ::-1] if f[1] else a
    return np.ascontiguousarray(a[::-1] if f[0] else a)


def _full(ds: ImplicitDownsampled, i: int) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Item i with every HR pixel as a query: (coord, HR crop uint8 (h, w, 3), LR uint8)."""
    it = ds[i]
    n = int(round(2 / float(it["cell"][0, 0])))
    hr = (it["gt"].reshape(n, -1, 3) * 255).round().to(torch.uint8).numpy()
    lr = (it["inp"].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    return it["coord"], hr, lr


@pytest.mark.parametrize("augment", [False, True])
def test_implicit_downsampled_lr_is_pil_bicubic_of_the_hr_crop(tmp_path: Path, augment: bool) -> None:
    img = _write(tmp_path, "a.png", (150, 170), 5)
    ds = ImplicitDownsampled(ImageFolder(tmp_path, repeat=4), inp_size=24, scale_min=1.0, scale_max=3.0,
                             augment=augment, sample_q=None, seed=7)
    for i in range(4):
        coord, hr, lr = _full(ds, i)
        side = hr.shape[0]
        assert hr.shape == (side, side, 3) and 24 <= side <= 72
        # The LR is made from the un-augmented crop, then both get the same flips/transpose
        # (PIL bicubic is not exactly flip-equivariant, so the order is observable).
        assert any(np.array_equal(lr, _apply(resize_uint8(_undo(hr, f), (24, 24)), f)) for f in FLIPS)
        if not augment:
            np.testing.assert_array_equal(lr, resize_uint8(np.ascontiguousarray(hr), (24, 24)))
        assert torch.equal(coord, make_coord((side, side)))
        if not augment:  # the crop is a window of the source image
            hits = [(y, x) for y in range(150 - side + 1) for x in range(170 - side + 1)
                    if np.array_equal(img[y, x], hr[0, 0]) and np.array_equal(img[y:y + side, x:x + side], hr)]
            assert hits


def test_implicit_downsampled_sampling_and_determinism(tmp_path: Path) -> None:
    _write(tmp_path, "a.png", (100, 100), 1)
    ds = ImplicitDownsampled(ImageFolder(tmp_path, repeat=8), inp_size=16, scale_max=4.0, sample_q=200, seed=3)
    it = ds[2]
    assert it["inp"].shape == (3, 16, 16) and it["coord"].shape == (200, 2)
    assert it["gt"].shape == (200, 3) and it["cell"].shape == (200, 2)
    assert len({tuple(c.tolist()) for c in it["coord"]}) == 200  # without replacement
    side = 2 / it["cell"][0]
    assert torch.allclose(side, side.round()) and 16 <= side[0] <= 64
    again = ds[2]
    assert all(torch.equal(it[k], again[k]) for k in it)
    ds.set_epoch(1)
    assert not torch.equal(ds[2]["coord"], it["coord"])
    scales = [float(2 / ds[i]["cell"][0, 0]) / 16 for i in range(8)]
    assert 1 <= min(scales) and max(scales) <= 4 and max(scales) - min(scales) > 0.3


def test_small_images_are_handled(tmp_path: Path) -> None:
    _write(tmp_path, "big.png", (60, 70), 1)
    _write(tmp_path, "tiny.png", (20, 20), 2)
    with pytest.warns(UserWarning, match="1 image.*smaller than 48 px"):
        ds = ImplicitDownsampled(ImageFolder(tmp_path), inp_size=48, scale_min=3.0, scale_max=4.0, sample_q=100)
    assert len(ds) == 1
    it = ds[0]
    assert it["inp"].shape == (3, 48, 48)
    assert float(2 / it["cell"][0, 0]) == pytest.approx(60)  # scale capped to what the image allows
    only_tiny = tmp_path / "t"
    _write(only_tiny, "tiny.png", (20, 20))
    with pytest.raises(LiifError, match="at least 48 px"):
        ImplicitDownsampled(ImageFolder(only_tiny), inp_size=48)


def test_fixed_scale_pairs_from_files_and_downsampled(tmp_path: Path) -> None:
    paired = FixedScale(PairedFolders(DATA / "Set5" / "LR_bicubic" / "X4", DATA / "Set5" / "HR"), 4)
    lr, hr = paired[0]
    assert hr.shape[-2:] == (lr.shape[-2] * 4, lr.shape[-1] * 4)
    src = _write(tmp_path, "a.png", (50, 43), 1)
    down = FixedScale(ImageFolder(tmp_path), 3)
    lr, hr = down[0]
    assert lr.shape == (3, 16, 14) and hr.shape == (3, 48, 42)
    np.testing.assert_array_equal((hr.permute(1, 2, 0) * 255).round().byte().numpy(), src[:48, :42])
    want = resize_uint8(np.ascontiguousarray(src[:48, :42]), (16, 14))
    np.testing.assert_array_equal((lr.permute(1, 2, 0) * 255).round().byte().numpy(), want)
