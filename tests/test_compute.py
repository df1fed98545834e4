"""Compute settings (liif.compute): the precision chosen by what the hardware runs natively, what a
capped CPU reports, and the Compute object that carries the resolved settings."""
from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import GOLDEN, ROOT
from liif import cli, imaging
from liif import compute as precision
from liif.errors import LiifError

CPU = torch.device("cpu")
AVX2_CAPS = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


@pytest.fixture
def no_native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "_native_bf16_cpu", lambda: False)


@pytest.fixture
def native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "_native_bf16_cpu", lambda: True)


def test_auto_follows_native_bf16_on_the_cpu(no_native_bf16: None) -> None:
    assert precision.resolve("auto", CPU) == "fp32"
    assert precision.resolve("auto", CPU, fp32_only=True) == "fp32"
    assert precision.resolve("fp32", CPU) == "fp32"


def test_auto_is_bf16_where_native(native_bf16: None) -> None:
    assert precision.resolve("auto", CPU) == "bf16"
    assert precision.resolve("auto", CPU, fp32_only=True) == "fp32"  # the ONNX Runtime backend
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert precision.resolve("bf16", CPU) == "bf16"  # native: no warning


def test_explicit_bf16_without_native_bf16_warns_and_runs_fp32(no_native_bf16: None) -> None:
    with pytest.warns(precision.PrecisionFallback, match="not native on this CPU.*running fp32"):
        assert precision.resolve("bf16", CPU) == "fp32"


@pytest.mark.parametrize("bad", ["fp8", "", "BF16"])
def test_unknown_precisions_are_refused(bad: str) -> None:
    with pytest.raises(LiifError, match="unknown precision"):
        precision.resolve(bad, CPU)


@pytest.mark.parametrize("cuda_only", ["fp16", "tf32"])
def test_cuda_only_precisions_are_refused_on_the_cpu(cuda_only: str) -> None:
    with pytest.raises(LiifError, match=f"{cuda_only} needs a CUDA device"):
        precision.resolve(cuda_only, CPU)


def test_the_avx2_caps_take_effect() -> None:
    """What CI's AVX2 pass relies on: with the caps, PyTorch reports AVX2 and oneDNN no bf16, so
    liif treats the machine as an AVX2 laptop whatever the host CPU is."""
    code = ("import torch; from liif import compute as precision; i = precision.cpu_info(); "
            "print(i.isa, torch.ops.mkldnn._is_mkldnn_bf16_supported(), i.native_bf16, "
            "precision.resolve('auto', torch.device('cpu')))")
    env = {k: v for k, v in os.environ.items() if k != precision.BF16_ENV}
    out = subprocess.run([sys.executable, "-c", code], env={**env, **AVX2_CAPS}, cwd=ROOT,
                         capture_output=True, text=True, timeout=120, check=True).stdout.split()
    assert out == ["AVX2", "False", "False", "fp32"]


def test_liif_cpu_bf16_overrides_the_detection() -> None:
    """LIIF_CPU_BF16=on gives an AVX2 machine (the caps) the bf16 routes of `auto` that AVX-512-BF16 users get
    (CI runs the route-comparison tests so); off gives every machine fp32; anything else is refused."""
    code = ("import torch; from liif import compute as precision; "
            "print(precision.cpu_info().native_bf16, precision.resolve('auto', torch.device('cpu')))")

    def run(value: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", code], env={**os.environ, **AVX2_CAPS, precision.BF16_ENV: value},
                              cwd=ROOT, capture_output=True, text=True, timeout=120)

    assert run("on").stdout.split() == ["True", "bf16"]
    assert run("off").stdout.split() == ["False", "fp32"]
    bad = run("maybe")
    assert bad.returncode != 0 and "LIIF_CPU_BF16 must be on or off (or unset: detect), got 'maybe'" in bad.stderr


