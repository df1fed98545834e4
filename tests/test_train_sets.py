"""`liif data fetch train`: the real download code (file:// sources standing in for GitHub), the
conversion (BMP -> PNG, central crops), verification by structure, and nothing half-written."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from liif import cli
from liif.data import train_sets
from liif.errors import LiifError


def _image(w: int, h: int, seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.fixture()
def local_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[train_sets.Part, ...]:
    """The real parts (names, sizes, crop), their sources written under tmp_path and served by file:// URLs."""
    parts = []
    for k, part in enumerate(train_sets.PARTS):
        src = tmp_path / "src" / part.folder
        src.mkdir(parents=True)
        for i, (name, _) in enumerate(part.files):
            w, h = (part.min_side + 3 + i % 5, part.min_side + 1) if part.crop is None else (401 + i % 3, 390)
            _image(w, h, 100 * k + i).save(src / name)
        parts.append(dataclasses.replace(part, base_url=src.as_uri() + "/"))
    monkeypatch.setattr(train_sets, "PARTS", tuple(parts))
    return tuple(parts)


def test_the_parts_name_t91_and_sun_hays_80() -> None:
    t91, sun = train_sets.PARTS
    assert (t91.folder, len(t91.files), sun.folder, len(sun.files), sun.crop) == ("T91", 91, "SunHays80", 80, 384)
    assert "t41" not in t91.stems and "tt11" not in t91.stems and t91.files[0] == ("t1.bmp", "t1")
    assert sun.files[-1] == ("img_080_SRF_8_HR.png", "img_080") and sun.base_url.startswith("https://")


def test_fetch_converts_crops_verifies_and_reuses(tmp_path: Path, local_parts, capsys) -> None:
    root = tmp_path / "data"
    assert cli.main(["data", "fetch", "train", "--root", str(root)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"train/T91: 91 images at {root / 'train' / 'T91'}",
                   f"train/SunHays80: 80 images at {root / 'train' / 'SunHays80'}"]
    t91, sun = local_parts
    got = Image.open(root / "train" / "T91" / "t2.png")
    bmp = Image.open(tmp_path / "src" / "T91" / "t2.bmp")
    assert got.format == "PNG" and np.array_equal(np.asarray(got), np.asarray(bmp))
    src = Image.open(tmp_path / "src" / "SunHays80" / "img_002_SRF_8_HR.png")  # 402 x 390
    crop = np.asarray(Image.open(root / "train" / "SunHays80" / "img_002.png"))
    assert crop.shape == (384, 384, 3) and np.array_equal(crop, np.asarray(src)[3:387, 9:393])
    assert cli.main(["data", "verify", "train", "--root", str(root)]) == 0
    # A second fetch reuses the verified folders: the sources may be gone.
    for f in (tmp_path / "src" / "T91").iterdir():
        f.unlink()
    assert [p.name for p in train_sets.fetch(root, progress=False)] == ["T91", "SunHays80"]
    assert "train\ttrain/T91\t91 images\tpresent" in (cli.main(["data", "--root", str(root), "list"]) == 0
                                                     and capsys.readouterr().out)


def test_a_bad_source_leaves_nothing_and_verify_names_the_problem(tmp_path: Path, local_parts, capsys) -> None:
    root = tmp_path / "data"
    (tmp_path / "src" / "SunHays80" / "img_007_SRF_8_HR.png").write_bytes(b"not a png")
    with pytest.raises(LiifError, match=r"img_007_SRF_8_HR\.png is not a readable image"):
        train_sets.fetch(root, progress=False)
    assert (root / "train" / "T91").is_dir() and not (root / "train" / "SunHays80").exists()
    assert not [p for p in (root / "train").iterdir() if p.name.startswith(".")]  # no staging left behind
    _image(300, 300, 1).save(tmp_path / "src" / "SunHays80" / "img_007_SRF_8_HR.png")  # too small to crop
    (root / "downloads" / "SunHays80" / "img_007_SRF_8_HR.png").unlink()
    with pytest.raises(LiifError, match=r"300x300 is smaller than the 384 px crop"):
        train_sets.fetch(root, progress=False)
    (root / "train" / "T91" / "t5.png").unlink()
    assert cli.main(["data", "verify", "train", "--root", str(root)]) == 1
    err = capsys.readouterr().err
    assert "1 of 91 images missing (e.g. t5.png)" in err and "run `liif data fetch train`" in err
    with pytest.raises(LiifError, match=r"fails verification .*re-fetch with --force"):
        train_sets.fetch(root, progress=False)
    _image(401, 390, 2).save(tmp_path / "src" / "SunHays80" / "img_007_SRF_8_HR.png")
    assert [len(list(p.glob("*.png"))) for p in train_sets.fetch(root, force=True, progress=False)] == [91, 80]
