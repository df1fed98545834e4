"""The compute of the fast renderer in PyTorch, for any decoder family behind the seam.

A backend provides four operations, and the renderer (``liif.render.tiled``) does all the planning,
tiling, gathering of indices, blending and the rest around them:

``encode(crop)``                     RGB crop (1, 3, h, w) in [0, 1] or uint8 -> feat (1, C, h, w)
``lr_maps(feat, rel_cell)``          feat and the cell (2,) in LR pixels (only methods whose maps
                                     see the cell need it) -> the method's maps, channels-last (h, w, D)
``decode(maps, idx, rel, rel_cell)`` rows ``idx`` of the flattened maps, offsets (n, 2) and the
                                     cell (2,) in LR pixels -> prediction (n, out) float32
``global_term(crop, coord)``         the method's global term at (n, 2) crop coordinates, or None

The ONNX Runtime backend (``liif.export.onnx.OrtBackend``) provides the same four.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from liif.compute import Compute
from liif.errors import LiifError
from liif.imaging import as_float
from liif.models.decoder import ImplicitDecoder
from liif.render.kernels import ADDMM_RELU, fused_linear_available
from liif.render.plan import BLOCK_QUERIES


class TorchBackend:
    """Encoder and maps in the render precision (autocast for bf16/fp16), the method's
    ``first_hidden``, then its ``tail`` as GEMMs: on the CPU through oneDNN's fused linear(+ReLU)
    with prepacked weights, on CUDA through cuBLASLt's fused GEMM + bias + ReLU. A method without a
    plain tail (``has_tail`` False: LMF) decodes the gathered rows with its own ``decode_rows``."""

    def __init__(self, model: ImplicitDecoder, compute: Compute | None = None) -> None:
        """``compute``: the settings of the renders (default: fp32 on the model's device)."""
        if not model.has_fast_route:
            raise LiifError("the fast renderer needs a model with an MLP decoder")
        self.device = next(model.parameters()).device
        self.compute = compute if compute is not None else Compute.exact(self.device)
        dtype = self.compute.dtype
        self.model, self.dtype = model, dtype
        self.fused = fused_linear_available(self.device, dtype)
        self.has_tail = model.has_tail
        self.grouped = not self.has_tail  # queries grouped by code (``liif.render.grouped``): LMF
        tail = list(model.tail) if self.has_tail else []
        self.hidden = [(self._pack(lin.weight.detach().to(dtype)), lin.bias.detach().to(dtype)) for lin in tail[:-1]]
        self.last = (self._pack(tail[-1].weight.detach().to(dtype)), tail[-1].bias.detach().to(dtype)) if tail else None
        self.has_global_term = model.has_global_term

    def _pack(self, w: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._reorder_linear_weight(w.contiguous(), BLOCK_QUERIES * 4) if self.fused else w

    def _linear(self, h: torch.Tensor, wb: tuple[torch.Tensor, torch.Tensor], relu: bool) -> torch.Tensor:
        if self.fused:
            return torch.ops.mkldnn._linear_pointwise(h, wb[0], wb[1], "relu" if relu else "none", [], "")
        if relu and self.device.type == "cuda" and ADDMM_RELU is not None:
            # cuBLASLt runs GEMM + bias + ReLU as one kernel: a separate ReLU pass over the
            # (4 x stripe, 256) activations took ~20% of a 4K render's GPU time.
            return ADDMM_RELU(wb[1], h, wb[0].t())
        out = F.linear(h, *wb)
        return out.relu_() if relu else out

    def encode(self, crop: torch.Tensor) -> torch.Tensor:
        # channels-last input makes oneDNN run the whole encoder channels-last (~20-35% faster on CPU).
        # Always a fresh dense tensor: a crop of an (H, W, 3) image seen as (1, 3, h, w) passes PyTorch's
        # channels-last check (a batch of one) but has a batch stride of 3 and rows of the whole image's
        # width, and oneDNN runs its slow reference convolution on such strides (measured, interleaved
        # runs: the encoder of a 424 x 264 crop 1.7 s instead of 0.66 s in bf16, 2.2 s instead of 1.75 s
        # in fp32, AVX-512).
        x = self.model.normalize(as_float(crop))
        x = torch.empty_like(x, memory_format=torch.channels_last).copy_(x)
        with self.compute.autocast():  # fp32 and tf32: fp32 tensors (TF32 math is fp32_math's business)
            return self.model.encoder(x)

    def lr_maps(self, feat: torch.Tensor, rel_cell: torch.Tensor | None = None) -> torch.Tensor:
        # In bf16/fp16 the maps are computed in that precision too (fp32 accumulation), as the encoder.
        x = feat.to(self.dtype).contiguous(memory_format=torch.channels_last)
        maps = self.model.lr_maps(x, None if rel_cell is None else rel_cell.view(1, 2))
        return maps[0].permute(1, 2, 0).contiguous()  # no-op copy for channels-last output

    def decode(self, maps: torch.Tensor, idx: torch.Tensor, rel: torch.Tensor, rel_cell: torch.Tensor) -> torch.Tensor:
        rows, cells = maps.index_select(0, idx), rel_cell.expand(idx.shape[0], 2)
        if self.last is None:
            return self.model.decode_rows(rows, rel, cells).float()
        h = self.model.first_hidden(rows, rel, cells)
        for wb in self.hidden:
            h = self._linear(h, wb, relu=True)
        return self._linear(h, self.last, relu=False).float()

    def decode_groups(self, maps: torch.Tensor, idx: torch.Tensor, rel_y: torch.Tensor, rel_x: torch.Tensor,
                      rel_cell: torch.Tensor) -> torch.Tensor:
        """Codes ``idx`` (G,) of the flattened maps, each with an a x b grid of queries (offsets (G, a) and
        (G, b)) -> predictions (G, a, b, out) float32: the method's ``decode_groups``."""
        # whole rows of channels-last maps: gathering columns of channel-major maps was 2.4x slower for a
        # viewer tile at x2.3 (a 208-row strided gather per call over the whole image's cached maps)
        codes = maps.index_select(0, idx)
        if self.device.type == "cpu":
            # On the CPU the grouped decode (16-wide GEMMs and per-code scale/shift passes) runs in fp32 whatever
            # the render precision: in bf16 its element-wise passes convert and were slower (an x12 768x768
            # LM-LIIF window, AVX-512 + AMX: 0.64 s in bf16 vs 0.34 s in fp32), and fp32 is exact.
            codes = codes.float()
        return self.model.decode_groups(codes, rel_y, rel_x, rel_cell).float()

    def global_term(self, crop: torch.Tensor, coord: torch.Tensor) -> torch.Tensor | None:
        if not self.has_global_term:
            return None
        out = self.model.global_term(self.model.normalize(as_float(crop)), coord[None])
        return None if out is None else out[0].float()
