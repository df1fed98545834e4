"""The Python API: ``liif.load(...)`` returns an :class:`Upscaler`.

Sizes in the API are (height, width), as in PyTorch; the CLI takes WIDTHxHEIGHT like image tools.
``upscale`` accepts a PIL image, a uint8/uint16/float32 NumPy array (H, W[, C]) or a float tensor
(C, H, W) / (B, C, H, W) in [0, 1], and returns the same kind. Channel policies (gray, alpha,
16-bit) are those of :mod:`liif.imaging`.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image

from liif import checkpoints, compute, limits, pipeline, weights
from liif.compute import Compute
from liif.errors import LiifError
from liif.models import ImplicitDecoder, ModelSpec
from liif.pipeline import ROUTES, Pipeline, RenderCancelled, Scale, check_quantize, check_route, output_size
from liif.progress import ProgressCallback
from liif.render import Backend, Window
from liif.render.mapcache import MapCache

DEFAULT_MAX_PIXELS = limits.DEFAULT_MAX_PIXELS  # output pixels; LIIF_MAX_PIXELS or max_pixels= overrides
DEFAULT_MAX_INPUT_PIXELS = limits.DEFAULT_MAX_INPUT_PIXELS  # LIIF_MAX_INPUT_PIXELS or max_input_pixels=
METHODS = ROUTES

ImageLike = Image.Image | np.ndarray | torch.Tensor
ImageT = TypeVar("ImageT", Image.Image, np.ndarray, torch.Tensor)  # upscale returns the kind it is given


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

    ``precision="auto"`` runs what the hardware runs natively (:mod:`liif.compute`); the one that
    runs is ``Upscaler.precision``."""
    if device is None:  # the ONNX Runtime backend computes on the CPU
        dev = torch.device("cpu") if backend == "onnxruntime" else default_device()
    else:
        dev = as_device(device)
    check_route(method)
    model, spec = checkpoints.load(weights.path(name_or_path), device=dev)
    return Upscaler(model, spec, precision=precision, method=method, max_memory=max_memory, max_pixels=max_pixels,
                    backend=backend, onnx_dir=onnx_dir, quantize=quantize, max_input_pixels=max_input_pixels)


class Upscaler:
    """A loaded model (any decoder family) with its rendering settings, resolved once when it is
    built: ``method`` (the render route: fast or reference), ``precision`` (the one that runs),
    ``settings`` (:class:`liif.compute.Compute`), ``quantize``, the pixel limits and the backend.
    Every call runs the one request pipeline (:class:`liif.pipeline.Pipeline`)."""

    def __init__(self, model: ImplicitDecoder, spec: ModelSpec, precision: str = "auto", method: str = "fast",
                 max_memory: int | None = None, max_pixels: int | None = None, backend: str = "torch",
                 onnx_dir: str | os.PathLike[str] | None = None, quantize: str = "round",
                 max_input_pixels: int | None = None) -> None:
        self.method = check_route(method)
        self.model, self.spec = model.eval(), spec
        self.device = next(model.parameters()).device
        self.max_memory = max_memory
        self.max_pixels = limits.max_pixels(max_pixels)
        self.max_input_pixels = limits.max_input_pixels(max_input_pixels)
        self.backend = backend
        self.quantize = check_quantize(quantize)
        self.settings = self._resolve(precision)
        self.precision = self.settings.precision  # the precision that actually runs
        # backend="onnxruntime": the compute runs the ONNX export in onnx_dir (or one cached on first use).
        self._backend: Backend | None = None
        if backend != "torch":
            from liif.export.onnx import backend_for
            self._backend = backend_for(backend, model, spec, onnx_dir, method)

    def _resolve(self, precision: str) -> Compute:
        """auto/fp32/bf16/fp16 -> the settings that run here (see :func:`liif.compute.resolve`)."""
        if self.backend != "torch" and precision not in ("auto", "fp32"):
            raise LiifError(f"the {self.backend} backend renders in fp32 only; got precision {precision!r}")
        if self.method == "reference":  # the official route is fp32 by definition
            if precision not in compute.CHOICES:
                raise LiifError(f"unknown precision {precision!r}; expected one of {', '.join(compute.CHOICES)}")
            precision = "fp32"
        return Compute.resolve(self.device, precision, self.max_memory, fp32_only=self.backend != "torch")

    def pipeline(self, precision: str | None = None, cache: MapCache | None = None) -> Pipeline:
        """The request pipeline with these settings (``precision`` overrides the default); its
        compute backend is built once, so reuse it for many renders (video frames, PNG bands).
        ``cache``: keep the features and maps of the images its renders name (a viewer's)."""
        settings = self.settings if precision is None else self._resolve(precision)
        return Pipeline(self.model, self.method, settings, self.quantize, self.max_pixels, self.max_input_pixels,
                        self._backend, cache)

    def plan(self, in_hw: tuple[int, int], size: Sequence[int] | None = None, scale: Scale | None = None,
             region: Sequence[int] | None = None) -> tuple[tuple[int, int], Window]:
        """Validate the request: output (H, W) and the window to render, within the pixel limit."""
        return pipeline.plan(in_hw, size, scale, region, self.max_pixels, self.max_input_pixels)

    def upscale(self, image: ImageT, size: Sequence[int] | None = None, scale: Scale | None = None,
                region: Sequence[int] | None = None, precision: str | None = None,
                progress: bool = False, cancel: Callable[[], bool] | None = None) -> ImageT:
        """Upscale (or resample to any size) ``image``; ``region=(x, y, w, h)`` renders only that
        window of the virtual output, identical to the same crop of the full render. ``cancel`` is
        called before the render and after each stripe; when it returns True, RenderCancelled."""
        p = self.pipeline(precision)
        if isinstance(image, torch.Tensor):
            return p.tensor(image, size, scale, region, progress=progress, cancel=cancel)
        return p.image(image, size, scale, region, progress=progress, cancel=cancel)  # type: ignore[return-value]

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
        return self.pipeline(precision).png(image, path, size, scale, region, progress=progress, cancel=cancel)

    def render_rgb(self, rgb: torch.Tensor, out_hw: tuple[int, int], window: Window, precision: str | None = None,
                   progress: bool = False, cancel: Callable[[], bool] | None = None) -> np.ndarray:
        """(3, h, w) RGB in [0, 1] (or uint8) -> float32 (window.h, window.w, 3) RGB, unclamped."""
        return self.pipeline(precision).render(rgb, out_hw, window, progress=progress, cancel=cancel)

    def describe(self, asked: str) -> str:
        """The ``-v`` line: where and how a render runs (the precision that runs, not only the one asked)."""
        return (f"liif: model {self.spec.method}/{self.spec.encoder}, device {self.device}, "
                f"{compute.cpu_info().describe()}, precision {self.precision} (asked {asked}), method {self.method}, "
                f"backend {self.backend}, quantize {self.quantize}")


__all__ = ["DEFAULT_MAX_INPUT_PIXELS", "DEFAULT_MAX_PIXELS", "METHODS", "RenderCancelled", "Scale", "Upscaler",
           "as_device", "default_device", "load", "output_size"]
