"""EDSR encoder (Lim et al. 2017). ``EDSR.baseline()`` is the 16-block, 64-feature LIIF encoder.

Module names follow the official checkpoints (head / body / tail, MeanShift convs kept in the
state dict even though LIIF never applies them) so official weights load with a strict match.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from liif.models import validate as v

DIV2K_MEAN = (0.4488, 0.4371, 0.4040)
# Encoder variants by name: their constructor defaults (the official edsr-baseline and edsr specs).
VARIANTS: dict[str, dict[str, Any]] = {
    "edsr-baseline": {"n_resblocks": 16, "n_feats": 64, "res_scale": 1.0},
    "edsr": {"n_resblocks": 32, "n_feats": 256, "res_scale": 0.1},
}


UPSAMPLER_SCALES = (1, 2, 3, 4, 8, 16)


def check_args(args: dict[str, Any]) -> None:
    """ValueError for an ``encoder_args`` key :class:`EDSR` does not take or a value it cannot build."""
    v.known_keys("EDSR encoder_args", args, ("n_resblocks", "n_feats", "res_scale", "scale", "no_upsampling",
                                             "rgb_range", "n_colors"))
    checks: dict[str, Callable[[str, Any], object]] = {"n_resblocks": lambda n, x: v.integer(n, x, 0, v.MAX_BLOCKS),
              "n_feats": lambda n, x: v.integer(n, x, 1, v.MAX_CHANNELS),
              "res_scale": v.number, "scale": lambda n, x: v.choice(n, x, UPSAMPLER_SCALES),
              "no_upsampling": v.boolean, "rgb_range": lambda n, x: v.number(n, x, 1e-6),
              "n_colors": lambda n, x: v.choice(n, x, (3,))}
    for key, value in args.items():
        checks[key](f"encoder_args.{key}", value)


def conv(cin: int, cout: int, k: int = 3) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=k // 2, bias=True)


class MeanShift(nn.Conv2d):
    """Fixed 1x1 conv adding sign * rgb_range * mean. Unused in LIIF's forward; kept for key parity."""

    def __init__(self, rgb_range: float, sign: int, mean: tuple[float, ...] = DIV2K_MEAN) -> None:
        super().__init__(3, 3, kernel_size=1)
        with torch.no_grad():
            # the identity from a list: torch.eye on the meta device (liif.models.spec.shapes) would
            # import torch's Python decompositions, 80 MB and seconds for every checkpoint load
            self.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]).view(3, 3, 1, 1))
            assert self.bias is not None  # Conv2d(bias=True), the default
            self.bias.copy_(torch.tensor(mean).mul_(sign * rgb_range))  # (not __rmul__: see above)
        for p in self.parameters():
            p.requires_grad = False


class ResBlock(nn.Module):
    def __init__(self, n_feats: int, res_scale: float) -> None:
        super().__init__()
        self.body = nn.Sequential(conv(n_feats, n_feats), nn.ReLU(inplace=True), conv(n_feats, n_feats))
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) * self.res_scale + x


class Upsampler(nn.Sequential):
    """Sub-pixel upsampler for scale 2^n or 3 (only built when no_upsampling is False)."""

    def __init__(self, scale: int, n_feats: int) -> None:
        layers: list[nn.Module] = []
        if scale & (scale - 1) == 0:
            for _ in range(int(math.log2(scale))):
                layers += [conv(n_feats, 4 * n_feats), nn.PixelShuffle(2)]
        elif scale == 3:
            layers += [conv(n_feats, 9 * n_feats), nn.PixelShuffle(3)]
        else:
            raise ValueError(f"EDSR upsampler supports scales 2^n and 3, not {scale}")
        super().__init__(*layers)


class EDSR(nn.Module):
    def __init__(
        self,
        n_resblocks: int = 16,
        n_feats: int = 64,
        res_scale: float = 1.0,
        scale: int = 2,
        no_upsampling: bool = True,
        rgb_range: float = 1.0,
        n_colors: int = 3,
    ) -> None:
        super().__init__()
        self.sub_mean = MeanShift(rgb_range, -1)
        self.add_mean = MeanShift(rgb_range, +1)
        self.n_feats = n_feats
        self.head = nn.Sequential(conv(n_colors, n_feats))
        self.body = nn.Sequential(*[ResBlock(n_feats, res_scale) for _ in range(n_resblocks)], conv(n_feats, n_feats))
        self.no_upsampling = no_upsampling
        if no_upsampling:
            self.out_dim = n_feats
        else:
            self.tail = nn.Sequential(Upsampler(scale, n_feats), conv(n_feats, n_colors))
            self.out_dim = n_colors
        # Receptive radius in LR pixels: head + 2 per block + body's last conv (each 3x3 adds 1).
        self.receptive_radius = 1 + 2 * n_resblocks + 1

    def activation_bytes_per_pixel(self) -> int:
        """Peak float32 activation bytes per input pixel at inference (head, running, block temps)."""
        return 4 * 6 * self.out_dim if self.no_upsampling else 4 * 6 * self.n_feats * 16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(x)
        x = self.body(x) + x
        return x if self.no_upsampling else self.tail(x)

    @classmethod
    def baseline(cls, **kw: object) -> EDSR:
        return cls(n_resblocks=16, n_feats=64, res_scale=1.0, **kw)  # type: ignore[arg-type]

    @classmethod
    def full(cls, **kw: object) -> EDSR:
        return cls(n_resblocks=32, n_feats=256, res_scale=0.1, **kw)  # type: ignore[arg-type]
