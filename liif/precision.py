"""Which number format a render or a training step runs in, chosen by what the hardware runs natively.

``auto`` (the default of the CLI, the API, the viewer and the training configs) resolves to

- CPU: ``bf16`` where oneDNN runs bf16 natively (AVX512-BF16 or AMX), else ``fp32``. On CPUs
  without bf16 instructions (AVX2-only laptops, AVX-512 without BF16) oneDNN emulates bf16 and is
  several times *slower* than fp32, so an explicit ``bf16`` there falls back to ``fp32`` with a
  warning line instead of backfiring.
- CUDA: ``bf16`` where the GPU supports it (Ampere and newer), else ``fp16``.

Capability comes from PyTorch's own queries: ATen's CPU capability (which ``ATEN_CPU_CAPABILITY``
caps), oneDNN's bf16 check (which ``ONEDNN_MAX_CPU_ISA`` caps) and the CPUID feature bits that
PyTorch reads (AVX512-BF16, AMX tiles). All three must agree for bf16 to count as native, so the
caps show on any machine what an AVX2 user sees.

``LIIF_CPU_BF16`` overrides the detection: ``off`` makes ``auto`` run fp32 on every CPU (the same
numbers on every machine), ``on`` treats bf16 as native even where oneDNN emulates it (slow; it
lets an AVX2 machine run the bf16 routes that AVX-512-BF16 users get from ``auto``, e.g. in tests).
"""
from __future__ import annotations

import functools
import os
import warnings
from dataclasses import dataclass

import torch

from liif.errors import LiifError

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16,
                                  "tf32": torch.float32}  # tf32: fp32 tensors, TF32 tensor-core math (CUDA)
CHOICES = ("auto", *DTYPES)
CHOICES_HELP = ("auto (default): bf16 on CPUs with native bf16 (AVX512-BF16/AMX) and on CUDA GPUs "
                "(fp16 where bf16 is missing), fp32 elsewhere. An explicit bf16 on a CPU without native "
                "bf16 warns and runs fp32, which is faster there; fp16 and tf32 (TF32 tensor-core math) need CUDA")


class PrecisionFallback(UserWarning):
    """An explicit precision was replaced by a faster one this hardware runs natively."""


@dataclass(frozen=True)
class CpuInfo:
    isa: str  # ATen's dispatch capability: DEFAULT, AVX2, AVX512, ...
    native_bf16: bool
    threads: int

    def describe(self) -> str:
        forced = f" ({BF16_ENV}={os.environ[BF16_ENV]})" if os.environ.get(BF16_ENV) else ""
        return f"CPU {self.isa}, native bf16 {'yes' if self.native_bf16 else 'no'}{forced}, {self.threads} threads"


BF16_ENV = "LIIF_CPU_BF16"


@functools.cache
def _native_bf16_cpu() -> bool:
    forced = os.environ.get(BF16_ENV, "").strip().lower()
    if forced in ("on", "off"):
        return forced == "on"
    if forced:
        raise LiifError(f"{BF16_ENV} must be on or off (or unset: detect), got {forced!r}")
    isa = torch.backends.cpu.get_cpu_capability()
    if isa in ("DEFAULT", "AVX2", "NO AVX"):
        return False
    try:
        onednn = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
    cpu = getattr(torch, "cpu", None)
    has_bf16 = bool(getattr(cpu, "_is_avx512_bf16_supported", lambda: False)())
    has_amx = bool(getattr(cpu, "_is_amx_tile_supported", lambda: False)())
    return onednn and (has_bf16 or has_amx)


def cpu_info() -> CpuInfo:
    return CpuInfo(torch.backends.cpu.get_cpu_capability(), _native_bf16_cpu(), torch.get_num_threads())


def native(device: torch.device) -> str:
    """The fastest precision that keeps the quality promise on ``device``."""
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if _native_bf16_cpu() else "fp32"


def resolve(requested: str, device: torch.device, fp32_only: bool = False) -> str:
    """The precision that will actually run for ``requested`` (auto/fp32/bf16/fp16) on ``device``.

    ``fp32_only``: the compute supports fp32 alone (the ONNX Runtime backend), so ``auto`` is fp32.
    An explicit bf16 on a CPU without native bf16 emits a :class:`PrecisionFallback` warning.
    """
    if requested not in CHOICES:
        raise LiifError(f"unknown precision {requested!r}; expected one of {', '.join(CHOICES)}")
    if requested == "auto":
        return "fp32" if fp32_only else native(device)
    if requested in ("fp16", "tf32") and device.type != "cuda":
        raise LiifError(f"{requested} needs a CUDA device; use bf16 (or auto) on the CPU")
    if requested == "bf16" and device.type == "cpu" and not _native_bf16_cpu():
        warnings.warn(f"bf16 is not native on this CPU ({cpu_info().isa}, no AVX512-BF16/AMX): running fp32, "
                      "which is faster here", PrecisionFallback, stacklevel=2)
        return "fp32"
    return requested


def dtype(precision: str) -> torch.dtype:
    """The tensor dtype of a concrete precision (fp32/tf32/bf16/fp16; tf32 tensors are fp32)."""
    if precision not in DTYPES:
        raise LiifError(f"unknown precision {precision!r}; expected one of {', '.join(DTYPES)}")
    return DTYPES[precision]


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The ``torch.autocast`` dtype of a concrete precision: bf16/fp16, or None for fp32 and tf32
    (which run fp32 tensors, without autocast)."""
    d = dtype(precision)
    return None if d == torch.float32 else d


__all__ = ["CHOICES", "CHOICES_HELP", "DTYPES", "CpuInfo", "PrecisionFallback", "autocast_dtype", "cpu_info", "dtype",
           "native", "resolve"]
