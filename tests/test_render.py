"""Fast renderer: equal to the reference, tiles and regions equal the full render, bounded memory."""
import subprocess
import sys

import pytest
import torch

from conftest import DATA, load_rgb
from liif.errors import LiifError
from liif.models import ModelSpec, build
from liif.render import Window, plan_tiles, render, render_tiles

BUTTERFLY = load_rgb(DATA / "Set5" / "LR_bicubic" / "X4" / "img_002.png")[:, :37, :45]  # odd 45x37 (WxH)
MID = load_rgb(DATA / "Set5" / "HR" / "img_002.png")[:, 13:114, 7:130]  # 123x101, big enough to tile


def test_fast_equals_reference_anisotropic(official):
    model, _ = official
    for out_hw in [(53, 211), (101, 67), (37, 45), (20, 30)]:  # x1.4/x4.7, x2.7/x1.5, x1, down-scale
        ref = render(model, BUTTERFLY, out_hw, method="reference")
        fast = render(model, BUTTERFLY, out_hw)
        assert (fast - ref).abs().max() <= 1e-4, out_hw


def small_model(**kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return build(ModelSpec(encoder_args={"n_resblocks": 3, "n_feats": 16}, hidden=[32, 32], **kw)).eval()


def test_tiled_equals_untiled_official(official):
    model, _ = official
    img = load_rgb(DATA / "Set5" / "HR" / "img_002.png")  # 256x256: big enough for EDSR's 35-pixel halo
    out_hw = (281, 290)
    full = render(model, img, out_hw, max_memory=1 << 34)
    tiles = list(render_tiles(model, img, out_hw, Window.full(out_hw), max_memory=200 << 20))
    assert len(tiles) >= 4
    tiled = torch.zeros_like(full)
    for (y, x), t in tiles:
        tiled[:, y:y + t.shape[1], x:x + t.shape[2]] = t
    assert (tiled - full).abs().max() <= 1e-5


@pytest.mark.parametrize("out_hw", [(151, 185), (97, 300), (64, 50)])
def test_tiled_equals_untiled_many_tiles(out_hw):
    model = small_model()
    full = render(model, MID, out_hw, max_memory=1 << 34)
    tiles = list(render_tiles(model, MID, out_hw, Window.full(out_hw), max_memory=4 << 20))
    assert len(tiles) > 4
    assert (render(model, MID, out_hw, max_memory=4 << 20) - full).abs().max() <= 1e-5


@pytest.mark.parametrize("window", [
    Window(0, 0, 13, 17),            # top-left corner
    Window(111 - 9, 135 - 11, 9, 11),  # bottom-right corner
    Window(40, 0, 1, 135),           # one full row
    Window(50, 60, 3, 2),            # tiny window inside one LR pixel (subpixel window)
])
def test_region_equals_crop_of_full(official, window):
    model, _ = official
    out_hw = (111, 135)
    full = render(model, BUTTERFLY, out_hw)
    part = render(model, BUTTERFLY, out_hw, window=window)
    crop = full[:, window.y:window.y + window.h, window.x:window.x + window.w]
    assert (part - crop).abs().max() <= 1e-6
    small = small_model()
    small_full = render(small, MID, out_hw, max_memory=1 << 34)
    tiled_part = render(small, MID, out_hw, window=window, max_memory=4 << 20)
    crop = small_full[:, window.y:window.y + window.h, window.x:window.x + window.w]
    assert (tiled_part - crop).abs().max() <= 1e-5


def test_region_of_huge_virtual_image(official):
    """x30 virtual output of 1350x1110: a window deep inside equals the reference's same window."""
    model, _ = official
    out_hw = (37 * 30, 45 * 30)
    win = Window(517, 733, 24, 31)
    ref = render(model, BUTTERFLY, out_hw, window=win, method="reference")
    fast = render(model, BUTTERFLY, out_hw, window=win)
    assert (fast - ref).abs().max() <= 1e-4


def test_bf16_close_to_fp32(official):
    model, _ = official
    a = render(model, BUTTERFLY, (74, 90))
    b = render(model, BUTTERFLY, (74, 90), precision="bf16")
    assert (a - b).abs().mean() < 0.02 and (a - b).abs().max() < 0.3


def test_ablation_models_render_exactly():
    torch.manual_seed(0)
    for kw in [dict(local_ensemble=False), dict(feat_unfold=False), dict(cell_decode=False)]:
        m = small_model(**kw)
        ref = render(m, MID, (125, 131), method="reference")
        assert (render(m, MID, (125, 131)) - ref).abs().max() <= 1e-5, kw
        assert (render(m, MID, (125, 131), max_memory=4 << 20) - ref).abs().max() <= 1e-5, kw


def test_preview_is_the_model_without_its_local_ensemble():
    """A preview plan (the viewer's coarse pass) decodes each pixel from its nearest code: the reference
    route of the same weights with the ensemble switched off, in tiles too, and not the full render."""
    import copy

    from liif.compute import Compute
    from liif.render.tiled import plan_render, render_planned

    m = small_model()
    plain = copy.deepcopy(m)
    plain.local_ensemble = False
    out_hw = (125, 131)
    want = render(plain, MID, out_hw, method="reference")
    for budget in (1 << 30, 4 << 20):
        plan = plan_render(m, (101, 123), out_hw, Window.full(out_hw), Compute.exact(MID.device, "fp32", budget),
                           local_ensemble=False)
        assert not plan.ensemble and (plan.rows.idx.shape[0], plan.cols.idx.shape[0]) == (1, 1)
        got = torch.zeros(3, *out_hw)
        for (y, x), t in render_planned(m, MID, plan):
            got[:, y:y + t.shape[1], x:x + t.shape[2]] = t
        assert (got - want).abs().max() <= 1e-5, budget
    assert (got - render(m, MID, out_hw)).abs().max() > 1e-2  # the ensemble does change the pixels


def test_rdn_tiling_uses_its_receptive_field():
    torch.manual_seed(0)
    m = build(ModelSpec(encoder="rdn", encoder_args={"D": 2, "C": 2, "G": 8, "G0": 8}, hidden=[16])).eval()
    assert m.encoder.receptive_radius == 1 * (2 + 2 * 2 + 1)
    img = torch.rand(3, 40, 40)
    full = render(m, img, (90, 90), max_memory=1 << 34)
    assert len(list(render_tiles(m, img, (90, 90), Window.full((90, 90)), max_memory=5 << 19))) > 1
    assert (render(m, img, (90, 90), max_memory=5 << 19) - full).abs().max() <= 1e-5


def test_errors(official):
    model, _ = official
    with pytest.raises(LiifError, match="outside"):
        render(model, BUTTERFLY, (50, 50), window=Window(40, 40, 20, 5))
    with pytest.raises(LiifError, match="window size must be positive"):
        render(model, BUTTERFLY, (50, 50), window=Window(0, 0, 0, 5))
    with pytest.raises(LiifError, match="too small for one tile"):
        render(model, BUTTERFLY, (500, 500), max_memory=1 << 20)
    with pytest.raises(LiifError, match="unknown precision"):
        render(model, BUTTERFLY, (50, 50), precision="fp8")
    with pytest.raises(LiifError, match="fp16 rendering needs a CUDA device"):
        render(model, BUTTERFLY, (50, 50), precision="fp16")


def test_tile_plan_respects_budget(official):
    """Working set per tile (LR footprint + halo) x bytes/pixel stays under the budget at any size."""
    from liif.render import STRIPE_BYTES_PER_PIXEL, plan_axis, stripe_pixels, working_set

    model, _ = official
    bpp, fixed = working_set(model, torch.float32)
    budget = 64 << 20
    fixed += stripe_pixels(budget) * STRIPE_BYTES_PER_PIXEL  # as render_tiles plans
    for lr in (64, 256, 1024, 4096):
        out = lr * 3
        rows = plan_axis(out, 0, out, lr, True, torch.device("cpu"))
        tiles = plan_tiles(rows, rows, lr, lr, 35, budget, bpp, fixed, Window.full((out, out)))
        (r0, r1), (c0, c1) = tiles[0]
        lr_side = min(lr, int(rows.idx[:, r0:r1].max() - rows.idx[:, r0:r1].min()) + 1 + 2 * 35)
        assert lr_side ** 2 * bpp + fixed <= budget


PEAK_SCRIPT = """
import resource, sys, torch
from liif.models import ModelSpec, build
from liif.render import Window, render_tiles
torch.manual_seed(0)
model = build(ModelSpec(encoder_args={"n_resblocks": 3, "n_feats": 16}, hidden=[32, 32])).eval()
side = int(sys.argv[1])
img = torch.rand(3, side, side)
out = side // 2  # the encoder sees every LR pixel; a down-scaled output keeps decoding cheap
n = 0
tiles = 0
for _, tile in render_tiles(model, img, (out, out), Window.full((out, out)), max_memory=16 << 20):
    tiles += 1
    n += tile.numel()
assert n == 3 * out * out and tiles > 1
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def test_peak_memory_flat_as_image_grows():
    """At a fixed 16 MiB budget, a 16x larger image (whose unfolded map alone would take 340 MB) does
    not raise the process peak RSS beyond noise. A small EDSR keeps the run short; the tiling logic
    is the same for every encoder."""
    peaks = {}
    for side in (192, 768):
        res = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(side)], capture_output=True, text=True,
                             timeout=600)
        assert res.returncode == 0, res.stderr
        peaks[side] = int(res.stdout.strip().splitlines()[-1])
    print("peak RSS by LR side:", peaks)
    unfold_bytes = 768 * 768 * 16 * 9 * 4  # what the reference would materialise at 768x768
    assert unfold_bytes > 300e6
    assert peaks[768] - peaks[192] < 30e6, peaks  # the input tensor itself grows by 7 MB


def test_progress_bar_counts_every_pixel(official, monkeypatch):
    import tqdm

    seen = {}

    class Recorder:
        def __init__(self, total, delay, **kw):
            seen.update(total=total, delay=delay, done=0)

        def update(self, n):
            seen["done"] += n

        def close(self):
            seen["closed"] = True

    monkeypatch.setattr(tqdm, "tqdm", Recorder)
    model, _ = official
    render(model, MID, (150, 170), max_memory=50 << 20, progress=True)  # several tiles and stripes
    assert seen == {"total": 150 * 170, "delay": 1.0, "done": 150 * 170, "closed": True}


def test_fused_cpu_linear_equals_plain_linear(official, monkeypatch):
    """The oneDNN fused linear+ReLU route (CPU default) and the plain F.linear route agree."""
    from liif import render as R

    model, _ = official
    if not R.fused_linear_available(torch.device("cpu"), torch.float32):
        pytest.skip("this PyTorch build has no oneDNN fused linear op")
    fused = render(model, BUTTERFLY, (61, 83))
    monkeypatch.setenv("LIIF_NO_FUSED_LINEAR", "1")
    assert not R.TorchBackend(model).fused
    plain = render(model, BUTTERFLY, (61, 83))
    assert (fused - plain).abs().max() <= 1e-5


def test_fp32_mode_helpers_round_trip():
    """The CUDA fp32 guard's save/set/restore of the process-wide TF32 modes (runs on any build)."""
    from liif.compute import fp32_math, fp32_modes, set_fp32_modes

    before = fp32_modes()
    try:
        set_fp32_modes(("ieee", "ieee") if isinstance(before[0], str) else (False, False))
        assert fp32_modes() != before or before in (("ieee", "ieee"), (False, False))
    finally:
        set_fp32_modes(before)
    assert fp32_modes() == before
    with fp32_math(torch.device("cpu")):  # a no-op on the CPU
        assert fp32_modes() == before


def test_encoder_gets_dense_channels_last_input(official):
    """A crop of an (H, W, 3) image, as the pipeline slices it, reaches the encoder as a dense channels-last
    tensor (oneDNN runs its slow reference convolution on the crop's own strides), with the same features."""
    from liif.render.backend import TorchBackend

    model, _ = official
    hwc = (MID.permute(1, 2, 0) * 255).round().to(torch.uint8).contiguous()  # a decoded 8-bit image
    crop = hwc.permute(2, 0, 1)[None, :, 10:70, 20:100]  # batch stride 3, rows of the whole width
    seen = []
    hook = model.encoder.register_forward_pre_hook(lambda mod, args: seen.append(args[0].stride()))
    try:
        backend = TorchBackend(model)
        got = backend.encode(crop)
        want = backend.encode(crop.contiguous())
    finally:
        hook.remove()
    assert seen[0] == (60 * 80 * 3, 1, 80 * 3, 3)
    assert (got - want).abs().max() <= 1e-6
