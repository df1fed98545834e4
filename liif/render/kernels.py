"""Kernel helpers of the fast renderer: the oneDNN fused-linear probe, cuBLASLt's fused GEMM + bias +
ReLU, and returning freed heap pages to the OS between tiles."""
from __future__ import annotations

import ctypes
import functools
import os
import sys
from collections.abc import Callable

import torch
import torch.nn.functional as F

ADDMM_RELU = getattr(torch, "_addmm_activation", None)  # relu(bias + a @ b), fused on CUDA


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
