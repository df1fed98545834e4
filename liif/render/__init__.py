"""Rendering a model (any decoder family) on an output grid, whole or a window of it.

``render(model, img, out_hw, window)`` returns the decoder's raw (normalised) prediction;
``model.denormalize`` maps it to RGB. Two routes compute the same function:

- ``reference`` (``reference.py``): the official op structure, the yardstick;
- ``fast`` (``tiled.py``, default): maps once per LR pixel, gathers per query, memory-bounded tiles
  (``plan.py``), the compute in a backend (``backend.py``: PyTorch; ``liif.export.onnx``: ONNX
  Runtime), with platform helpers in ``platform.py``.
"""
from liif.render.backend import TorchBackend
from liif.render.plan import (
                              BLOCK_QUERIES,
                              DEFAULT_MAX_MEMORY,
                              STRIPE_BYTES_PER_PIXEL,
                              STRIPE_PIXELS,
                              default_budget,
                              plan_axis,
                              plan_tiles,
                              stripe_pixels,
                              window_region,
                              working_set,
)
from liif.render.platform import fp32_math, fp32_modes, fused_linear_available, set_fp32_modes
from liif.render.reference import REFERENCE_CHUNK, render_reference
from liif.render.tiled import Backend, band_rows, render, render_tiles
from liif.render.window import Window

__all__ = ["BLOCK_QUERIES", "DEFAULT_MAX_MEMORY", "REFERENCE_CHUNK", "STRIPE_BYTES_PER_PIXEL", "STRIPE_PIXELS",
           "Backend", "TorchBackend", "Window", "band_rows", "default_budget", "fp32_math", "fp32_modes",
           "fused_linear_available", "plan_axis", "plan_tiles", "render", "render_reference", "render_tiles",
           "set_fp32_modes", "stripe_pixels", "window_region", "working_set"]
