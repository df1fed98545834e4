"""Platform helpers of the renderer: CUDA float32 modes (TF32 guard), the oneDNN fused-linear probe,
returning freed heap pages to the OS, and the precision check."""
from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import sys
import threading
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

from liif.errors import LiifError
from liif.precision import DTYPES

ADDMM_RELU = getattr(torch, "_addmm_activation", None)  # relu(bias + a @ b), fused on CUDA
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


def fused_linear_available(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether oneDNN's fused linear(+ReLU) op with prepacked weights can run the MLP here.

    It is a private PyTorch op (``torch.ops.mkldnn``), so it is used only on the CPU, only when
    present, and ``LIIF_NO_FUSED_LINEAR=1`` turns it off (the plain F.linear path is the fallback).
    """
    if device.type != "cpu" or dtype not in (torch.float32, torch.bfloat16) or os.environ.get("LIIF_NO_FUSED_LINEAR"):
        return False
    return _fused_linear_works(dtype)


@functools.cache
def _fused_linear_works(dtype: torch.dtype) -> bool:
    """Try the op once on a small problem (a CPU without bf16 support, or a build without the op,
    falls back to F.linear instead of failing mid-render)."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        w = torch.linspace(-1, 1, 48).reshape(6, 8).to(dtype)
        x = torch.linspace(-2, 2, 40).reshape(5, 8).to(dtype)
        b = torch.zeros(6, dtype=dtype)
        packed = torch.ops.mkldnn._reorder_linear_weight(w, 5)
        got = torch.ops.mkldnn._linear_pointwise(x, packed, b, "relu", [], "")
        return bool(torch.allclose(got.float(), F.linear(x, w, b).relu().float(), atol=1e-2))
    except (RuntimeError, AttributeError):
        return False


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    if sys.platform != "linux":
        return None
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, ...)
        return None


def release_free_memory() -> None:
    """Hand the allocator's free pages back to the OS between tiles (glibc ``malloc_trim``).

    Tiles allocate and free the same large arrays over and over; without this the heap fragments
    and the process's resident memory creeps up tile after tile, past the budget.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def render_dtype(precision: str, device: torch.device) -> torch.dtype:
    """A concrete precision (fp32/bf16/fp16/tf32), taken literally: the renderer runs what it is asked.
    ``auto`` and the bf16 fallback on CPUs without native bf16 are the callers' (liif.precision.resolve)."""
    if precision not in DTYPES:
        raise LiifError(f"unknown precision {precision!r}; expected one of {', '.join(DTYPES)}")
    if precision in ("fp16", "tf32") and device.type == "cpu":
        raise LiifError(f"{precision} rendering needs a CUDA device; use bf16 or fp32 on the CPU")
    return DTYPES[precision]
