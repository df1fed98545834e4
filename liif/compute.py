"""Compute settings, resolved once: the device, the number format that runs, TF32, the memory budget.

A :class:`Compute` is made when an ``Upscaler``, a training run or a bench is built and is passed
down; the renderer and the training step read its fields and never resolve a setting again.

Which number format runs is chosen by what the hardware runs natively.

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

import contextlib
import functools
import os
import threading
import warnings
from collections.abc import Iterator
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


DEFAULT_MAX_MEMORY = 256 << 20  # render working memory on the CPU; on CUDA a quarter of the GPU's memory


def default_budget(device: torch.device) -> int:
    """The working-memory budget when none is given: 256 MiB on the CPU, a quarter of the GPU's memory on CUDA."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory // 4)
    return DEFAULT_MAX_MEMORY


@dataclass(frozen=True)
class Compute:
    """How a model runs, resolved once: ``device``; ``precision``, the concrete format that runs
    (fp32, tf32, bf16 or fp16: never auto); ``budget``, the bytes of working memory of one render.
    ``dtype`` is the tensor dtype, ``autocast_dtype`` the ``torch.autocast`` dtype (None: fp32
    tensors, no autocast) and ``tf32`` whether CUDA float32 math may use TF32."""

    device: torch.device
    precision: str
    budget: int

    def __post_init__(self) -> None:
        if self.precision not in DTYPES:
            raise LiifError(f"unknown precision {self.precision!r}; expected one of {', '.join(DTYPES)}")
        if self.precision in ("fp16", "tf32") and self.device.type != "cuda":
            raise LiifError(f"{self.precision} rendering needs a CUDA device; use bf16 or fp32 on the CPU")
        if self.budget <= 0:
            raise LiifError(f"the memory budget must be positive, got {self.budget}")

    @classmethod
    def resolve(cls, device: torch.device, precision: str = "auto", max_memory: int | None = None,
                fp32_only: bool = False) -> Compute:
        """The settings for a request: ``auto`` and the bf16 fallback resolved (:func:`resolve`),
        ``max_memory=None`` replaced by the device's default budget."""
        return cls.exact(device, resolve(precision, device, fp32_only), max_memory)

    @classmethod
    def exact(cls, device: torch.device, precision: str = "fp32", max_memory: int | None = None) -> Compute:
        """A concrete precision taken literally (the renderer runs what it is asked)."""
        return cls(device, precision, default_budget(device) if max_memory is None else int(max_memory))

    def with_precision(self, precision: str, fp32_only: bool = False) -> Compute:
        return Compute.resolve(self.device, precision, self.budget, fp32_only)

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.precision]

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return None if self.dtype == torch.float32 else self.dtype

    @property
    def tf32(self) -> bool:
        return self.precision == "tf32"

    def autocast(self) -> torch.autocast:
        """Autocast to bf16/fp16 where that is the precision; disabled (a no-op) for fp32 and tf32."""
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.autocast_dtype is not None)

    def fp32_math(self) -> contextlib.AbstractContextManager[None]:
        """:func:`fp32_math` on this device for this precision."""
        return fp32_math(self.device, self.precision)


# -- CUDA float32 modes ---------------------------------------------------------------------------

_FP32_LOCK = threading.RLock()


def fp32_modes() -> tuple[str, ...] | tuple[bool, ...]:
    """The process's current float32 modes for cuDNN convolutions and CUDA matmuls: the
    ``fp32_precision`` strings where PyTorch has them, else the legacy ``allow_tf32`` flags.
    (Once a program has used one API, PyTorch refuses reads through the other.)"""
    try:
        conv = torch.backends.cudnn.conv  # type: ignore[attr-defined]  # PyTorch >= 2.9; not in its stubs
        return conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision
    except (AttributeError, RuntimeError):
        return torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32


def set_fp32_modes(modes: tuple[str, ...] | tuple[bool, ...]) -> None:
    if isinstance(modes[0], str):
        conv = torch.backends.cudnn.conv  # type: ignore[attr-defined]  # PyTorch >= 2.9; not in its stubs
        conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision = modes
    else:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = modes


def set_tf32(on: bool) -> None:
    """Set the process's CUDA float32 modes for good (a training run): TF32 math, or full fp32."""
    mode = "tf32" if on else "ieee"
    set_fp32_modes((mode, mode) if isinstance(fp32_modes()[0], str) else (on, on))


@contextlib.contextmanager
def fp32_math(device: torch.device, precision: str = "fp32") -> Iterator[None]:
    """On CUDA, keep float32 convolutions and matmuls in full fp32 (no TF32, which cuDNN allows for
    convolutions by default): ``fp32`` promises the reference's result up to rounding. Only float32
    ops are affected, so bf16/fp16 renders are unchanged. ``precision="tf32"`` turns TF32 on
    instead (fp32 tensors, tensor-core math with a 10-bit mantissa). A no-op on the CPU.

    The modes are process-wide, so concurrent CUDA renders (the server's workers) take turns
    through a lock instead of switching them under each other."""
    if device.type != "cuda":
        yield
        return
    with _FP32_LOCK:
        saved = fp32_modes()
        tf32 = precision == "tf32"
        mode = "tf32" if tf32 else "ieee"
        set_fp32_modes((mode, mode) if isinstance(saved[0], str) else (tf32, tf32))
        try:
            yield
        finally:
            set_fp32_modes(saved)

__all__ = ["CHOICES", "CHOICES_HELP", "DEFAULT_MAX_MEMORY", "DTYPES", "Compute", "CpuInfo", "PrecisionFallback",
           "cpu_info", "default_budget", "fp32_math", "fp32_modes", "native", "resolve", "set_fp32_modes", "set_tf32"]
