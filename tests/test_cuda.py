"""CUDA paths: rendering in fp32/fp16/bf16, tiles and regions, the API, and training compared with the CPU.

Every test here needs a CUDA device and is skipped, with the reason shown by ``pytest -rs``,
on machines without one (such as this project's CPU build machine).
"""
import copy
import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import DATA, load_rgb, tiny_config
from liif.compute import fp32_modes
from liif.render import Window, render, render_tiles

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


def train_tiny(folder: Path, device: str, precision: str) -> tuple[dict, list[dict[str, str]], dict[str, torch.Tensor]]:
    """The tiny config trained 3 epochs (9 steps, every step logged): (summary, log rows, final weights)."""
    from liif import checkpoints
    from liif.train import config
    from liif.train.loop import train

    cfg = config.load(tiny_config(folder, **{"train.device": device, "train.precision": precision,
                                             "train.epochs": 3}))
    summary = train(cfg, folder / "run", progress=False)
    with open(folder / "run" / "log.csv") as f:
        rows = list(csv.DictReader(f))
    return summary, rows, checkpoints.read(folder / "run" / "checkpoints" / "last" / "model.safetensors")[1]


@pytest.fixture(scope="module")
def cpu_training(tmp_path_factory):
    """The CPU fp32 run the CUDA runs are compared with, and the initial weights both start from."""
    from liif.models import build
    from liif.train import config

    folder = tmp_path_factory.mktemp("cpu")
    summary, rows, weights = train_tiny(folder, "cpu", "fp32")
    cfg = config.load(folder / "tiny.yaml")
    torch.manual_seed(cfg.train.seed)  # as the training loop seeds before it builds the model
    initial = {k: v.detach().clone() for k, v in build(cfg.model_spec()).state_dict().items()}
    return summary, rows, weights, initial


@pytest.mark.parametrize("precision,loss_rtol,psnr_atol,update_rtol", [
    ("fp32", 1e-3, 0.01, 0.02),  # full fp32 on CUDA (TF32 off): the CPU run's numbers up to summation order
    ("bf16", 5e-2, 0.25, 0.5),   # half precisions round activations to 8 (bf16) or 11 (fp16) bits
    ("fp16", 5e-2, 0.25, 0.5),
])
def test_cuda_training_follows_the_cpu_run(tmp_path: Path, cpu_training, precision: str, loss_rtol: float,
                                           psnr_atol: float, update_rtol: float):
    """Same config, seed and batches on CUDA: the losses step by step and the validation PSNRs epoch by epoch
    follow the CPU fp32 run's, the validation PSNR improves as the CPU run's does, and the weights move from
    the same initial weights by about the same update."""
    ref_summary, ref_rows, ref_weights, initial = cpu_training
    summary, rows, weights = train_tiny(tmp_path, "cuda", precision)
    assert summary["precision"] == precision and summary["step"] == ref_summary["step"] == 9
    assert [r["step"] for r in rows] == [r["step"] for r in ref_rows] == [str(i) for i in range(1, 10)]
    losses = [float(r["loss"]) for r in rows]
    ref_losses = [float(r["loss"]) for r in ref_rows]
    assert all(math.isfinite(x) for x in losses)
    assert losses == pytest.approx(ref_losses, rel=loss_rtol)
    psnrs = [float(r["val_psnr"]) for r in rows if r["val_psnr"]]
    ref_psnrs = [float(r["val_psnr"]) for r in ref_rows if r["val_psnr"]]
    assert len(psnrs) == len(ref_psnrs) == 3 and ref_psnrs[-1] > ref_psnrs[0] + 0.1
    assert psnrs == pytest.approx(ref_psnrs, abs=psnr_atol) and psnrs[-1] > psnrs[0]
    assert weights.keys() == ref_weights.keys() == initial.keys()
    update = torch.cat([(weights[k].float() - initial[k].float()).flatten() for k in initial])
    ref_update = torch.cat([(ref_weights[k].float() - initial[k].float()).flatten() for k in initial])
    assert update.abs().max() >= 1e-3  # at least one Adam step of the learning rate (1e-3): it trained
    assert (update - ref_update).norm() <= update_rtol * ref_update.norm()


def test_fp32_math_turns_tf32_off_and_restores_the_modes():
    from liif.compute import fp32_math

    before = fp32_modes()
    with fp32_math(torch.device("cuda")):
        assert fp32_modes() in (("ieee", "ieee"), (False, False))
    assert fp32_modes() == before
