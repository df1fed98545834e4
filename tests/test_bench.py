"""``liif bench infer``: its arithmetic (multiply-adds per pixel, counted by hand from the layer shapes) and a
small end-to-end run whose report is checked field by field (the figures derived from the timings must agree
with each other and with the MAC counts; no timing or speed ratio is asserted)."""
import json
import math
import re
from pathlib import Path

import pytest
import torch

from liif import cli
from liif.bench.macs import encoder_macs_per_pixel, fast_macs, macs_per_pixel
from liif.models import ModelSpec, build
from liif.render import Window


def test_decoder_macs_match_the_issue_figures(official):
    model, _ = official
    # official route: 4 codes x (580*256 + 3*256*256 + 256*3); folded: layer 0 becomes the 4-wide
    # offset-and-cell term (the 576 code inputs are the conv of the LR maps, counted per LR pixel)
    assert macs_per_pixel(model, folded=False) == 4 * (580 * 256 + 3 * 256 * 256 + 256 * 3) == 1_383_424
    assert macs_per_pixel(model, folded=True) == 4 * (4 * 256 + 3 * 256 * 256 + 256 * 3) == 793_600


def test_lte_decoder_macs(lte):
    model, _ = lte
    # per code: 128 two-term frequency dot products + the 2 -> 128 phase + A * basis, then 256-256-256-256-3
    per_code = 2 * 128 + 2 * 128 + 256 + 3 * 256 * 256 + 256 * 3
    assert macs_per_pixel(model, folded=True) == macs_per_pixel(model, folded=False) == 4 * per_code
    assert model.macs_per_lr_pixel() == 2 * 256 * 64 * 9  # A and Q, 3x3 convs of the 64 features


def test_fast_macs_counts_encoder_on_the_window_footprint(official):
    model, _ = official
    enc = 64 * 3 * 9 + 32 * 64 * 64 * 9 + 64 * 64 * 9  # head, 16 blocks x 2 convs, body tail
    assert encoder_macs_per_pixel(model) == enc  # the unused mean-shift modules do not count
    per_lr = enc + 576 * 256
    full = fast_macs(model, (40, 50), (80, 100), Window.full((80, 100)))
    assert full == 40 * 50 * per_lr + 80 * 100 * 793_600
    # a 4x4 window at x2 far from the borders needs 4x4 codes (2 + the ensemble's neighbours) and
    # encodes them plus the halo (receptive radius + 1 = 35 pixels: 34 stacked 3x3 convolutions)
    assert model.encoder.receptive_radius + 1 == 35
    inner = fast_macs(model, (400, 500), (800, 1000), Window(400, 500, 4, 4))
    assert inner == (4 + 2 * 35) ** 2 * per_lr + 16 * 793_600


# A small LIIF: EDSR-baseline with 2 blocks of 8 features, MLP 16 -> 3. Its encoder runs the head conv
# (3 -> 8), 2 blocks x 2 convs (8 -> 8) and the body's tail conv (8 -> 8), all 3x3: 3*8*9 + 5*8*8*9 = 3096
# multiply-adds per LR pixel, and stacks 6 of them (receptive radius 6, halo 7).
SMALL_ENCODER_MACS = 3 * 8 * 9 + 5 * 8 * 8 * 9


@pytest.mark.parametrize("ensemble,unfold,cell,code_in,per_pixel,folded,lr_maps", [
    # code_in: the code's width at layer 0 (8 features, x9 when unfolded); the MLP input adds the 2-wide
    # offset and the 2-wide cell. Official: codes x (in * 16 + 16 * 3); folded: codes x ((2 or 4) * 16 + 16 * 3)
    # with layer 0's code part (code_in * 16) a convolution of the LR maps, counted per LR pixel.
    (True, True, True, 72, 4 * (76 * 16 + 16 * 3), 4 * (4 * 16 + 16 * 3), 72 * 16),
    (False, False, False, 8, 1 * (10 * 16 + 16 * 3), 1 * (2 * 16 + 16 * 3), 8 * 16),
    (True, False, True, 8, 4 * (12 * 16 + 16 * 3), 4 * (4 * 16 + 16 * 3), 8 * 16),
])
def test_small_model_macs_by_hand(ensemble, unfold, cell, code_in, per_pixel, folded, lr_maps):
    spec = ModelSpec(encoder_args={"n_resblocks": 2, "n_feats": 8}, hidden=[16], local_ensemble=ensemble,
                     feat_unfold=unfold, cell_decode=cell)
    model = build(spec)
    assert model.n_feat == code_in
    assert macs_per_pixel(model, folded=False) == per_pixel
    assert macs_per_pixel(model, folded=True) == folded
    assert model.macs_per_lr_pixel() == lr_maps
    assert encoder_macs_per_pixel(model) == SMALL_ENCODER_MACS == 3096
    per_lr = SMALL_ENCODER_MACS + lr_maps
    # the whole image: every LR pixel encoded once, the folded decoder on every output pixel
    assert fast_macs(model, (10, 12), (20, 24), Window.full((20, 24))) == 10 * 12 * per_lr + 20 * 24 * folded
    # a 4x4 window at x2 inside the image: 2 codes a side (4 with the ensemble's neighbours), plus the halo of 7
    codes = 4 if ensemble else 2
    assert model.encoder.receptive_radius + 1 == 7
    inner = fast_macs(model, (60, 60), (120, 120), Window(60, 60, 4, 4))
    assert inner == (codes + 2 * 7) ** 2 * per_lr + 16 * folded


