"""The one request pipeline: decode -> plan -> tensor -> render tile by tile -> finish -> alpha -> encode.

Every entry point goes through a :class:`Pipeline`: ``Upscaler.upscale`` (PIL image, NumPy array,
tensor), ``Upscaler.upscale_to_png`` (streamed bands), video frames and the viewer's windows. A
pipeline holds settings resolved once (the render route, :class:`liif.compute.Compute`, the
quantisation mode, the pixel limits) and the compute backend built once, so many requests (the
frames of a video, the bands of a PNG) share them.
"""
from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from liif import imaging, limits
from liif.compute import Compute
from liif.errors import LiifError
from liif.fileio import atomic_path
from liif.models import ImplicitDecoder
from liif.progress import ProgressCallback
from liif.render import Backend, TorchBackend, Window, plan_render, render, render_planned
from liif.render.mapcache import Interrupted, MapCache
from liif.render.plan import lr_box, plan_axis
from liif.render.tiled import relative_cell

ROUTES = ("fast", "reference")  # the render routes (the API's and CLI's ``method``)
Scale = float | tuple[float, float]
Tick = Callable[[int], None]  # called with the pixel count of each finished tile


class RenderCancelled(LiifError):
    """``upscale(..., cancel=f)`` stopped early because ``f()`` returned True."""


# -- the request: sizes and windows ---------------------------------------------------------------

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


def plan(in_hw: tuple[int, int], size: Sequence[int] | None, scale: Scale | None, region: Sequence[int] | None,
         max_pixels: int, max_input_pixels: int) -> tuple[tuple[int, int], Window]:
    """Validate a request: output (H, W) and the window to render, within the pixel limits."""
    limits.check_input(in_hw, max_input_pixels)
    out_hw = output_size(in_hw, size, scale)
    if region is None:
        window = Window.full(out_hw)
    else:
        if isinstance(region, (str, bytes)) or not isinstance(region, Sequence) or len(region) != 4:
            raise LiifError(f"region must be (x, y, width, height), got {region!r}")
        x, y, w, h = (_whole("region", v) for v in region)
        window = Window(y, x, h, w)
    window.check(out_hw)
    if window.h * window.w > max_pixels:
        raise LiifError(f"output {window.w}x{window.h} (WxH) = {window.h * window.w:,} pixels exceeds the "
                        f"limit of {max_pixels:,} (raise it with max_pixels / --max-pixels / LIIF_MAX_PIXELS)")
    return out_hw, window


def check_route(route: object) -> str:
    if route not in ROUTES:
        raise LiifError(f"unknown method {route!r}; expected one of {', '.join(ROUTES)}")
    return str(route)


def check_quantize(mode: object) -> str:
    if mode not in imaging.QUANTIZE:
        raise LiifError(f"unknown quantize mode {mode!r}; expected one of {', '.join(imaging.QUANTIZE)}")
    return str(mode)


@dataclass(frozen=True)
class Finish:
    """How float RGB tiles become output pixels: ``channels`` of ``dtype``; ``fn`` maps a tile
    (h, w, 3) to (h, w, channels). ``gpu_quantize``: 8-bit RGB, which CUDA may quantise on the GPU."""

    channels: int
    dtype: np.dtype
    fn: Callable[[np.ndarray], np.ndarray]
    gpu_quantize: bool = False

    @classmethod
    def of(cls, gray: bool, bits: int, mode: str) -> Finish:
        channels, dtype, fn = imaging.finisher(gray, bits, mode)
        return cls(channels, dtype, fn, channels == 3 and dtype == np.uint8)


RAW_RGB = Finish(3, np.dtype(np.float32), lambda t: t)  # float32 RGB, unclamped


def window_alpha(alpha: np.ndarray | None, out_hw: tuple[int, int], window: Window) -> np.ndarray | None:
    """Alpha of the window alone (never resized at the whole virtual output size)."""
    if alpha is None:
        return None
    return imaging.resize_alpha(alpha, out_hw, (window.y, window.x, window.h, window.w))


def rgb_tensor(dec: imaging.Decoded, device: torch.device) -> torch.Tensor:
    """(3, H, W) on ``device``; 8-bit sources stay uint8 views, converted to float tile by tile."""
    arr = dec.rgb if dec.rgb.flags.writeable else dec.rgb.copy()  # torch wants writable memory
    return torch.from_numpy(arr).permute(2, 0, 1).to(device)


