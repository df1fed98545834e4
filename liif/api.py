"""The Python API: ``liif.load(...)`` returns an :class:`Upscaler`.

Sizes in the API are (height, width), as in PyTorch; the CLI takes WIDTHxHEIGHT like image tools.
``upscale`` accepts a PIL image, a uint8/uint16/float32 NumPy array (H, W[, C]) or a float tensor
(C, H, W) / (B, C, H, W) in [0, 1], and returns the same kind. Channel policies (gray, alpha,
16-bit) are those of :mod:`liif.imageio`.
"""
from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image

from liif import checkpoints, imageio, limits, weights
from liif import precision as precisions
from liif.errors import LiifError
from liif.fileio import atomic_path
from liif.models import ImplicitDecoder, ModelSpec
from liif.progress import ProgressCallback
from liif.render import Backend, TorchBackend, Window, band_rows, default_budget, render, render_tiles

DEFAULT_MAX_PIXELS = limits.DEFAULT_MAX_PIXELS  # output pixels; LIIF_MAX_PIXELS or max_pixels= overrides
DEFAULT_MAX_INPUT_PIXELS = limits.DEFAULT_MAX_INPUT_PIXELS  # LIIF_MAX_INPUT_PIXELS or max_input_pixels=
METHODS = ("fast", "reference")


class RenderCancelled(LiifError):
    """``upscale(..., cancel=f)`` stopped early because ``f()`` returned True."""


