"""LMF through the one request pipeline: the CLI, streamed PNGs, `liif eval`, the viewer and video read an
official LM-LIIF / LM-LTE checkpoint like any other, and render what the fast route renders."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import liif
from conftest import GOLDEN, lmf_golden, make_eval_set
from liif import checkpoints, pipeline
from liif.cli import main
from liif.models import ModelSpec, build

INDEX = lmf_golden()
MODELS = INDEX["models"]
CHECKPOINT = {name: GOLDEN / "lmf" / m["checkpoint"] for name, m in MODELS.items()}


@pytest.mark.parametrize("name", list(MODELS))
def test_cli_upscale_writes_the_rounded_golden(name, tmp_path):
    """`liif upscale --weights <official .pth>` at a golden case (non-uniform x2.7 x x3): within 1 LSB."""
    case = next(c for c in MODELS[name]["cases"] if c["out_hw"] == [96, 171])
    H, W = case["out_hw"]
    out = tmp_path / "up.png"
    assert main(["upscale", str(GOLDEN / case["input"]), "--size", f"{W}x{H}", "--weights", str(CHECKPOINT[name]),
                 "--precision", "fp32", "-o", str(out), "--no-progress"]) == 0
    got = np.asarray(Image.open(out), dtype=np.int16)
    gold = np.load(GOLDEN / "lmf" / case["npy"]) * 0.5 + 0.5
    want = np.round(np.clip(gold, 0, 1) * 255).astype(np.int16)
    assert got.shape == want.shape == (H, W, 3)
    assert np.abs(got - want).max() <= 1 and (got != want).mean() < 1e-3


@pytest.mark.parametrize("name", list(MODELS))
def test_streamed_png_in_many_bands_equals_upscale(name, tmp_path, monkeypatch):
    up = liif.load(CHECKPOINT[name], device="cpu", precision="fp32")
    src = Image.open(GOLDEN / "set14_pepper_in.png").convert("RGB")
    monkeypatch.setattr(pipeline, "band_rows", lambda *a: 13)  # many bands, the last one short
    kw = dict(size=(123, 141), region=(5, 7, 101, 96))
    assert up.upscale_to_png(src, tmp_path / "o.png", **kw) == (101, 96)
    want = np.asarray(up.upscale(src, **kw))
    assert want.std() > 1
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "o.png")), want)


def test_eval_command_scores_an_lmf_checkpoint(tmp_path, capsys):
    """`liif eval` on LM-LIIF: the PSNR it prints is the Y-channel PSNR of the model's own render of the LR file
    (benchmark protocol, shave = scale), recomputed here from `upscale`."""
    root = make_eval_set(tmp_path / "Mini", [(48, 40)], lr_scales=(3,))
    rc = main(["eval", "--weights", str(CHECKPOINT["lm-liif"]), "--dataset", str(root), "--scales", "3",
               "--protocol", "benchmark", "--precision", "fp32", "--json", str(tmp_path / "r.json"),
               "--no-progress"])
    assert rc == 0
    rec = json.loads((tmp_path / "r.json").read_text())[0]
    assert rec["scale"] == 3 and rec["n_images"] == 1
    hr_file = next((root / "HR").iterdir())
    lr_file = next((root / "LR_bicubic" / "X3").iterdir())
    up = liif.load(CHECKPOINT["lm-liif"], device="cpu", precision="fp32")
    hr = np.asarray(Image.open(hr_file).convert("RGB"), np.float64) / 255
    sr = np.asarray(up.upscale(Image.open(lr_file).convert("RGB"), size=hr.shape[:2]), np.float64) / 255

    def y(rgb: np.ndarray) -> np.ndarray:  # ITU-R BT.601 luma of [0, 1] RGB, as the benchmark protocol
        return (16 + 65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]) / 255

    diff = (y(sr) - y(hr))[3:-3, 3:-3]
    want = -10 * np.log10(np.mean(diff ** 2))
    assert rec["psnr"] == pytest.approx(want, abs=0.05)


def test_viewer_renders_lmf_windows_as_the_region_render(tmp_path):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from liif.serve.app import create_app
    from liif.serve.limits import Limits

    images = tmp_path / "images"
    images.mkdir()
    src = Image.open(GOLDEN / "set5_butterfly_in.png").convert("RGB")
    src.save(images / "butterfly.png")
    up = liif.load(CHECKPOINT["lm-lte"], device="cpu", precision="fp32")
    limits = Limits(upload_bytes=200_000, input_pixels=300_000, view_pixels=40_000, download_pixels=100_000,
                    workers=1, queue=2)
    with TestClient(create_app(up, images, limits), base_url="http://localhost") as client:
        W, H, region = 456, 512, (150, 230, 120, 100)  # x8 of 57x64: beyond x4, the clipped cell
        r = client.get("/api/render", params={"image": "f:butterfly.png", "W": W, "H": H, "x": region[0],
                                              "y": region[1], "w": region[2], "h": region[3]})
        assert r.status_code == 200, r.text
    got = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"))
    want = np.asarray(up.upscale(src, size=(H, W), region=region))
    assert got.shape == (100, 120, 3)
    np.testing.assert_array_equal(got, want)


def test_video_frames_equal_image_upscales_with_lmf(tmp_path):
    """A small random LM-LIIF (random weights, small encoder) through `upscale_video`: frame = image upscale."""
    pytest.importorskip("av")
    from test_video import make_clip, read

    torch.manual_seed(0)
    spec = ModelSpec(method="lmliif", encoder_args={"n_resblocks": 1, "n_feats": 8}, hidden=[16] * 3,
                     hypernet_hidden=[32])
    path = tmp_path / "lm.safetensors"
    checkpoints.save(build(spec).eval(), spec, path)
    up = liif.load(path, device="cpu", precision="fp32")
    src, dst = tmp_path / "in.mkv", tmp_path / "out.mkv"
    frames = make_clip(src, n=4)
    rep = up.upscale_video(src, dst, scale=2.5, codec="libx264rgb", crf=0)
    assert (rep.frames_done, rep.frames_written, rep.out_size) == (4, 4, (120, 80))
    for rgb, got in zip(frames, read(dst)["rgb"], strict=True):
        want = up.upscale(rgb, scale=2.5)
        assert want.std() > 1
        np.testing.assert_array_equal(got, want)


def test_weights_list_shows_the_official_lmf_sources(capsys):
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    for name, blob in (("lm-liif", "b3e49670ee2cfdbd9c42f7cc0b6f56b592614cd4"),
                       ("lm-lte", "de7b1f5d91b83568f0306f88171aeecfe268ffb2")):
        block = out.split(f"\n{name}\t", 1)[1].split("\n\n")[0] if f"\n{name}\t" in out else ""
        assert f"verify: git-blob {blob}" in block and "Apache-2.0" in block
        assert "raw.githubusercontent.com/HeZongyao/LMF/17e356edb6b792b293d70450d64fad4e39e1b2e4" in block
    assert Path(liif.__file__).parent.joinpath("models", "lmliif.py").read_text().count(
        "b3e49670ee2cfdbd9c42f7cc0b6f56b592614cd4") == 1  # declared in the family's own file
