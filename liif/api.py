"""The Python API: ``liif.load(...)`` returns an :class:`Upscaler`.

Sizes in the API are (height, width), as in PyTorch; the CLI takes WIDTHxHEIGHT like image tools.
``upscale`` accepts a PIL image, a uint8/uint16/float32 NumPy array (H, W[, C]) or a float tensor
(C, H, W) / (B, C, H, W) in [0, 1], and returns the same kind. Channel policies (gray, alpha,
16-bit) are those of :mod:`liif.imageio`.
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Union

import numpy as np
import torch
from PIL import Image

from liif import checkpoints, imageio, precision as precisions, weights
from liif.errors import LiifError
from liif.models import LIIF, ModelSpec
from liif.render import TorchBackend, Window, render, render_tiles

DEFAULT_MAX_PIXELS = 100_000_000  # output pixels; LIIF_MAX_PIXELS or max_pixels= overrides


class RenderCancelled(LiifError):
    """``upscale(..., cancel=f)`` stopped early because ``f()`` returned True."""


ImageLike = Union[Image.Image, np.ndarray, torch.Tensor]
Scale = Union[float, tuple[float, float]]


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_max_pixels() -> int:
    env = os.environ.get("LIIF_MAX_PIXELS")
    return int(env) if env else DEFAULT_MAX_PIXELS


def load(name_or_path: str | os.PathLike[str] = "edsr-baseline-liif", device: str | torch.device | None = None,
         precision: str = "auto", method: str = "fast", max_memory: int | None = None,
         max_pixels: int | None = None, backend: str = "torch",
         onnx_dir: str | os.PathLike[str] | None = None, quantize: str = "round") -> "Upscaler":
    """Load pretrained weights by name (fetched and verified on first use) or any checkpoint path.

    ``precision="auto"`` runs what the hardware runs natively (:mod:`liif.precision`); the one that
    runs is ``Upscaler.precision``."""
    if device is None:  # the ONNX Runtime backend computes on the CPU
        dev = torch.device("cpu") if backend == "onnxruntime" else default_device()
    else:
        dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise LiifError("device 'cuda' requested but CUDA is not available")
    model, spec = checkpoints.load(weights.path(name_or_path), device=dev)
    return Upscaler(model, spec, precision=precision, method=method, max_memory=max_memory, max_pixels=max_pixels,
                    backend=backend, onnx_dir=onnx_dir, quantize=quantize)


def output_size(in_hw: tuple[int, int], size: Sequence[int] | None = None, scale: Scale | None = None) -> tuple[int, int]:
    """(height, width) of the output from an explicit size or a (per-axis) scale."""
    if (size is None) == (scale is None):
        raise LiifError("give exactly one of size=(height, width) or scale=")
    if size is not None:
        if len(size) != 2:
            raise LiifError(f"size must be (height, width), got {size!r}")
        h, w = (int(v) for v in size)
        if h <= 0 or w <= 0:
            raise LiifError(f"output size must be positive, got height={h} width={w}")
        return h, w
    assert scale is not None
    sy, sx = (scale, scale) if isinstance(scale, (int, float)) else scale
    for s in (sy, sx):
        if not isinstance(s, (int, float)) or not math.isfinite(s) or s <= 0:
            raise LiifError(f"scale must be a finite number > 0, got {s!r}")
    h, w = round(in_hw[0] * sy), round(in_hw[1] * sx)
    if h <= 0 or w <= 0:
        raise LiifError(f"scale {sy}x{sx} gives an empty output for a {in_hw[1]}x{in_hw[0]} (WxH) input")
    return h, w


class Upscaler:
    """A loaded LIIF model with rendering settings."""

    def __init__(self, model: LIIF, spec: ModelSpec, precision: str = "auto", method: str = "fast",
                 max_memory: int | None = None, max_pixels: int | None = None, backend: str = "torch",
                 onnx_dir: str | os.PathLike[str] | None = None, quantize: str = "round") -> None:
        self.model, self.spec = model.eval(), spec
        self.device = next(model.parameters()).device
        self.method, self.max_memory = method, max_memory
        self.max_pixels = default_max_pixels() if max_pixels is None else int(max_pixels)
        self.backend = backend
        if quantize not in imageio.QUANTIZE:
            raise LiifError(f"unknown quantize mode {quantize!r}; expected one of {', '.join(imageio.QUANTIZE)}")
        self.quantize = quantize
        self.precision = self._resolve_precision(precision)  # the precision that actually runs
        # backend="onnxruntime": the compute runs the ONNX export in onnx_dir (or one cached on first use).
        self._backend = None
        if backend != "torch":
            from liif.export.onnx import backend_for
            self._backend = backend_for(backend, model, spec, onnx_dir, method)

    def _resolve_precision(self, precision: str) -> str:
        """auto/fp32/bf16/fp16 -> what runs here (see :func:`liif.precision.resolve`)."""
        if self.backend != "torch" and precision not in ("auto", "fp32"):
            raise LiifError(f"the {self.backend} backend renders in fp32 only; got precision {precision!r}")
        if self.method == "reference":  # the official route is fp32 by definition
            if precision not in precisions.CHOICES:
                raise LiifError(f"unknown precision {precision!r}; expected one of {', '.join(precisions.CHOICES)}")
            return "fp32"
        return precisions.resolve(precision, self.device, fp32_only=self.backend != "torch")

    def plan(self, in_hw: tuple[int, int], size: Sequence[int] | None = None, scale: Scale | None = None,
             region: Sequence[int] | None = None) -> tuple[tuple[int, int], Window]:
        """Validate the request: output (H, W) and the window to render, within the pixel limit."""
        out_hw = output_size(in_hw, size, scale)
        window = Window.full(out_hw) if region is None else Window(int(region[1]), int(region[0]),
                                                                    int(region[3]), int(region[2]))
        window.check(out_hw)
        if window.h * window.w > self.max_pixels:
            raise LiifError(f"output {window.w}x{window.h} (WxH) = {window.h * window.w:,} pixels exceeds the "
                            f"limit of {self.max_pixels:,} (raise it with max_pixels / --max-pixels / LIIF_MAX_PIXELS)")
        return out_hw, window

    def upscale(self, image: ImageLike, size: Sequence[int] | None = None, scale: Scale | None = None,
                region: Sequence[int] | None = None, precision: str | None = None,
                progress: bool = False, cancel: Callable[[], bool] | None = None) -> ImageLike:
        """Upscale (or resample to any size) ``image``; ``region=(x, y, w, h)`` renders only that
        window of the virtual output, identical to the same crop of the full render. ``cancel`` is
        called before the render and after each stripe; when it returns True, RenderCancelled."""
        precision = self.precision if precision is None else self._resolve_precision(precision)
        if isinstance(image, torch.Tensor):
            return self._upscale_tensor(image, size, scale, region, precision, progress, cancel)
        if isinstance(image, Image.Image):
            dec = imageio.decode(image)
            as_kind = "pil"
        elif isinstance(image, np.ndarray):
            dec = _decode_array(image)
            as_kind = str(image.dtype)
        else:
            raise LiifError(f"unsupported image type {type(image).__name__}; use PIL, NumPy or torch")
        out_hw, window = self.plan(dec.hw, size, scale, region)
        # 8-bit sources stay uint8 (C, H, W) views: crops are converted to float tile by tile.
        arr = dec.rgb if dec.rgb.flags.writeable else dec.rgb.copy()  # torch wants writable memory
        rgb = torch.from_numpy(arr).permute(2, 0, 1).to(self.device)
        channels, dtype, finish = imageio.finisher(dec.gray, dec.bits, self.quantize)
        pixels = self.render_into(rgb, out_hw, window, precision, progress, channels, dtype, finish, cancel)
        alpha = _window_alpha(dec.alpha, out_hw, window)
        if as_kind == "pil":
            return imageio.compose(pixels, alpha, dec.bits, self.quantize)
        return _encode_array(pixels, alpha, image, self.quantize)

    def upscale_frames(self, frames: Iterable[np.ndarray], size: Sequence[int] | None = None,
                       scale: Scale | None = None, precision: str | None = None) -> Iterator[np.ndarray]:
        """Lazily upscale a sequence of frames (arrays, as ``upscale`` takes them), yielding one result
        per frame, each equal to ``upscale(frame, ...)``; the backend and plan are built once."""
        from liif.video import upscale_frames
        return upscale_frames(self, frames, size, scale, precision)

    def upscale_video(self, src: str | os.PathLike[str], dst: str | os.PathLike[str],
                      size: Sequence[int] | None = None, scale: Scale | None = None, **options: Any) -> Any:
        """Video file -> video file (needs ``liif[video]``); see :func:`liif.video.upscale_video`."""
        from liif.video import upscale_video
        return upscale_video(self, src, dst, size, scale, **options)

    def render_rgb(self, rgb: torch.Tensor, out_hw: tuple[int, int], window: Window, precision: str,
                   progress: bool = False, cancel: Callable[[], bool] | None = None) -> np.ndarray:
        """(3, h, w) RGB in [0, 1] (or uint8) -> float32 (window.h, window.w, 3) RGB, unclamped."""
        return self.render_into(rgb, out_hw, window, precision, progress, 3, np.dtype(np.float32), lambda t: t,
                                cancel)

    def render_into(self, rgb: torch.Tensor, out_hw: tuple[int, int], window: Window, precision: str,
                    progress: bool, channels: int, dtype: np.dtype,
                    finish: Callable[[np.ndarray], np.ndarray],
                    cancel: Callable[[], bool] | None = None, backend: TorchBackend | None = None) -> np.ndarray:
        """Render tile by tile, turning each float RGB tile into final pixels at once, so the
        only full-size array is the result in its final dtype. ``backend``: a compute backend built
        once for many renders (video frames); by default the fast path builds one per call."""
        _stop_if(cancel)
        out = np.empty((window.h, window.w, channels), dtype=dtype)
        if self.method == "reference":
            pred = render(self.model, rgb, out_hw, window, method="reference")
            out[:] = finish(self.model.denormalize(pred.permute(1, 2, 0)).cpu().numpy())
            return out
        # On CUDA, 8-bit RGB is quantised on the GPU (the same rule as the NumPy finisher): a quarter
        # of the bytes cross to the host and the CPU does no per-pixel work.
        on_gpu = rgb.device.type == "cuda" and channels == 3 and dtype == np.uint8
        for (y, x), tile in render_tiles(self.model, rgb, out_hw, window, precision, self.max_memory, progress,
                                         backend=backend or self._backend):
            rgb_tile = self.model.denormalize(tile.permute(1, 2, 0))
            t = (imageio.quantize_tensor(rgb_tile, self.quantize).cpu().numpy() if on_gpu
                 else finish(rgb_tile.cpu().numpy()))
            out[y:y + t.shape[0], x:x + t.shape[1]] = t
            _stop_if(cancel)
        return out

    def _upscale_tensor(self, t: torch.Tensor, size: Sequence[int] | None, scale: Scale | None,
                        region: Sequence[int] | None, precision: str, progress: bool,
                        cancel: Callable[[], bool] | None = None) -> torch.Tensor:
        if not t.is_floating_point() or t.dim() not in (3, 4) or t.shape[-3] not in (1, 3, 4):
            raise LiifError(f"tensor input must be float (C, H, W) or (B, C, H, W) with C in 1, 3, 4; got "
                            f"{t.dtype} {tuple(t.shape)}")
        batch = t if t.dim() == 4 else t[None]
        outs = []
        for img in batch:
            c = img.shape[0]
            rgb = img[:3] if c >= 3 else img.expand(3, -1, -1)
            out_hw, window = self.plan(tuple(img.shape[-2:]), size, scale, region)
            res = torch.from_numpy(self.render_rgb(rgb.to(self.device).float(), out_hw, window, precision,
                                                   progress, cancel)).clamp_(0, 1)
            if c == 1:
                res = res @ torch.from_numpy(imageio.LUMA)
                res = res[None]
            else:
                res = res.permute(2, 0, 1)
            if c == 4:
                a = _window_alpha(img[3].detach().float().cpu().numpy(), out_hw, window)
                res = torch.cat([res, torch.from_numpy(a)[None]], 0)
            outs.append(res)
        out = torch.stack(outs).to(device=t.device, dtype=t.dtype)
        return out if t.dim() == 4 else out[0]


def _stop_if(cancel: Callable[[], bool] | None) -> None:
    if cancel is not None and cancel():
        raise RenderCancelled("render cancelled")


def _window_alpha(alpha: np.ndarray | None, out_hw: tuple[int, int], window: Window) -> np.ndarray | None:
    if alpha is None:
        return None
    full = imageio.resize_alpha(alpha, out_hw)
    return full[window.y:window.y + window.h, window.x:window.x + window.w]


def _decode_array(a: np.ndarray) -> imageio.Decoded:
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise LiifError(f"array input must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got {a.shape}")
    if a.dtype == np.uint8:
        f, bits = a, 8
    elif a.dtype == np.uint16:
        f, bits = a.astype(np.float32) / 65535.0, 16
    elif a.dtype in (np.float32, np.float64):
        f, bits = np.clip(a.astype(np.float32), 0, 1), 32
    else:
        raise LiifError(f"array dtype must be uint8, uint16 or float32, got {a.dtype}")
    if a.ndim == 2:
        return imageio.Decoded(np.repeat(f[..., None], 3, axis=2), None, True, bits)
    alpha = f[..., 3] if a.shape[2] == 4 else None
    if alpha is not None and bits == 8:
        alpha = alpha.astype(np.float32) / 255.0
    return imageio.Decoded(np.ascontiguousarray(f[..., :3]), alpha, False, bits)


def _encode_array(pixels: np.ndarray, alpha: np.ndarray | None, like: np.ndarray, mode: str = "round") -> np.ndarray:
    """Finished pixels (h, w, 1 or 3) (+ float alpha) -> the layout and dtype of the input array."""
    if alpha is not None:
        a = (imageio.quantize(alpha, 16 if like.dtype == np.uint16 else 8, mode) if like.dtype in (np.uint8, np.uint16)
             else np.clip(alpha, 0, 1))
        pixels = np.concatenate([pixels, a.astype(pixels.dtype)[..., None]], -1)
    if like.dtype not in (np.uint8, np.uint16):
        pixels = pixels.astype(like.dtype)
    return pixels[..., 0] if like.ndim == 2 else pixels
