"""``liif bench infer``: its arithmetic (multiply-adds per pixel) and a small end-to-end run."""
import json
from pathlib import Path

import pytest
import torch

from liif import cli
from liif.bench.macs import encoder_macs_per_pixel, fast_macs, macs_per_pixel
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


def test_bench_infer_small_run_prints_ratios_and_writes_json(official_path: Path, tmp_path: Path,
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
    rows = report["throughput"]
    assert [r["scale"] for r in rows] == [2.0, 3.5]
    for r in rows:
        for p in report["precisions"]:
            assert r[f"{p}_max_abs_diff"] <= (1e-4 if p == "fp32" else 5e-2)
            assert r[f"{p}_speedup"] > 0 and r[f"{p}_speedup_bound"] > 0  # ratios only: no hardware claim
        assert "bf16_speedup" not in r or cpu["native_bf16"]
