"""CUDA paths: rendering in fp32/fp16/bf16, tiles and regions, the API, and training steps.

Every test here needs a CUDA device and is skipped, with the reason shown by ``pytest -rs``,
on machines without one (such as this project's CPU build machine).
"""
import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import DATA, load_rgb, tiny_config
from liif.render import Window, fp32_modes, render, render_tiles

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")

BUTTERFLY = load_rgb(DATA / "Set5" / "LR_bicubic" / "X4" / "img_002.png")[:, :37, :45]
MID = load_rgb(DATA / "Set5" / "HR" / "img_002.png")


@pytest.fixture(scope="module")
def on_cuda(official):
    model, _ = official
    return copy.deepcopy(model).cuda().eval()


@pytest.mark.parametrize("out_hw", [(61, 83), (148, 180), (37, 45)])
def test_cuda_fp32_equals_cpu_reference(official, on_cuda, out_hw):
    """fp32 on CUDA stays fp32 (TF32 is turned off for the render), so it matches the CPU reference."""
    model, _ = official
    ref = render(model, BUTTERFLY, out_hw, method="reference")
    fast = render(on_cuda, BUTTERFLY.cuda(), out_hw).cpu()
    assert (fast - ref).abs().max() <= 1e-4
    ref_cuda = render(on_cuda, BUTTERFLY.cuda(), out_hw, method="reference").cpu()
    assert (ref_cuda - ref).abs().max() <= 1e-4


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_cuda_half_precisions_stay_close(official, on_cuda, precision):
    model, _ = official
    ref = render(model, BUTTERFLY, (148, 180), method="reference")
    out = render(on_cuda, BUTTERFLY.cuda(), (148, 180), precision=precision).cpu()
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert (out - ref).abs().max() <= 5e-2


def test_cuda_tiles_and_regions_equal_the_full_render(on_cuda):
    img = MID.cuda()
    out_hw = (517, 389)  # x2.02 / x1.52, odd sizes
    full = render(on_cuda, img, out_hw, max_memory=1 << 34)
    assert len(list(render_tiles(on_cuda, img, out_hw, Window.full(out_hw), max_memory=64 << 20))) > 1
    tiled = render(on_cuda, img, out_hw, max_memory=64 << 20)
    assert (tiled - full).abs().max() <= 1e-5
    win = Window(y=500, x=0, h=17, w=389)  # touches the bottom, left and right borders
    part = render(on_cuda, img, out_hw, window=win, max_memory=64 << 20)
    assert (part - full[:, 500:, :]).abs().max() <= 1e-5


def test_cuda_upscale_png_equals_cpu(official_path: Path):
    import liif

    img = Image.open(DATA / "Set5" / "LR_bicubic" / "X4" / "img_001.png").convert("RGB")
    cpu = np.asarray(liif.load(official_path, device="cpu", precision="fp32").upscale(img, scale=3.3)).astype(int)
    up = liif.load(official_path, device="cuda", precision="fp32")
    assert up.device.type == "cuda"
    gpu = np.asarray(up.upscale(img, scale=3.3)).astype(int)
    assert cpu.shape == gpu.shape
    diff = np.abs(cpu - gpu)
    assert diff.max() <= 1 and (diff.any(axis=-1)).mean() <= 0.001


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_cuda_training_runs_in_each_precision(tmp_path: Path, precision: str):
    from liif.train import config
    from liif.train.loop import train

    cfg = config.load(tiny_config(tmp_path, **{"train.device": "cuda", "train.precision": precision,
                                                "train.epochs": 1}))
    summary = train(cfg, tmp_path / "run", progress=False)
    assert summary["step"] > 0 and math.isfinite(summary["loss"])
    assert (tmp_path / "run" / "checkpoints" / "last").is_dir()


def test_fp32_math_turns_tf32_off_and_restores_the_modes():
    from liif.render import fp32_math

    before = fp32_modes()
    with fp32_math(torch.device("cuda")):
        assert fp32_modes() in (("ieee", "ieee"), (False, False))
    assert fp32_modes() == before