def band_rows(budget: int, row_bytes: int) -> int:
    """The rows of a band streamed to a PNG: the finished band (and its alpha) stays under a
    quarter of the renderer's budget."""
    return max(1, budget // 4 // row_bytes)


def _hashable(v: object) -> object:
    return tuple(v) if isinstance(v, (list, tuple)) else v


def stop_if(cancel: Callable[[], bool] | None) -> None:
    if cancel is not None and cancel():
        raise RenderCancelled("render cancelled")


# -- the pipeline ---------------------------------------------------------------------------------

class Pipeline:
    """Requests with the same settings: ``route`` (fast or reference), ``compute`` (resolved),
    ``quantize``, the pixel limits, and the compute backend (given, e.g. ONNX Runtime, or a
    ``TorchBackend`` built here once; None on the reference route). ``cache``: where renders that
    name their image (``key``) keep its features and maps (``liif.render.mapcache``; fast route)."""

    def __init__(self, model: ImplicitDecoder, route: str, compute: Compute, quantize: str = "round",
                 max_pixels: int | None = None, max_input_pixels: int | None = None,
                 backend: Backend | None = None, cache: MapCache | None = None) -> None:
        self.model, self.route, self.compute = model, check_route(route), compute
        self.quantize = check_quantize(quantize)
        self.max_pixels = limits.max_pixels(max_pixels)
        self.max_input_pixels = limits.max_input_pixels(max_input_pixels)
        if route == "fast" and backend is None:
            backend = TorchBackend(model, compute)  # prepacks the MLP once (tens of ms)
        self.backend, self.cache = backend, cache
        self._plans: dict[tuple[object, ...], tuple[tuple[int, int], Window]] = {}

    # -- plan -------------------------------------------------------------------------------------
    def plan(self, in_hw: tuple[int, int], size: Sequence[int] | None = None, scale: Scale | None = None,
             region: Sequence[int] | None = None) -> tuple[tuple[int, int], Window]:
        return plan(in_hw, size, scale, region, self.max_pixels, self.max_input_pixels)

    def plan_cached(self, in_hw: tuple[int, int], size: Sequence[int] | None,
                    scale: Scale | None) -> tuple[tuple[int, int], Window]:
        """:meth:`plan` of a whole output, once per input size (video frames)."""
        key = (in_hw, _hashable(size), _hashable(scale))
        if key not in self._plans:
            self._plans[key] = self.plan(in_hw, size, scale)
        return self._plans[key]

    # -- decode -----------------------------------------------------------------------------------
    def decode(self, image: Image.Image | np.ndarray) -> imaging.Decoded:
        if isinstance(image, Image.Image):
            limits.check_input((image.height, image.width), self.max_input_pixels)  # before decoding
            return imaging.decode(imaging.prepare(image))
        if isinstance(image, np.ndarray):
            return imaging.decode_array(image)
        raise LiifError(f"unsupported image type {type(image).__name__}; use PIL or NumPy (torch: upscale())")

    # -- render -----------------------------------------------------------------------------------
    def render(self, rgb: torch.Tensor, out_hw: tuple[int, int], window: Window, finish: Finish = RAW_RGB, *,
               progress: bool = False, cancel: Callable[[], bool] | None = None,
               tick: Tick | None = None, key: Hashable | None = None, hint: Window | None = None,
               preview: bool = False) -> np.ndarray:
        """Render ``window`` tile by tile, turning each float RGB tile into final pixels at once, so
        the only full-size array is the result in its final dtype. ``key``, ``hint``, ``preview``: see
        :meth:`tiles`."""
        out = np.empty((window.h, window.w, finish.channels), dtype=finish.dtype)
        for (y, x), t in self.tiles(rgb, out_hw, window, finish, progress=progress, cancel=cancel, key=key,
                                    hint=hint, preview=preview):
            out[y:y + t.shape[0], x:x + t.shape[1]] = t
            if tick is not None:
                tick(t.shape[0] * t.shape[1])
        return out

    def tiles(self, rgb: torch.Tensor, out_hw: tuple[int, int], window: Window, finish: Finish, *,
              max_tile_rows: int | None = None, progress: bool = False,
              cancel: Callable[[], bool] | None = None, key: Hashable | None = None,
              hint: Window | None = None, preview: bool = False) -> Iterator[tuple[tuple[int, int], np.ndarray]]:
        """Finished tiles ((y, x) in the window, pixels), row-major; ``cancel`` is asked before the
        render and after each tile. ``key`` names the image ``rgb`` for the pipeline's cache (fast
        route): its features and maps are kept for the next render of it; ``hint``, a larger window of
        the same output (a viewer's visible window), has its maps computed first, in one piece.
        ``preview``: decode each pixel from its nearest code only, without the local ensemble (a
        quarter of the decode; a viewer's coarse pass; fast route only)."""
        stop_if(cancel)
        model = self.model
        if self.route == "reference":  # the official route: whole-image features, one piece
            pred = render(model, rgb, out_hw, window, method="reference")
            yield (0, 0), finish.fn(model.denormalize(pred.permute(1, 2, 0)).cpu().numpy())
            return
        plan = plan_render(model, (rgb.shape[-2], rgb.shape[-1]), out_hw, window, self.compute, max_tile_rows,
                           local_ensemble=not preview)
        source = None
        if self.cache is not None and key is not None:
            assert self.backend is not None  # the fast route's
            source = self.cache.source(key, model, self.backend, rgb, plan.rel_cell, self.compute)
        if source is not None and hint is not None:
            hint.check(out_hw)
            lr_hw = plan.lr_hw
            box = lr_box(plan_axis(out_hw[0], hint.y, hint.h, lr_hw[0], model.local_ensemble, rgb.device),
                         plan_axis(out_hw[1], hint.x, hint.w, lr_hw[1], model.local_ensemble, rgb.device),
                         0, hint.h, 0, hint.w)
            try:
                source.maps(box, cancel)
            except Interrupted:
                raise RenderCancelled("render cancelled") from None
        # On CUDA, 8-bit RGB is quantised on the GPU (the same rule as the NumPy finisher): a quarter
        # of the bytes cross to the host and the CPU does no per-pixel work.
        on_gpu = rgb.device.type == "cuda" and finish.gpu_quantize
        tiles = render_planned(model, rgb, plan, self.backend, progress, source, cancel)
        while True:
            try:
                yx, tile = next(tiles)
            except StopIteration:
                return
            except Interrupted:
                raise RenderCancelled("render cancelled") from None
            rgb_tile = model.denormalize(tile.permute(1, 2, 0))
            yield yx, (imaging.quantize_tensor(rgb_tile, self.quantize).cpu().numpy() if on_gpu
                       else finish.fn(rgb_tile.cpu().numpy()))
            stop_if(cancel)

    def bands(self, rgb: torch.Tensor, out_hw: tuple[int, int], window: Window, finish: Finish, max_rows: int,
              cancel: Callable[[], bool] | None = None,
              tick: Tick | None = None) -> Iterator[tuple[Window, np.ndarray]]:
        """Full-width bands of finished rows, top to bottom, each at most ``max_rows`` high: the
        fast route renders the tiles of one plan whose tile rows are the bands; the reference
        route renders each band as its own window."""
        if self.route == "reference":
            for b0 in range(0, window.h, max_rows):
                band = Window(window.y + b0, window.x, min(max_rows, window.h - b0), window.w)
                yield band, self.render(rgb, out_hw, band, finish, cancel=cancel, tick=tick)
            return
        buf: np.ndarray | None = None
        top = 0
        for (y, x), t in self.tiles(rgb, out_hw, window, finish, max_tile_rows=max_rows, cancel=cancel):
            if buf is None or y != top:
                buf, top = np.empty((t.shape[0], window.w, finish.channels), dtype=finish.dtype), y
            buf[:, x:x + t.shape[1]] = t
            if tick is not None:
                tick(t.shape[0] * t.shape[1])
            if x + t.shape[1] == window.w:  # the band's last tile
                yield Window(window.y + top, window.x, buf.shape[0], window.w), buf
                buf = None

    def warm(self, image: Image.Image | np.ndarray, key: Hashable, cancel: Callable[[], bool] | None = None,
             evict: bool = True) -> bool:
        """Fill the cache with image ``key``'s features over the whole image, and the maps that renders
        of it read at most zooms: all of them where the maps ignore the cell (LIIF, LTE), else the maps
        of the cell every zoom past the method's clip shares (LMF: x4 and more). A viewer calls it
        while idle, so later views of the image only decode. False when there is no cache or the
        image's tensors do not fit it (``evict=False``: do not fit beside what it holds, so nothing is
        dropped); :class:`RenderCancelled` when ``cancel()`` turns True (between pieces: the pieces done
        stay in the cache)."""
        if self.cache is None or self.backend is None:
            return False
        dec = self.decode(image)
        h, w = dec.hw
        clip = getattr(self.model, "cell_clip_scale", None) or 4.0
        rel_cell = relative_cell(self.model, (math.ceil(h * clip), math.ceil(w * clip)), (h, w), self.compute.device)
        source = self.cache.source(key, self.model, self.backend, rgb_tensor(dec, self.compute.device), rel_cell,
                                   self.compute, evict)
        if source is None:
            return False
        try:
            source.maps((0, h, 0, w), cancel)  # the features first (in the fewest pieces), then the maps
        except Interrupted:
            raise RenderCancelled("warming cancelled") from None
        return True

    # -- entry points ---------------------------------------------------------------------------
    def image(self, image: Image.Image | np.ndarray, size: Sequence[int] | None = None,
              scale: Scale | None = None, region: Sequence[int] | None = None, *, progress: bool = False,
              cancel: Callable[[], bool] | None = None, key: Hashable | None = None,
              hint: Sequence[int] | None = None, preview: bool = False) -> Image.Image | np.ndarray:
        """A PIL image or a NumPy array in, the same kind out. ``key`` (a name of this image, e.g. a
        viewer's), ``hint`` (x, y, w, h) and ``preview``: see :meth:`tiles`."""
        dec = self.decode(image)
        out_hw, window = self.plan(dec.hw, size, scale, region)
        hint_window = None if hint is None else Window(*(_whole("hint", v) for v in (hint[1], hint[0], hint[3],
                                                                                      hint[2])))
        return self._finish_image(image, dec, out_hw, window, progress, cancel, key, hint_window, preview)

    def frame(self, frame: np.ndarray, size: Sequence[int] | None = None,
              scale: Scale | None = None) -> np.ndarray:
        """One video frame (an array as :meth:`image` takes it), planned once per frame size."""
        if not isinstance(frame, np.ndarray):
            raise LiifError(f"frames must be NumPy arrays, got {type(frame).__name__}")
        dec = imaging.decode_array(frame)
        out_hw, window = self.plan_cached(dec.hw, size, scale)
        out = self._finish_image(frame, dec, out_hw, window, False, None)
        assert isinstance(out, np.ndarray)
        return out

    def _finish_image(self, image: Image.Image | np.ndarray, dec: imaging.Decoded, out_hw: tuple[int, int],
                      window: Window, progress: bool, cancel: Callable[[], bool] | None,
                      key: Hashable | None = None, hint: Window | None = None,
                      preview: bool = False) -> Image.Image | np.ndarray:
        finish = Finish.of(dec.gray, dec.bits, self.quantize)
        pixels = self.render(rgb_tensor(dec, self.compute.device), out_hw, window, finish, progress=progress,
                             cancel=cancel, key=key, hint=hint, preview=preview)
        alpha = window_alpha(dec.alpha, out_hw, window)  # the window's alpha only
        if isinstance(image, Image.Image):
            return imaging.compose(pixels, alpha, dec.bits, self.quantize)
        return imaging.encode_array(pixels, alpha, image, self.quantize)

    def tensor(self, t: torch.Tensor, size: Sequence[int] | None = None, scale: Scale | None = None,
               region: Sequence[int] | None = None, *, progress: bool = False,
               cancel: Callable[[], bool] | None = None) -> torch.Tensor:
        """A float tensor (C, H, W) or (B, C, H, W) in [0, 1], C in 1, 3, 4 -> the same layout."""
        if t.layout != torch.strided:  # sparse (or mkldnn): densifying could allocate far more than it holds
            raise LiifError(f"tensor input must be dense; got layout {t.layout} (convert it with t.to_dense())")
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
            out_hw, window = self.plan((img.shape[-2], img.shape[-1]), size, scale, region)
            res = torch.from_numpy(self.render(rgb.to(self.compute.device).float(), out_hw, window,
                                               progress=progress, cancel=cancel)).clamp_(0, 1)
            res = (res @ torch.from_numpy(imaging.LUMA))[None] if c == 1 else res.permute(2, 0, 1)
            if c == 4:
                a = window_alpha(img[3].detach().float().cpu().numpy(), out_hw, window)
                assert a is not None
                res = torch.cat([res, torch.from_numpy(a)[None]], 0)
            outs.append(res)
        out = torch.stack(outs).to(device=t.device, dtype=t.dtype)
        return out if t.dim() == 4 else out[0]

    def png(self, image: Image.Image | np.ndarray, path: str | os.PathLike[str], size: Sequence[int] | None = None,
            scale: Scale | None = None, region: Sequence[int] | None = None, *,
            progress: bool | ProgressCallback = False, cancel: Callable[[], bool] | None = None) -> tuple[int, int]:
        """Stream the result into a PNG at ``path`` band by band; returns (width, height). See
        :meth:`liif.api.Upscaler.upscale_to_png`."""
        imaging.check_writable(path)  # a folder, a file's child, an unwritable place: refused before any work
        dec = self.decode(image)
        out_hw, window = self.plan(dec.hw, size, scale, region)
        bits = 8 if dec.bits == 32 else dec.bits
        finish = Finish.of(dec.gray, bits, self.quantize)
        row_bytes = window.w * (finish.channels + (dec.alpha is not None)) * 4
        max_rows = min(window.h, band_rows(self.compute.budget, row_bytes))
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
        rgb = rgb_tensor(dec, self.compute.device)
        try:
            with atomic_path(p) as tmp, open(tmp, "wb") as f:
                writer: imaging.PngWriter | None = None
                for band, pixels in self.bands(rgb, out_hw, window, finish, max_rows, cancel,
                                               tick if bar is not None or report is not None else None):
                    data, depth = imaging.png_rows(pixels, window_alpha(dec.alpha, out_hw, band), bits, self.quantize)
                    del pixels
                    if writer is None:
                        writer = imaging.PngWriter(f, window.w, window.h, data.shape[2], depth)
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