ImageLike = Image.Image | np.ndarray | torch.Tensor
ImageT = TypeVar("ImageT", Image.Image, np.ndarray, torch.Tensor)  # upscale returns the kind it is given
Scale = float | tuple[float, float]


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def as_device(device: str | torch.device) -> torch.device:
    """A device this build can render on (cpu, or cuda where available), else one-line LiifError."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise LiifError(f"unknown device {device!r}; expected cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise LiifError(f"device {str(device)!r} requested but CUDA is not available")
    if dev.type not in ("cpu", "cuda"):
        raise LiifError(f"unsupported device {str(device)!r}; expected cpu, cuda or cuda:N")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise LiifError(f"device {str(device)!r} does not exist ({torch.cuda.device_count()} CUDA devices)")
    return dev


def load(name_or_path: str | os.PathLike[str] = "edsr-baseline-liif", device: str | torch.device | None = None,
         precision: str = "auto", method: str = "fast", max_memory: int | None = None,
         max_pixels: int | None = None, backend: str = "torch",
         onnx_dir: str | os.PathLike[str] | None = None, quantize: str = "round",
         max_input_pixels: int | None = None) -> Upscaler:
    """Load pretrained weights by name (fetched and verified on first use) or any checkpoint path.

    ``precision="auto"`` runs what the hardware runs natively (:mod:`liif.precision`); the one that
    runs is ``Upscaler.precision``."""
    if device is None:  # the ONNX Runtime backend computes on the CPU
        dev = torch.device("cpu") if backend == "onnxruntime" else default_device()
    else:
        dev = as_device(device)
    _check_method(method)
    model, spec = checkpoints.load(weights.path(name_or_path), device=dev)
    return Upscaler(model, spec, precision=precision, method=method, max_memory=max_memory, max_pixels=max_pixels,
                    backend=backend, onnx_dir=onnx_dir, quantize=quantize, max_input_pixels=max_input_pixels)


def _check_method(method: object) -> None:
    if method not in METHODS:
        raise LiifError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")


def _whole(name: str, v: object) -> int:
    """A pixel count or coordinate: an int (NumPy's too) or an integral float such as 64.0; a
    fractional value is refused rather than truncated."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
        raise LiifError(f"{name} must be whole numbers, got {v!r}")
    f = float(v)
    if not math.isfinite(f) or f != math.floor(f):
        raise LiifError(f"{name} must be whole numbers, got {v!r}")
    return int(f)


def _scale_value(s: object) -> float:
    if isinstance(s, (bool, np.bool_)) or not isinstance(s, numbers.Real):
        raise LiifError(f"scale must be a finite number > 0, got {s!r}")
    f = float(s)
    if not math.isfinite(f) or f <= 0:
        raise LiifError(f"scale must be a finite number > 0, got {s!r}")
    return f


def output_size(in_hw: tuple[int, int], size: Sequence[int] | None = None,
                scale: Scale | None = None) -> tuple[int, int]:
    """(height, width) of the output from an explicit size or a (per-axis) scale."""
    if (size is None) == (scale is None):
        raise LiifError("give exactly one of size=(height, width) or scale=")
    if size is not None:
        if isinstance(size, (str, bytes)) or not isinstance(size, Sequence) or len(size) != 2:
            raise LiifError(f"size must be (height, width), got {size!r}")
        h, w = (_whole("size", v) for v in size)
        if h <= 0 or w <= 0:
            raise LiifError(f"output size must be positive, got height={h} width={w}")
        return h, w
    if isinstance(scale, (tuple, list)):
        if len(scale) != 2:
            raise LiifError(f"scale must be a number or (scale_y, scale_x), got {scale!r}")
        sy, sx = (_scale_value(v) for v in scale)
    else:
        sy = sx = _scale_value(scale)
    h, w = round(in_hw[0] * sy), round(in_hw[1] * sx)
    if h <= 0 or w <= 0:
        raise LiifError(f"scale {sy}x{sx} gives an empty output for a {in_hw[1]}x{in_hw[0]} (WxH) input")
    return h, w


class Upscaler:
    """A loaded model (LIIF or LTE) with rendering settings."""

    def __init__(self, model: ImplicitDecoder, spec: ModelSpec, precision: str = "auto", method: str = "fast",
                 max_memory: int | None = None, max_pixels: int | None = None, backend: str = "torch",
                 onnx_dir: str | os.PathLike[str] | None = None, quantize: str = "round",
                 max_input_pixels: int | None = None) -> None:
        _check_method(method)
        self.model, self.spec = model.eval(), spec
        self.device = next(model.parameters()).device
        self.method, self.max_memory = method, max_memory
        self.max_pixels = limits.max_pixels(max_pixels)
        self.max_input_pixels = limits.max_input_pixels(max_input_pixels)
        self.backend = backend
        if quantize not in imageio.QUANTIZE:
            raise LiifError(f"unknown quantize mode {quantize!r}; expected one of {', '.join(imageio.QUANTIZE)}")
        self.quantize = quantize
        self.precision = self._resolve_precision(precision)  # the precision that actually runs
        # backend="onnxruntime": the compute runs the ONNX export in onnx_dir (or one cached on first use).
        self._backend: Backend | None = None
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
        limits.check_input(in_hw, self.max_input_pixels)
        out_hw = output_size(in_hw, size, scale)
        if region is None:
            window = Window.full(out_hw)
        else:
            if isinstance(region, (str, bytes)) or not isinstance(region, Sequence) or len(region) != 4:
                raise LiifError(f"region must be (x, y, width, height), got {region!r}")
            x, y, w, h = (_whole("region", v) for v in region)
            window = Window(y, x, h, w)
        window.check(out_hw)
        if window.h * window.w > self.max_pixels:
            raise LiifError(f"output {window.w}x{window.h} (WxH) = {window.h * window.w:,} pixels exceeds the "
                            f"limit of {self.max_pixels:,} (raise it with max_pixels / --max-pixels / LIIF_MAX_PIXELS)")
        return out_hw, window

    def upscale(self, image: ImageT, size: Sequence[int] | None = None, scale: Scale | None = None,
                region: Sequence[int] | None = None, precision: str | None = None,
                progress: bool = False, cancel: Callable[[], bool] | None = None) -> ImageT:
        """Upscale (or resample to any size) ``image``; ``region=(x, y, w, h)`` renders only that
        window of the virtual output, identical to the same crop of the full render. ``cancel`` is
        called before the render and after each stripe; when it returns True, RenderCancelled."""
        precision = self.precision if precision is None else self._resolve_precision(precision)
        if isinstance(image, torch.Tensor):
            return self._upscale_tensor(image, size, scale, region, precision, progress, cancel)
        dec = self._decode(image)
        out_hw, window = self.plan(dec.hw, size, scale, region)
        rgb = _rgb_tensor(dec, self.device)
        channels, dtype, finish = imageio.finisher(dec.gray, dec.bits, self.quantize)
        pixels = self.render_into(rgb, out_hw, window, precision, progress, channels, dtype, finish, cancel)
        alpha = _window_alpha(dec.alpha, out_hw, window)  # the window's alpha only
        if isinstance(image, Image.Image):
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

    def _decode(self, image: ImageLike) -> imageio.Decoded:
        if isinstance(image, Image.Image):
            limits.check_input((image.height, image.width), self.max_input_pixels)  # before decoding
            return imageio.decode(imageio.prepare(image))
        if isinstance(image, np.ndarray):
            return _decode_array(image)
        raise LiifError(f"unsupported image type {type(image).__name__}; use PIL or NumPy (torch: upscale())")

    def upscale_to_png(self, image: Image.Image | np.ndarray, path: str | os.PathLike[str],
                       size: Sequence[int] | None = None, scale: Scale | None = None,
                       region: Sequence[int] | None = None, precision: str | None = None,
                       progress: bool | ProgressCallback = False,
                       cancel: Callable[[], bool] | None = None) -> tuple[int, int]:
        """Like :meth:`upscale`, but stream the result into a PNG file at ``path`` band by band of
        full-width rows, so memory does not grow with the output; returns (width, height).
        ``progress``: True for a tqdm bar, or a callable called with (rows done, rows in all) of the
        rendered window as tiles finish (rows done: pixels done / width), e.g.
        :class:`liif.progress.ProgressLines`, which prints plain lines for logs.

        The pixels are those of ``upscale`` (same channel policy; float arrays are written 8-bit).
        The file is written to a temp file in its folder and renamed at the end; on any error
        (a one-line LiifError for write errors) nothing is left behind."""
        precision = self.precision if precision is None else self._resolve_precision(precision)
        dec = self._decode(image)
        out_hw, window = self.plan(dec.hw, size, scale, region)
        rgb = _rgb_tensor(dec, self.device)
        bits = 8 if dec.bits == 32 else dec.bits
        channels, dtype, finish = imageio.finisher(dec.gray, bits, self.quantize)
        rows = window.h
        if self.method == "fast":
            rows = band_rows(self.model, rgb, out_hw, window, precision, self.max_memory)
        # The finished band (and its alpha) stays under a quarter of the renderer's budget.
        budget = self.max_memory if self.max_memory is not None else default_budget(self.device)
        row_bytes = window.w * (channels + (dec.alpha is not None)) * 4
        rows = max(1, min(rows, budget // 4 // row_bytes))
        backend = self.compute_backend(precision)  # one for all bands
        bar = None
        report = progress if callable(progress) else None
        if progress and report is None:
            from tqdm import tqdm
            bar = tqdm(total=window.h * window.w, unit="px", unit_scale=True, desc="render", leave=False, delay=1.0)
        done = 0

        def tick(pixels: int) -> None:  # after each tile: the bar or the callback
            nonlocal done
            done += pixels
            if bar is not None:
                bar.update(pixels)
            if report is not None:
                report(done // window.w, window.h)
        p = Path(path)
        try:
            with atomic_path(p) as tmp, open(tmp, "wb") as f:
                writer: imageio.PngWriter | None = None
                for b0 in range(0, window.h, rows):
                    band = Window(window.y + b0, window.x, min(rows, window.h - b0), window.w)
                    pixels = self.render_into(rgb, out_hw, band, precision, False, channels, dtype, finish, cancel,
                                              backend, tick if bar is not None or report is not None else None)
                    data, depth = imageio.png_rows(pixels, _window_alpha(dec.alpha, out_hw, band), bits, self.quantize)
                    del pixels
                    if writer is None:
                        writer = imageio.PngWriter(f, window.w, window.h, data.shape[2], depth)
                    writer.write(data)
                    del data
                assert writer is not None
                writer.close()
        except OSError as e:
            raise LiifError(f"cannot write {p}: {e.strerror or e}") from None
        finally:
            if bar is not None:
                bar.close()
        return window.w, window.h

    def render_rgb(self, rgb: torch.Tensor, out_hw: tuple[int, int], window: Window, precision: str,
                   progress: bool = False, cancel: Callable[[], bool] | None = None) -> np.ndarray:
        """(3, h, w) RGB in [0, 1] (or uint8) -> float32 (window.h, window.w, 3) RGB, unclamped."""
        return self.render_into(rgb, out_hw, window, precision, progress, 3, np.dtype(np.float32), lambda t: t,
                                cancel)

    def compute_backend(self, precision: str) -> Backend | None:
        """The compute backend for many renders in ``precision`` (video frames, PNG bands): the ONNX
        one if loaded, else the torch one, built once (it prepacks the MLP, tens of ms); None for
        the reference route."""
        if self._backend is not None or self.method != "fast":
            return self._backend
        return TorchBackend(self.model, precision)

    def render_into(self, rgb: torch.Tensor, out_hw: tuple[int, int], window: Window, precision: str,
                    progress: bool, channels: int, dtype: np.dtype,
                    finish: Callable[[np.ndarray], np.ndarray],
                    cancel: Callable[[], bool] | None = None, backend: Backend | None = None,
                    tick: Callable[[int], None] | None = None) -> np.ndarray:
        """Render tile by tile, turning each float RGB tile into final pixels at once, so the
        only full-size array is the result in its final dtype. ``backend``: a compute backend built
        once for many renders (video frames); by default the fast path builds one per call.
        ``tick``: called with the pixel count of each finished tile (progress)."""
        _stop_if(cancel)
        out = np.empty((window.h, window.w, channels), dtype=dtype)
        if self.method == "reference":
            pred = render(self.model, rgb, out_hw, window, method="reference")
            out[:] = finish(self.model.denormalize(pred.permute(1, 2, 0)).cpu().numpy())
            if tick is not None:
                tick(window.h * window.w)
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
            if tick is not None:
                tick(t.shape[0] * t.shape[1])
            _stop_if(cancel)
        return out

    def _upscale_tensor(self, t: torch.Tensor, size: Sequence[int] | None, scale: Scale | None,
                        region: Sequence[int] | None, precision: str, progress: bool,
                        cancel: Callable[[], bool] | None = None) -> torch.Tensor:
        if not t.is_floating_point() or t.dim() not in (3, 4) or t.shape[-3] not in (1, 3, 4):
            raise LiifError(f"tensor input must be float (C, H, W) or (B, C, H, W) with C in 1, 3, 4; got "
                            f"{t.dtype} {tuple(t.shape)}")
        if t.device.type not in ("cpu", "cuda") or (t.device.type == "cuda" and not torch.cuda.is_available()):
            raise LiifError(f"tensor on device {t.device} cannot be read; use a CPU or CUDA tensor")
        if t.numel() == 0:
            raise LiifError(f"tensor input is empty: {tuple(t.shape)}")
        if not bool(torch.isfinite(t).all()):
            raise LiifError("tensor input contains NaN or infinite values")
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


def _rgb_tensor(dec: imageio.Decoded, device: torch.device) -> torch.Tensor:
    """(3, H, W) on ``device``; 8-bit sources stay uint8 views, converted to float tile by tile."""
    arr = dec.rgb if dec.rgb.flags.writeable else dec.rgb.copy()  # torch wants writable memory
    return torch.from_numpy(arr).permute(2, 0, 1).to(device)


def _stop_if(cancel: Callable[[], bool] | None) -> None:
    if cancel is not None and cancel():
        raise RenderCancelled("render cancelled")


def _window_alpha(alpha: np.ndarray | None, out_hw: tuple[int, int], window: Window) -> np.ndarray | None:
    """Alpha of the window alone (never resized at the whole virtual output size)."""
    if alpha is None:
        return None
    return imageio.resize_alpha(alpha, out_hw, (window.y, window.x, window.h, window.w))


def _decode_array(a: np.ndarray) -> imageio.Decoded:
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise LiifError(f"array input must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got {a.shape}")
    if a.size == 0:
        raise LiifError(f"array input is empty: {a.shape}")
    if a.dtype == np.uint8:
        f, bits = a, 8
    elif a.dtype == np.uint16:
        f, bits = a.astype(np.float32) / 65535.0, 16
    elif a.dtype in (np.float32, np.float64):
        if not np.isfinite(a).all():
            raise LiifError("array input contains NaN or infinite values")
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
