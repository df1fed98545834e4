"""Parity with the official code's golden outputs (../shared/golden)."""
import numpy as np
import pytest
from PIL import Image

from conftest import GOLDEN, golden_cases, load_rgb
from liif import checkpoints
from liif.render import Window, render

CASES = golden_cases()
IDS = [c["npy"][:-4] for c in CASES]


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("method", ["reference", "fast"])
def test_raw_output_matches_golden(official, case, method):
    model, _ = official
    out = render(model, load_rgb(GOLDEN / case["input"]), tuple(case["out_hw"]), method=method)
    got = out.permute(1, 2, 0).numpy()
    gold = np.load(GOLDEN / case["npy"])
    assert got.shape == gold.shape
    diff = np.abs(got - gold).max()
    assert diff <= 1e-5, diff
    if method == "reference":
        assert diff == 0.0  # same ops on the same build: bit-identical


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_png_matches_golden(upscaler, case):
    res = upscaler.upscale(Image.open(GOLDEN / case["input"]), size=tuple(case["out_hw"]))
    got = np.asarray(res, dtype=np.int16)
    gold = np.asarray(Image.open(GOLDEN / case["png"]), dtype=np.int16)
    assert got.shape == gold.shape
    d = np.abs(got - gold)
    assert d.max() <= 1
    assert (d.any(axis=-1)).mean() <= 0.001


def test_round_trip_own_format_keeps_parity(official, official_path, tmp_path):
    model, spec = official
    path = checkpoints.save(model, spec, tmp_path / "edsr-baseline-liif.safetensors")
    model2, spec2 = checkpoints.load(path)
    assert spec2 == spec
    sd1, sd2 = model.state_dict(), model2.state_dict()
    assert sd1.keys() == sd2.keys() and all(sd1[k].equal(sd2[k]) for k in sd1)
    for case in CASES[:3] + CASES[-2:]:
        out = render(model2, load_rgb(GOLDEN / case["input"]), tuple(case["out_hw"]))
        assert np.abs(out.permute(1, 2, 0).numpy() - np.load(GOLDEN / case["npy"])).max() <= 1e-5
    # the spec also travels inside the safetensors metadata: the file alone is enough
    (tmp_path / "edsr-baseline-liif.json").unlink()
    model3, spec3 = checkpoints.load(path)
    assert spec3 == spec


def test_window_of_golden_equals_crop(official):
    model, _ = official
    case = CASES[1]
    img = load_rgb(GOLDEN / case["input"])
    win = Window(17, 31, 40, 53)
    out = render(model, img, tuple(case["out_hw"]), window=win).permute(1, 2, 0).numpy()
    gold = np.load(GOLDEN / case["npy"])[17:57, 31:84]
    assert np.abs(out - gold).max() <= 1e-5
