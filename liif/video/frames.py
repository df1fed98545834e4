"""Frames through the request pipeline: one :class:`liif.pipeline.Pipeline` (its compute backend
built once) for all frames of a video, the plan made once per frame size."""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from liif.pipeline import Scale
from liif.render import Window

if TYPE_CHECKING:
    from liif.api import Upscaler


class FrameUpscaler:
    """Upscale frames of one video: the pipeline (and its compute backend) is built once, the output
    size and render plan once per input frame size. Frames are arrays as ``Upscaler.upscale`` takes
    them (uint8 or uint16 (H, W, 3), ...); each result equals ``up.upscale(frame, size=..., scale=...)``."""

    def __init__(self, up: Upscaler, size: Sequence[int] | None = None, scale: Scale | None = None,
                 precision: str | None = None) -> None:
        self.pipeline = up.pipeline(precision)  # once per video
        self.size, self.scale = size, scale

    def plan(self, in_hw: tuple[int, int]) -> tuple[tuple[int, int], Window]:
        """The output size and window of frames of this size (the pixel limits checked once)."""
        return self.pipeline.plan_cached(in_hw, self.size, self.scale)

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        return self.pipeline.frame(frame, self.size, self.scale)


def upscale_frames(up: Upscaler, frames: Iterable[np.ndarray], size: Sequence[int] | None = None,
                   scale: Scale | None = None, precision: str | None = None) -> Iterator[np.ndarray]:
    """Lazily upscale an iterable of frames: one frame is taken, rendered and yielded at a time."""
    fu = FrameUpscaler(up, size, scale, precision)
    for frame in frames:
        yield fu(frame)