def test_cli_bf16_on_a_cpu_without_it_warns_once_and_says_what_ran(
        no_native_bf16: None, official_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(["upscale", str(GOLDEN / "set14_comic_in.png"), "-o", str(tmp_path / "o.png"), "--scale", "1.5",
                   "--weights", str(official_path), "--device", "cpu", "--precision", "bf16", "-v"])
    err = capsys.readouterr().err
    assert rc == 0
    warning_lines = [ln for ln in err.splitlines() if ln.startswith("liif: warning:")]
    assert len(warning_lines) == 1 and "bf16 is not native" in warning_lines[0]
    assert "precision fp32 (asked bf16)" in err and "native bf16 no" in err


def test_upscaler_reports_the_precision_that_runs(no_native_bf16: None, official) -> None:
    from liif.api import Upscaler

    model, spec = official
    assert Upscaler(model, spec).precision == "fp32"
    assert Upscaler(model, spec, method="reference").precision == "fp32"
    with pytest.warns(precision.PrecisionFallback):
        assert Upscaler(model, spec, precision="bf16").precision == "fp32"


def test_quantize_rounds_to_nearest_by_default_and_truncates_on_request() -> None:
    x = np.array([0.0, 0.5 / 255, 1.49 / 255, 1.51 / 255, 254.6 / 255, 1.2, -0.1], dtype=np.float32)
    assert imaging.quantize(x).tolist() == [0, 0, 1, 2, 255, 255, 0]  # rint: half to even at 0.5
    assert imaging.quantize(x, mode="truncate").tolist() == [0, 0, 1, 1, 254, 255, 0]
    assert imaging.quantize(np.array([0.5 / 65535 * 3]), 16).tolist() == [2]
    with pytest.raises(LiifError, match="quantize"):
        imaging.quantize(x, mode="floor")


def test_cli_quantize_truncate_is_darker_by_half_a_level(official_path: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    args = [str(GOLDEN / "set14_comic_in.png"), "--scale", "2", "--weights", str(official_path),
            "--device", "cpu", "--precision", "fp32"]
    assert cli.main(["upscale", *args, "-o", str(tmp_path / "r.png")]) == 0
    assert cli.main(["upscale", *args, "--quantize", "truncate", "-o", str(tmp_path / "t.png")]) == 0
    r = np.asarray(Image.open(tmp_path / "r.png"), dtype=np.float64)
    t = np.asarray(Image.open(tmp_path / "t.png"), dtype=np.float64)
    assert 0.3 <= (r - t).mean() <= 0.7 and (r - t).min() >= 0 and (r - t).max() <= 1


def test_tensor_quantize_equals_the_numpy_rule() -> None:
    """The GPU path quantises with torch: it must give the very bytes of the NumPy finisher."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(-0.2, 1.2, 10000), (np.arange(256) + 0.5) / 255]).astype(np.float32)
    for mode in imaging.QUANTIZE:
        assert np.array_equal(imaging.quantize_tensor(torch.from_numpy(x), mode).numpy(), imaging.quantize(x, 8, mode))


def test_png_scoring_rounds_or_truncates() -> None:
    from liif.eval import metrics

    t = torch.tensor([0.0, 0.3 / 255, 0.7 / 255, 254.5 / 255, 1.5])
    assert (metrics.quantize_uint8(t) * 255).round().tolist() == [0, 0, 1, 254, 255]  # half to even
    assert (metrics.quantize_uint8(t, "truncate") * 255).round().tolist() == [0, 0, 0, 254, 255]


def test_compute_resolves_once_and_derives_the_rest():
    from liif.compute import DEFAULT_MAX_MEMORY, Compute

    c = Compute.resolve(CPU, "auto")
    assert c.precision == precision.native(CPU) and c.budget == DEFAULT_MAX_MEMORY == 256 << 20
    assert Compute.resolve(CPU, "auto", fp32_only=True).precision == "fp32"
    f = Compute.exact(CPU, "fp32", 64 << 20)
    assert (f.dtype, f.autocast_dtype, f.tf32, f.budget) == (torch.float32, None, False, 64 << 20)
    b = Compute.exact(CPU, "bf16")
    assert (b.dtype, b.autocast_dtype) == (torch.bfloat16, torch.bfloat16)
    with b.autocast():
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16 and torch.is_autocast_enabled("cpu")
    with f.autocast():
        assert not torch.is_autocast_enabled("cpu")
    assert f.with_precision("auto").budget == 64 << 20  # a per-request precision keeps the budget
    for bad, message in (("fp16", "fp16 rendering needs a CUDA device"), ("tf32", "tf32 rendering needs a CUDA"),
                         ("auto", "unknown precision 'auto'")):
        with pytest.raises(LiifError, match=message):
            Compute.exact(CPU, bad)
    with pytest.raises(LiifError, match="memory budget must be positive"):
        Compute.exact(CPU, "fp32", 0)
