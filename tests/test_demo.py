"""The embedded default job behind scripts/quickstart.sh."""
import numpy as np
from PIL import Image

from liif import demo


def test_test_card_is_deterministic():
    a, b = np.asarray(demo.test_card()), np.asarray(demo.test_card())
    assert a.shape == (96, 96, 3) and np.array_equal(a, b) and a.std() > 30


def test_demo_writes_scales_and_comparison(upscaler, tmp_path):
    small = demo.test_card(32)
    paths = demo.run(upscaler, tmp_path, image=small)
    names = sorted(p.name for p in paths)
    assert names == ["compare_bicubic_vs_liif.png", "input.png", "liif_x2.png", "liif_x3.5.png", "liif_x8.png"]
    assert Image.open(tmp_path / "liif_x3.5.png").size == (112, 112)
    sheet = Image.open(tmp_path / "compare_bicubic_vs_liif.png")
    assert sheet.size == (2 * 256 + 24, 256 + 32)
    # LIIF is sharper than bicubic on the card: more high-frequency energy in the right half
    arr = np.asarray(sheet.convert("L"), dtype=np.float32)[24:24 + 256]
    left, right = arr[:, 8:8 + 256], arr[:, 256 + 16:256 + 16 + 256]
    assert np.abs(np.diff(right, axis=1)).mean() > np.abs(np.diff(left, axis=1)).mean()
