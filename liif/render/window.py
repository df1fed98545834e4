"""A pixel window of a virtual output image: what a render (or a region request) produces."""
from __future__ import annotations

from dataclasses import dataclass

from liif.errors import LiifError


@dataclass(frozen=True)
class Window:
    """Pixel window (top, left, height, width) of a virtual output image."""

    y: int
    x: int
    h: int
    w: int

    @classmethod
    def full(cls, out_hw: tuple[int, int]) -> Window:
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
