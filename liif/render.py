"""Rendering a LIIF model on an output grid: the reference path and the fast, memory-bounded path.

Both return the decoder's raw (normalised) prediction for a window of a virtual output image
of size (H, W); ``model.denormalize`` maps it to RGB.

reference
    The official op structure: encoder on the whole image, full 3x3 unfold, nearest sampling of
    the four shifted codes, concatenation and the MLP per query, in chunks of 30000 queries.

fast (default)
    Same function up to float rounding, organised around three facts:
    1. The MLP's first layer applied to a 3x3-unfolded code is a 3x3 convolution of the LR
       feature map; the cell term is constant over a render. So ``Z = conv3x3(feat) + bias`` is
       computed once per LR pixel (256 values instead of 576 unfolded ones) and each query only
       gathers a row of Z and adds ``W_rel @ rel_coord``.
    2. On a regular output grid the nearest-code row depends only on the output row and the
       column only on the output column, so indices, offsets and blend weights are separable;
       they are computed per axis with the very grid_sample rule of the reference.
    3. Output tiles whose LR footprint (plus the encoder's receptive radius as halo) fits a
       memory budget are rendered one at a time, so peak memory does not grow with the image.
    The three hidden layers then run as GEMMs on blocks of ~1K queries x 4 codes on the CPU (cache
    sized), or on whole stripes of up to 1M queries x 4 codes on CUDA (launch overhead dominates
    small GEMMs there), in fp32, bf16 or fp16 (and TF32 on CUDA).
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import math
import os
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from liif.coords import axis_centres, make_cell
from liif.errors import LiifError
from liif.models.liif import CLAMP, ENSEMBLE_SHIFTS, EPS_SHIFT, LIIF, area_blend
from liif.precision import DTYPES

REFERENCE_CHUNK = 30000
BLOCK_QUERIES = 1024
STRIPE_PIXELS = 1 << 15  # output pixels decoded and yielded at a time (fewer under small budgets)
STRIPE_BYTES_PER_PIXEL = 64 * 4  # per code: indices, offsets, prediction, blend weights, temporaries
DEFAULT_MAX_MEMORY = 256 << 20  # on the CPU; on CUDA a quarter of the GPU's memory (default_budget)
GPU_STRIPE_PIXELS = 1 << 20  # on CUDA a stripe is one block: few, large GEMMs instead of many launches


@dataclass(frozen=True)
class Window:
    """Pixel window (top, left, height, width) of a virtual output image."""

    y: int
    x: int
    h: int
    w: int

    @classmethod
    def full(cls, out_hw: tuple[int, int]) -> "Window":
        return cls(0, 0, out_hw[0], out_hw[1])

    def check(self, out_hw: tuple[int, int]) -> None:
        H, W = out_hw
        if H <= 0 or W <= 0:
            raise LiifError(f"output size must be positive, got {H}x{W} (HxW)")
        if self.h <= 0 or self.w <= 0:
            raise LiifError(f"window size must be positive, got {self.w}x{self.h} (WxH)")
        if self.y < 0 or self.x < 0 or self.y + self.h > H or self.x + self.w > W:
            raise LiifError(f"window x={self.x} y={self.y} w={self.w} h={self.h} lies outside "
                            f"the {W}x{H} (WxH) output")


def render(
    model: LIIF,
    img: torch.Tensor,
    out_hw: tuple[int, int],
    window: Window | None = None,
    method: str = "fast",
    precision: str = "fp32",
    max_memory: int | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """RGB image (3, h, w) in [0, 1] -> raw prediction (3, window.h, window.w), float32."""
    window = window or Window.full(out_hw)
    window.check(out_hw)
    if method == "reference":
        return render_reference(model, img, out_hw, window)
    if method != "fast":
        raise LiifError(f"unknown render method {method!r}; expected 'fast' or 'reference'")
    out = torch.empty(3, window.h, window.w, device=img.device)
    for (y, x), tile in render_tiles(model, img, out_hw, window, precision, max_memory, progress):
        out[:, y:y + tile.shape[1], x:x + tile.shape[2]] = tile
    return out


@torch.no_grad()
def render_reference(model: LIIF, img: torch.Tensor, out_hw: tuple[int, int], window: Window) -> torch.Tensor:
    """The official route: whole-image features, model.query over chunks of 30000 queries."""
    coord = torch.stack(torch.meshgrid(
        axis_centres(out_hw[0], device=img.device, start=window.y, count=window.h),
        axis_centres(out_hw[1], device=img.device, start=window.x, count=window.w),
        indexing="ij"), dim=-1).reshape(-1, 2)
    cell = make_cell(out_hw, coord.shape[0], device=img.device)
    with fp32_math(img.device):
        feat = model.encoder(model.normalize(as_float(img[None])))
        preds = [model.query(feat, coord[None, i:i + REFERENCE_CHUNK], cell[None, i:i + REFERENCE_CHUNK])
                 for i in range(0, coord.shape[0], REFERENCE_CHUNK)]
    return torch.cat(preds, dim=1)[0].t().reshape(-1, window.h, window.w)


def as_float(img: torch.Tensor) -> torch.Tensor:
    """uint8 images (kept compact for big inputs) -> float32 in [0, 1]; float images unchanged."""
    return img.float() / 255 if img.dtype == torch.uint8 else img.float()


# -- fast path ------------------------------------------------------------------------------------

@dataclass
class AxisPlan:
    """Per output row (or column) of the window, for each of the two ensemble shifts on this axis:
    the nearest LR index and the offset to that code's centre in LR-pixel units."""

    idx: torch.Tensor  # (2, n) int64 (or (1, n) without local ensemble)
    rel: torch.Tensor  # (2, n) float32


