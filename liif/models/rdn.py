"""RDN encoder (Zhang et al. 2018), configs A (20 blocks x 6 convs, growth 32) and B (16 x 8, 64).

Module names follow the official checkpoints (SFENet1/2, RDBs.i.convs.j.conv.0, LFF, GFF).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from liif.models import validate as v

CONFIGS = {"A": (20, 6, 32), "B": (16, 8, 64)}
VARIANTS: dict[str, dict[str, Any]] = {"rdn": {}}  # encoder variants by name: the constructor's defaults


KERNEL_SIZES = (1, 3, 5, 7)
MAX_CONVS = 64  # dense convs per block


def check_args(args: dict[str, Any]) -> None:
    """ValueError for an ``encoder_args`` key :class:`RDN` does not take or a value it cannot build."""
    v.known_keys("RDN encoder_args", args, ("G0", "RDNkSize", "RDNconfig", "no_upsampling", "scale", "n_colors",
                                            "D", "C", "G"))
    checks: dict[str, Callable[[str, Any], object]] = {"G0": lambda n, x: v.integer(n, x, 1, v.MAX_CHANNELS),
              "RDNkSize": lambda n, x: v.choice(n, x, KERNEL_SIZES),
              "RDNconfig": lambda n, x: v.choice(n, x, tuple(CONFIGS)), "no_upsampling": v.boolean,
              "scale": lambda n, x: v.choice(n, x, (2, 3, 4)), "n_colors": lambda n, x: v.choice(n, x, (3,)),
              "D": lambda n, x: v.integer(n, x, 1, v.MAX_BLOCKS), "C": lambda n, x: v.integer(n, x, 1, MAX_CONVS),
              "G": lambda n, x: v.integer(n, x, 1, v.MAX_CHANNELS)}
    for key, value in args.items():
        if value is not None or key not in ("D", "C", "G"):  # None: the config's value
            checks[key](f"encoder_args.{key}", value)
    d, c, _ = CONFIGS[args.get("RDNconfig", "B")]
    blocks, convs = args.get("D") or d, args.get("C") or c
    if blocks * convs > v.MAX_DENSE_CONVS:
        raise ValueError(f"encoder_args D x C is {blocks} x {convs} = {blocks * convs} dense convolutions; "
                         f"at most {v.MAX_DENSE_CONVS}")


class DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int, k: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(cin, growth, k, padding=k // 2), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv(x)], dim=1)


class RDB(nn.Module):
    def __init__(self, g0: int, growth: int, n_convs: int, k: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(*[DenseLayer(g0 + c * growth, growth, k) for c in range(n_convs)])
        self.LFF = nn.Conv2d(g0 + n_convs * growth, g0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.LFF(self.convs(x)) + x


class RDN(nn.Module):
    def __init__(
        self,
        G0: int = 64,
        RDNkSize: int = 3,
        RDNconfig: str = "B",
        no_upsampling: bool = True,
        scale: int = 2,
        n_colors: int = 3,
        D: int | None = None,
        C: int | None = None,
        G: int | None = None,
    ) -> None:
        super().__init__()
        d, c, g = CONFIGS[RDNconfig]
        d, c, g = D or d, C or c, G or g
        k = RDNkSize
        self.SFENet1 = nn.Conv2d(n_colors, G0, k, padding=k // 2)
        self.SFENet2 = nn.Conv2d(G0, G0, k, padding=k // 2)
        self.RDBs = nn.ModuleList([RDB(G0, g, c, k) for _ in range(d)])
        self.GFF = nn.Sequential(nn.Conv2d(d * G0, G0, 1), nn.Conv2d(G0, G0, k, padding=k // 2))
        self.no_upsampling = no_upsampling
        if no_upsampling:
            self.out_dim = G0
        else:
            if scale not in (2, 3, 4):
                raise ValueError(f"RDN upsampler supports scales 2, 3, 4, not {scale}")
            shuffles: list[nn.Module] = []
            for r in ([2, 2] if scale == 4 else [scale]):
                shuffles += [nn.Conv2d(G0 if not shuffles else g, g * r * r, k, padding=k // 2), nn.PixelShuffle(r)]
            self.UPNet = nn.Sequential(*shuffles, nn.Conv2d(g, n_colors, k, padding=k // 2))
            self.out_dim = n_colors
        r = k // 2
        # SFENet1, SFENet2, per RDB c dense convs, GFF's 3x3.
        self.receptive_radius = r * (2 + d * c + 1)
        self._dims = (G0, d, c, g)

    def activation_bytes_per_pixel(self) -> int:
        """Peak float32 activation bytes per input pixel: a dense block's growing concat (twice, as
        torch.cat copies), the D block outputs kept for GFF and their concatenation."""
        g0, d, c, g = self._dims
        return 4 * (2 * (g0 + c * g) + 2 * d * g0 + 3 * g0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f1 = self.SFENet1(x)
        x = self.SFENet2(f1)
        outs = []
        for block in self.RDBs:
            x = block(x)
            outs.append(x)
        x = self.GFF(torch.cat(outs, dim=1)) + f1
        return x if self.no_upsampling else self.UPNet(x)
