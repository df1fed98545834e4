"""Rendering a model (any decoder family) on an output grid, whole or a window of it.

``render(model, img, out_hw, window)`` returns the decoder's raw (normalised) prediction;
``model.denormalize`` maps it to RGB. Two routes compute the same function:

- ``reference`` (``reference.py``): the official op structure, the yardstick;
- ``fast`` (``tiled.py``, default): maps once per LR pixel, gathers per query, memory-bounded tiles
  (``plan.py``), the compute in a backend (``backend.py``: PyTorch; ``liif.export.onnx``: ONNX
  Runtime), with kernel helpers in ``kernels.py``. A render is planned once (``plan_render``) for
  the settings of :class:`liif.compute.Compute` and run tile by tile (``render_planned``).
"""
from liif.render.backend import TorchBackend
from liif.render.kernels import fused_linear_available
from liif.render.plan import (
                              BLOCK_QUERIES,
                              STRIPE_BYTES_PER_PIXEL,
                              STRIPE_PIXELS,
                              plan_axis,
                              plan_tiles,
                              stripe_pixels,
                              window_region,
                              working_set,
)
from liif.render.reference import REFERENCE_CHUNK, render_reference
from liif.render.tiled import Backend, RenderPlan, plan_render, render, render_planned, render_tiles
from liif.render.window import Window

__all__ = ["BLOCK_QUERIES", "REFERENCE_CHUNK", "STRIPE_BYTES_PER_PIXEL", "STRIPE_PIXELS", "Backend", "RenderPlan",
           "TorchBackend", "Window", "fused_linear_available", "plan_axis", "plan_render", "plan_tiles", "render",
           "render_planned", "render_reference", "render_tiles", "stripe_pixels", "window_region", "working_set"]