def nearest_code(coord: torch.Tensor, n_lr: int, shift: int, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Along one axis with ``n_lr`` latent codes: for coordinates ``coord`` (any shape, float32) and an
    ensemble shift of ``shift`` in {-1, 0, +1} code widths, the index of the nearest code and the
    offset ``(coord - centre) * n_lr`` to it. The shift/eps/clamp order and the index rule (the
    grid_sample nearest kernel itself, on a look-up table) are the reference's, so indices agree
    bit for bit; the row rule never depends on the column and vice versa.
    """
    shifted = coord.clone()
    shifted += shift * (2 / n_lr / 2) + eps
    shifted.clamp_(-CLAMP, CLAMP)
    lut = torch.arange(n_lr, device=coord.device, dtype=torch.float32).view(1, 1, 1, n_lr)
    flat = shifted.reshape(-1)
    grid = torch.stack([flat, torch.zeros_like(flat)], -1).view(1, 1, -1, 2)
    idx = F.grid_sample(lut, grid, mode="nearest", align_corners=False).view(coord.shape).long()
    rel = coord - axis_centres(n_lr, device=coord.device)[idx]
    rel *= n_lr
    return idx, rel


@functools.lru_cache(maxsize=16)  # video frames render the same plan again and again; plans are read-only
def plan_axis(n_out: int, start: int, count: int, n_lr: int, local_ensemble: bool,
              device: torch.device) -> AxisPlan:
    coord = axis_centres(n_out, device=device, start=start, count=count)
    shifts, eps = ((-1, 1), EPS_SHIFT) if local_ensemble else ((0,), 0.0)
    pairs = [nearest_code(coord, n_lr, v, eps) for v in shifts]
    return AxisPlan(torch.stack([i for i, _ in pairs]), torch.stack([r for _, r in pairs]))


class TorchBackend:
    """The compute of the fast path in PyTorch: encoder, layer 0 as a conv on LR features, the rest
    of the MLP as GEMMs on query blocks. Another backend (ONNX Runtime) provides the same three
    methods and reuses all the planning, tiling and blending of ``render_tiles``."""

    def __init__(self, model: LIIF, precision: str = "fp32") -> None:
        if model.imnet is None:
            raise LiifError("the fast renderer needs a LIIF model with an MLP decoder")
        dtype = _dtype(precision, next(model.parameters()).device)
        self.model, self.precision, self.dtype = model, precision, dtype
        self.device = next(model.parameters()).device
        layers = [m for m in model.imnet.layers if isinstance(m, torch.nn.Linear)]
        w0, b0 = layers[0].weight.float(), layers[0].bias.float()
        c = model.encoder.out_dim
        nf = c * 9 if model.feat_unfold else c
        k = 3 if model.feat_unfold else 1
        self.conv_w = w0[:, :nf].reshape(w0.shape[0], c, k, k).contiguous()
        self.conv_w_lp = self.conv_w.to(dtype)  # the conv runs in the render precision
        self.w_rel = w0[:, nf:nf + 2].t().contiguous().to(dtype)  # (2, 256)
        self.w_cell = w0[:, nf + 2:nf + 4] if model.cell_decode else None
        self.b0 = b0
        # Remaining layers as (out, in) weights for F.linear; on the CPU prepacked for oneDNN, which
        # then runs GEMM + bias + ReLU as one call (the fusion torch.compile's CPU backend also uses).
        self.fused = fused_linear_available(w0.device, dtype)
        self.hidden = [(self._pack(l.weight.detach().to(dtype)), l.bias.detach().to(dtype)) for l in layers[1:-1]]
        self.last = (self._pack(layers[-1].weight.detach().to(dtype)), layers[-1].bias.detach().to(dtype))
        self.width = w0.shape[0]

    def _pack(self, w: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._reorder_linear_weight(w.contiguous(), BLOCK_QUERIES * 4) if self.fused else w

    def _linear(self, h: torch.Tensor, wb: tuple[torch.Tensor, torch.Tensor], relu: bool) -> torch.Tensor:
        if self.fused:
            return torch.ops.mkldnn._linear_pointwise(h, wb[0], wb[1], "relu" if relu else "none", [], "")
        if relu and self.device.type == "cuda" and _ADDMM_RELU is not None:
            # cuBLASLt runs GEMM + bias + ReLU as one kernel: the separate ReLU pass over the
            # (4 x stripe, 256) activations took ~20% of a 4K render's GPU time.
            return _ADDMM_RELU(wb[1], h, wb[0].t())
        out = F.linear(h, *wb)
        return out.relu_() if relu else out

    def encode(self, crop: torch.Tensor) -> torch.Tensor:
        """RGB crop (1, 3, h, w) in [0, 1] (or uint8) -> feature map (1, C, h, w)."""
        # channels-last input makes oneDNN run the whole encoder channels-last (~20-35% faster on CPU)
        x = self.model.normalize(as_float(crop)).contiguous(memory_format=torch.channels_last)
        if self.dtype == torch.float32:  # fp32 (or tf32: fp32 tensors, TF32 tensor-core math on CUDA)
            return self.model.encoder(x)
        with torch.autocast(crop.device.type, dtype=self.dtype):
            return self.model.encoder(x)

    def layer0_map(self, feat: torch.Tensor, rel_cell: torch.Tensor) -> torch.Tensor:
        """feat (1, C, h, w) -> Z (h, w, 256): layer-0 pre-activation of every LR code, channels-last."""
        bias = self.b0 if self.w_cell is None else self.b0 + self.w_cell @ rel_cell
        # In bf16/fp16 the conv runs in that precision too (fp32 accumulation), as the encoder did.
        x = feat.to(self.dtype).contiguous(memory_format=torch.channels_last)
        z = F.conv2d(x, self.conv_w_lp, bias.to(self.dtype), padding=self.conv_w.shape[-1] // 2)
        return z[0].permute(1, 2, 0).contiguous()  # no-op copy for channels-last output

    def decode(self, z: torch.Tensor, idx: torch.Tensor, rel: torch.Tensor) -> torch.Tensor:
        """Rows ``idx`` of Z (n_lr, 256) plus the offset term, through the remaining layers -> (n, 3) float32."""
        h = z.index_select(0, idx)
        h.addmm_(rel.to(self.dtype), self.w_rel)
        h.relu_()
        for wb in self.hidden:
            h = self._linear(h, wb, relu=True)
        return self._linear(h, self.last, relu=False).float()


_ADDMM_RELU = getattr(torch, "_addmm_activation", None)  # relu(bias + a @ b), fused on CUDA
_FP32_LOCK = threading.RLock()


def fp32_modes() -> tuple[str, ...] | tuple[bool, ...]:
    """The process's current float32 modes for cuDNN convolutions and CUDA matmuls: the
    ``fp32_precision`` strings where PyTorch has them, else the legacy ``allow_tf32`` flags.
    (Once a program has used one API, PyTorch refuses reads through the other.)"""
    try:
        return torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision
    except (AttributeError, RuntimeError):
        return torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32


def set_fp32_modes(modes: tuple[str, ...] | tuple[bool, ...]) -> None:
    if isinstance(modes[0], str):
        torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision = modes
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


def render_tiles(
    model: LIIF,
    img: torch.Tensor,
    out_hw: tuple[int, int],
    window: Window,
    precision: str = "fp32",
    max_memory: int | None = None,
    progress: bool = False,
    backend: "TorchBackend | None" = None,
) -> Iterator[tuple[tuple[int, int], torch.Tensor]]:
    """Yield ((y, x) offset inside the window, raw prediction tile (3, th, tw)).

    Tiles come tile by tile (each tile in stripes); together they cover the window exactly once.
    """
    window.check(out_hw)
    dtype = _dtype(precision, img.device)
    budget = default_budget(img.device) if max_memory is None else int(max_memory)
    H, W = out_hw
    h_lr, w_lr = img.shape[-2:]
    dev = img.device
    ens = model.local_ensemble
    rows = plan_axis(H, window.y, window.h, h_lr, ens, dev)
    cols = plan_axis(W, window.x, window.w, w_lr, ens, dev)
    dec = backend if backend is not None else TorchBackend(model, precision)
    rel_cell = torch.tensor([2.0 / H, 2.0 / W], device=dev)
    rel_cell[0] *= h_lr
    rel_cell[1] *= w_lr
    halo = encoder_halo(model)
    per_px, fixed = working_set(model, dtype)
    stripe, stripe_bytes = stripe_plan(model, budget, dev)
    tiles = plan_tiles(rows, cols, h_lr, w_lr, halo, budget, per_px, fixed + stripe_bytes, window)
    block = BLOCK_QUERIES if dev.type == "cpu" else stripe
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=window.h * window.w, unit="px", unit_scale=True, desc="render", leave=False,
                   delay=1.0)  # only renders that take more than a moment show a bar
    with torch.no_grad():
        for (r0, r1), (c0, c1) in tiles:
            # (fp32 modes are set around the compute only, never across a yield to the caller)
            with fp32_math(dev, precision):
                region, z = _z_region(dec, img, _lr_box(rows, cols, r0, r1, c0, c1), halo, rel_cell)
            # Decode the tile in stripes so per-pixel temporaries stay small next to Z.
            step = max(1, stripe // (c1 - c0))
            for s0 in range(r0, r1, step):
                s1 = min(r1, s0 + step)
                with fp32_math(dev, precision):
                    tile = _decode_tile(dec, z, region, rows, cols, s0, s1, c0, c1, ens, block)
                yield (s0, c0), tile
                if bar is not None:
                    bar.update((s1 - s0) * (c1 - c0))
            del z
            release_free_memory()
    if bar is not None:
        bar.close()


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


def _dtype(precision: str, device: torch.device) -> torch.dtype:
    """A concrete precision (fp32/bf16/fp16), taken literally: the renderer runs what it is asked.
    ``auto`` and the bf16 fallback on CPUs without native bf16 are the callers' (liif.precision.resolve)."""
    if precision not in DTYPES:
        raise LiifError(f"unknown precision {precision!r}; expected one of {', '.join(DTYPES)}")
    if precision in ("fp16", "tf32") and device.type == "cpu":
        raise LiifError(f"{precision} rendering needs a CUDA device; use bf16 or fp32 on the CPU")
    return DTYPES[precision]


def working_set(model: LIIF, dtype: torch.dtype) -> tuple[int, int]:
    """(bytes per LR pixel of a tile: input + encoder activations + Z map, fixed bytes: query blocks).

    The decoded stripe's own bytes (``stripe_pixels`` x ``STRIPE_BYTES_PER_PIXEL``) come on top."""
    assert model.imnet is not None
    width = model.imnet.layers[0].out_features
    enc_bytes = model.encoder.activation_bytes_per_pixel()
    z_bytes = (4 + (torch.finfo(dtype).bits // 8 if dtype != torch.float32 else 0)) * width  # Z (generous for bf16/fp16)
    fixed = 3 * BLOCK_QUERIES * 4 * width * 4 + (1 << 20)  # ~3 live (4 x block, width) activations
    return 12 + enc_bytes + z_bytes, fixed


def stripe_pixels(budget: int) -> int:
    """Output pixels per decoded stripe: ``STRIPE_PIXELS``, or fewer so stripes take <= 1/16 of the budget."""
    return max(BLOCK_QUERIES, min(STRIPE_PIXELS, budget // 16 // STRIPE_BYTES_PER_PIXEL))


def stripe_plan(model: LIIF, budget: int, device: torch.device) -> tuple[int, int]:
    """(output pixels per stripe, bytes a stripe needs).

    CPU: ``stripe_pixels`` (blocks of 1K queries inside). CUDA: the stripe is decoded as one block,
    so it holds ~3 live (4 codes x width) fp32 activations per pixel; it may take half the budget."""
    if device.type == "cpu":
        n = stripe_pixels(budget)
        return n, n * STRIPE_BYTES_PER_PIXEL
    assert model.imnet is not None
    per_px = 3 * 4 * model.imnet.layers[0].out_features * 4 + STRIPE_BYTES_PER_PIXEL
    n = max(BLOCK_QUERIES, min(GPU_STRIPE_PIXELS, budget // 2 // per_px))
    return n, n * per_px


def default_budget(device: torch.device) -> int:
    """The working-memory budget when none is given: 256 MiB on the CPU, a quarter of the GPU's memory on CUDA."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory // 4
    return DEFAULT_MAX_MEMORY


def plan_tiles(rows: AxisPlan, cols: AxisPlan, h_lr: int, w_lr: int, halo: int, budget: int,
               bytes_per_px: int, fixed: int, window: Window) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Split the window into output tiles whose LR footprint plus halo fits ``budget`` bytes."""
    avail = budget - fixed
    whole = _lr_box(rows, cols, 0, window.h, 0, window.w)
    whole_px = (whole[1] - whole[0]) * (whole[3] - whole[2])
    if whole_px * bytes_per_px <= avail:
        side_lr = max(h_lr, w_lr)
    else:
        side_lr = int(math.sqrt(max(avail, 0) / bytes_per_px)) - 2 * halo - 2
        if side_lr < 8:
            need = (8 + 2 * halo + 2) ** 2 * bytes_per_px + fixed
            raise LiifError(f"memory budget {budget / 2**20:.0f} MiB is too small for one tile "
                            f"(need at least {need / 2**20:.0f} MiB)")
    # Output pixels per tile along each axis so that the LR footprint is about side_lr.
    th = max(1, min(window.h, int(side_lr * window.h / max(1, whole[1] - whole[0]))))
    tw = max(1, min(window.w, int(side_lr * window.w / max(1, whole[3] - whole[2]))))
    return [((r, min(r + th, window.h)), (c, min(c + tw, window.w)))
            for r in range(0, window.h, th) for c in range(0, window.w, tw)]


def _lr_box(rows: AxisPlan, cols: AxisPlan, r0: int, r1: int, c0: int, c1: int) -> tuple[int, int, int, int]:
    ri, ci = rows.idx[:, r0:r1], cols.idx[:, c0:c1]
    return int(ri.min()), int(ri.max()) + 1, int(ci.min()), int(ci.max()) + 1


def encoder_halo(model: LIIF) -> int:
    """LR pixels added around a tile's codes before encoding: the encoder's receptive radius + 1."""
    return int(getattr(model.encoder, "receptive_radius", 0)) + 1


def halo_region(box: tuple[int, int, int, int], halo: int, lr_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """The LR rows/cols (y0, y1, x0, x1) a tile encodes: its code ``box`` grown by ``halo``, clipped."""
    y0, y1, x0, x1 = box
    return max(0, y0 - halo), min(lr_hw[0], y1 + halo), max(0, x0 - halo), min(lr_hw[1], x1 + halo)


def window_region(model: LIIF, lr_hw: tuple[int, int], out_hw: tuple[int, int],
                  window: Window) -> tuple[int, int, int, int]:
    """The LR region a one-tile fast render of ``window`` encodes."""
    dev = torch.device("cpu")
    rows = plan_axis(out_hw[0], window.y, window.h, lr_hw[0], model.local_ensemble, dev)
    cols = plan_axis(out_hw[1], window.x, window.w, lr_hw[1], model.local_ensemble, dev)
    return halo_region(_lr_box(rows, cols, 0, window.h, 0, window.w), encoder_halo(model), lr_hw)


def _z_region(dec: TorchBackend, img: torch.Tensor, box: tuple[int, int, int, int],
              halo: int, rel_cell: torch.Tensor) -> tuple[tuple[int, int, int, int], torch.Tensor]:
    """Z for every LR pixel of ``box`` grown by the halo: (that region, Z rows (n, width)).

    The region beyond ``box`` is kept rather than cropped away: queries only ever index inside
    ``box``, where the values are exact, and skipping the crop saves a copy of the largest array.
    """
    region = halo_region(box, halo, (img.shape[-2], img.shape[-1]))
    feat = dec.encode(img[None, :, region[0]:region[1], region[2]:region[3]])
    z = dec.layer0_map(feat, rel_cell)
    del feat
    return region, z.reshape(-1, z.shape[-1])


def _decode_tile(dec: TorchBackend, z: torch.Tensor, box: tuple[int, int, int, int], rows: AxisPlan,
                 cols: AxisPlan, r0: int, r1: int, c0: int, c1: int, ens: bool,
                 block: int = BLOCK_QUERIES) -> torch.Tensor:
    """Raw prediction (3, r1 - r0, c1 - c0) for output rows r0:r1, columns c0:c1 of the window.

    Code indices and offsets are laid out query-major, (pixel, code), for the whole stripe at once,
    so each block of the MLP is one contiguous slice and the blend runs once per stripe.
    """
    th, tw = r1 - r0, c1 - c0
    bw = box[3] - box[2]
    ri = rows.idx[:, r0:r1] - box[0]
    ci = cols.idx[:, c0:c1] - box[2]
    rr, cr = rows.rel[:, r0:r1], cols.rel[:, c0:c1]
    shifts = [(0 if a < 0 else 1, 0 if b < 0 else 1) for a, b in ENSEMBLE_SHIFTS] if ens else [(0, 0)]
    n, k = th * tw, len(shifts)
    idx = torch.stack([(ri[sy, :, None] * bw + ci[sx, None, :]).reshape(-1) for sy, sx in shifts], 1)
    ry = torch.stack([rr[sy, :, None].expand(th, tw).reshape(-1) for sy, _ in shifts], 1)
    rx = torch.stack([cr[sx, None, :].expand(th, tw).reshape(-1) for _, sx in shifts], 1)
    rel = torch.stack([ry, rx], -1)  # (n, k, 2)
    pred = torch.empty(n, k, 3, device=z.device)
    for b0 in range(0, n, block):
        b1 = min(n, b0 + block)
        pred[b0:b1] = dec.decode(z, idx[b0:b1].reshape(-1), rel[b0:b1].reshape(-1, 2)).view(b1 - b0, k, 3)
    if ens:
        out = area_blend(pred.unbind(1), (torch.abs(ry * rx) + 1e-9).unbind(1), local_ensemble=True)
    else:
        out = pred[:, 0]
    return out.t().reshape(3, th, tw)


def band_rows(model: LIIF, img: torch.Tensor, out_hw: tuple[int, int], window: Window,
              precision: str = "fp32", max_memory: int | None = None) -> int:
    """The height of the tile rows ``render_tiles`` plans for ``window``: full-width bands of this
    many rows, each rendered as its own window, do the same encoder work as the whole window
    (a streaming writer renders band after band; region rendering is exact)."""
    window.check(out_hw)
    budget = default_budget(img.device) if max_memory is None else int(max_memory)
    h_lr, w_lr = img.shape[-2:]
    rows = plan_axis(out_hw[0], window.y, window.h, h_lr, model.local_ensemble, img.device)
    cols = plan_axis(out_hw[1], window.x, window.w, w_lr, model.local_ensemble, img.device)
    per_px, fixed = working_set(model, _dtype(precision, img.device))
    _, stripe_bytes = stripe_plan(model, budget, img.device)
    (r0, r1), _ = plan_tiles(rows, cols, h_lr, w_lr, encoder_halo(model), budget, per_px, fixed + stripe_bytes,
                             window)[0]
    return r1 - r0


__all__ = ["TorchBackend", "Window", "band_rows", "render", "render_reference", "render_tiles"]