def test_bench_infer_small_run_prints_ratios_and_writes_json(official, official_path: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    rc = cli.main(["bench", "infer", "--weights", str(official_path), "--size", "24", "--scales", "2,3.5",
                   "--repeat", "1", "--device", "cpu", "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "measured matmul peak" in text and "x3.5 (84x84" in text and "bound at peak" in text
    report = json.loads(out.read_text())
    cpu = report["cpu"]
    assert cpu["isa"] == torch.backends.cpu.get_cpu_capability() and f"CPU {cpu['isa']}, native bf16" in text
    # bf16 is timed only where the CPU runs it natively; elsewhere the bench says why it is skipped
    assert report["precisions"] == (["fp32", "bf16"] if cpu["native_bf16"] else ["fp32"])
    assert ("skipped bf16: not native" in text) != cpu["native_bf16"]
    model, spec = official
    assert set(report) == {"model", "device", "where", "torch", "cpu", "precisions", "skipped", "throughput"}
    assert report["model"] == spec.to_dict() and report["device"] == "cpu" and report["torch"] == torch.__version__
    rows = report["throughput"]
    assert [r["scale"] for r in rows] == [2.0, 3.5]
    assert [r["output"] for r in rows] == ["48x48", "84x84"]
    unfolded, folded = macs_per_pixel(model, folded=False), macs_per_pixel(model, folded=True)
    printed = re.search(r"measured matmul peak .*: fp32 ([\d,]+) GFLOP/s", text)
    assert printed, text
    printed_peak_fp32 = float(printed.group(1).replace(",", ""))
    for r, side in zip(rows, (48, 84), strict=True):
        # the window is the whole output (under --max-window-px), so the work is fast_macs of the full window
        assert r["window_px"] == side * side
        per_prec = ["fast_{}_px_s", "{}_speedup", "{}_max_abs_diff", "{}_peak_fraction", "{}_speedup_bound"]
        assert set(r) == {"scale", "output", "window_px", "reference_px_s", "reference_peak_fraction",
                          *(k.format(p) for p in report["precisions"] for k in per_prec)}
        t_ref = r["window_px"] / r["reference_px_s"]
        assert math.isfinite(t_ref) and t_ref > 0
        # the fp32 matmul peak the report was computed with, recovered from the reference's fraction of it
        peak_fp32 = r["reference_px_s"] * unfolded * 2 / 1e9 / r["reference_peak_fraction"]
        assert abs(peak_fp32 - printed_peak_fp32) <= 0.5 + 1e-6 * peak_fp32  # printed rounded to 1 GFLOP/s
        work = 2 * fast_macs(model, (24, 24), (side, side), Window.full((side, side))) / 1e9
        for p in report["precisions"]:
            # the fast route renders what the reference renders
            assert r[f"{p}_max_abs_diff"] <= (1e-4 if p == "fp32" else 5e-2)
            t = r["window_px"] / r[f"fast_{p}_px_s"]
            assert math.isfinite(t) and t > 0
            assert r[f"{p}_speedup"] == pytest.approx(t_ref / t, rel=1e-9)
            peak = r[f"fast_{p}_px_s"] * folded * 2 / 1e9 / r[f"{p}_peak_fraction"]
            if p == "fp32":
                assert peak == pytest.approx(peak_fp32, rel=1e-9)  # both fractions are of the same peak
            assert r[f"{p}_speedup_bound"] == pytest.approx(t_ref / (work / peak), rel=1e-9)
        assert "bf16_speedup" not in r or cpu["native_bf16"]


def test_bench_infer_compare_times_fast_routes_side_by_side(official, official_path: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """--compare: the fast routes of LIIF and LM-LIIF on the same windows, in each native precision; the
    baseline's speed-up is 1, each time splits into the encoder (timed alone) and the rest, MACs counted."""
    from liif import checkpoints

    lm_path = Path(__file__).parent / "data" / "golden" / "lmf" / "lm-liif-edsr-baseline-random.pth"
    out = tmp_path / "compare.json"
    rc = cli.main(["bench", "infer", "--weights", str(official_path), "--compare", str(lm_path), "--size", "20",
                   "--scales", "2,4", "--repeat", "1", "--device", "cpu", "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "the fast routes of 2 models" in text and "without the encoder" in text
    report = json.loads(out.read_text())
    assert "throughput" not in report
    rows = report["compare"]
    assert [(r["scale"], r["precision"]) for r in rows] == [
        (s, p) for s in (2.0, 4.0) for p in report["precisions"] for _ in range(2)]
    lm, _ = checkpoints.load(lm_path)
    for base, other in zip(rows[::2], rows[1::2], strict=True):
        assert base["method"] == "liif" and other["method"] == "lmliif"
        assert base["speedup"] == 1.0
        assert other["speedup"] == pytest.approx(base["seconds"] / other["seconds"], rel=1e-9)
        # the part after the encoder is a difference of two timings: on inputs this small, noise may make it <= 0,
        # and then no ratio is given
        rests = [r["seconds"] - r["encoder_s"] for r in (base, other)]
        assert [r["decoder_s"] for r in (base, other)] == pytest.approx(rests, rel=1e-9)
        if min(rests) > 0:
            assert base["decoder_speedup"] == pytest.approx(1.0)
            assert other["decoder_speedup"] == pytest.approx(rests[0] / rests[1], rel=1e-9)
        else:
            assert other["decoder_speedup"] is None
        assert base["speedup_bound_by_encoder"] == pytest.approx(base["seconds"] / base["encoder_s"], rel=1e-9)
        assert 0 < base["encoder_s"] and 0 < other["encoder_s"]
        assert base["macs_per_output_px"] == macs_per_pixel(official[0], folded=True) == 793_600
        assert other["macs_per_output_px"] == macs_per_pixel(lm, folded=True) == 5_760
        assert other["macs_per_lr_px"] == encoder_macs_per_pixel(lm) + lm.macs_per_lr_pixel()
        side = round(20 * base["scale"])
        assert base["window"] == other["window"] == f"{side}x{side}"
