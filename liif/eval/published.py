"""Published numbers to compare with, as data (sources: ``docs/liif-spec.md`` section 9 for the
LIIF paper, ``docs/lte-spec.md`` for the LTE paper, ``docs/mmagic.md`` section 4 for OpenMMLab,
section 1 for the vendor card).

``protocol`` names the protocol under which the number was measured (see protocols.py), so a
number is only ever shown beside ours when both were measured the same way.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Published:
    source: str
    model: str
    backbone: str  # encoder name as in ModelSpec ("edsr-baseline", "rdn") or "bicubic"
    dataset: str  # registry key
    scale: int
    protocol: str
    psnr: float
    ssim: float | None = None
    method: str = "liif"  # decoder family as in ModelSpec ("liif", "lte") or "bicubic"


PAPER = "LIIF paper (CVPR 2021)"
LTE_PAPER = "LTE paper (CVPR 2022)"
OPENMMLAB = "OpenMMLab mmediting 0.x"
SEED_CARD = "vendor model card (seed)"

_Key = tuple[str, str]  # (model name, backbone)
_Row = tuple[float, ...]  # one PSNR per scale

_DIV2K_SCALES = (2, 3, 4, 6, 12, 18, 24, 30)
_DIV2K_ROWS: dict[_Key, _Row] = {  # Table 1, DIV2K validation, RGB, shave = scale + 6
    ("Bicubic", "bicubic"): (31.01, 28.22, 26.66, 24.82, 22.27, 21.00, 20.19, 19.59),
    ("EDSR-baseline-LIIF", "edsr-baseline"): (34.67, 30.96, 29.00, 26.75, 23.71, 22.17, 21.18, 20.48),
    ("RDN-LIIF", "rdn"): (34.99, 31.26, 29.27, 26.99, 23.89, 22.34, 21.31, 20.59),
}
# LTE paper, DIV2K validation, RGB, shave = scale + 6 (same protocol as LIIF's Table 1)
_DIV2K_LTE: dict[_Key, _Row] = {
    ("EDSR-baseline-LTE", "edsr-baseline"): (34.72, 31.02, 29.04, 26.81, 23.78, 22.23, 21.24, 20.53),
}
_BENCH_SCALES = (2, 3, 4, 6, 8)
_BENCH_LTE_SCALES = (2, 3, 4)
_BENCH_RDN_LTE: dict[str, _Row] = {  # LTE paper, RDN-LTE, Y channel, shave = scale
    "set5": (38.23, 34.72, 32.61),
    "set14": (34.09, 30.58, 28.88),
    "b100": (32.36, 29.30, 27.77),
    "urban100": (33.04, 28.97, 26.81),
}
_BENCH_RDN_LIIF: dict[str, _Row] = {  # Table 2, RDN-LIIF, Y channel, shave = scale
    "set5": (38.17, 34.68, 32.50, 29.15, 27.14),
    "set14": (33.97, 30.53, 28.80, 26.64, 25.15),
    "b100": (32.32, 29.26, 27.74, 25.98, 24.91),
    "urban100": (32.87, 28.82, 26.68, 24.20, 22.79),
}
_MM_SCALES = (2, 3, 4, 6, 18, 30)
# OpenMMLab README / metafile: (PSNR, SSIM), RGB, crop = scale, PIL LR, uint8 output
_MM: dict[_Key, dict[str, tuple[tuple[float, float], ...]]] = {
    ("LIIF-EDSR (OpenMMLab)", "edsr-baseline"): {
        "set5": ((35.7131, .9366), (32.3805, .8915), (30.2748, .8509), (27.1187, .7774), (20.8516, .5406),
                 (18.8467, .5010)),
        "set14": ((31.5579, .8889), (28.4605, .8039), (26.8415, .7381), (24.7461, .6444), (20.0096, .4525),
                  (18.1321, .3963)),
        "div2k": ((34.6647, .9355), (30.9808, .8724), (29.0245, .8187), (26.7770, .7425), (22.1987, .5955),
                  (20.5050, .5577)),
    },
    ("LIIF-RDN (OpenMMLab)", "rdn"): {
        "set5": ((35.7874, .9366), (32.4992, .8923), (30.3835, .8513), (27.1914, .7751), (20.8913, .5329),
                 (18.9354, .4864)),
        "set14": ((31.6866, .8896), (28.4905, .8037), (26.8734, .7373), (24.7824, .6434), (20.1077, .4537),
                  (18.1448, .3942)),
        "div2k": ((34.7548, .9356), (31.0744, .8731), (29.1101, .8197), (26.8693, .7437), (22.2972, .5950),
                  (20.5663, .5560)),
    },
}


def _table() -> list[Published]:
    rows: list[Published] = []
    for (model, backbone), vals in _DIV2K_ROWS.items():
        method = "bicubic" if backbone == "bicubic" else "liif"
        rows += [Published(PAPER, model, backbone, "div2k", s, "div2k", v, method=method)
                 for s, v in zip(_DIV2K_SCALES, vals, strict=True)]
    for (model, backbone), vals in _DIV2K_LTE.items():
        rows += [Published(LTE_PAPER, model, backbone, "div2k", s, "div2k", v, method="lte")
                 for s, v in zip(_DIV2K_SCALES, vals, strict=True)]
    for ds, vals in _BENCH_RDN_LIIF.items():
        rows += [Published(PAPER, "RDN-LIIF", "rdn", ds, s, "benchmark", v)
                 for s, v in zip(_BENCH_SCALES, vals, strict=True)]
    for ds, vals in _BENCH_RDN_LTE.items():
        rows += [Published(LTE_PAPER, "RDN-LTE", "rdn", ds, s, "benchmark", v, method="lte")
                 for s, v in zip(_BENCH_LTE_SCALES, vals, strict=True)]
    for (model, backbone), sets in _MM.items():
        for ds, pairs in sets.items():
            rows += [Published(OPENMMLAB, model, backbone, ds, s, "mmagic", p, q)
                     for s, (p, q) in zip(_MM_SCALES, pairs, strict=True)]
    rows.append(Published(SEED_CARD, "LIIF-EDSR (vendor, 8 GPUs)", "edsr-baseline", "set14", 4, "mmagic", 26.87))
    return rows


TABLE: list[Published] = _table()


def lookup(dataset: str | None, scale: int, protocol: str) -> list[Published]:
    """Published numbers for this dataset key, scale and protocol (all backbones)."""
    if dataset is None:
        return []
    return [p for p in TABLE if p.dataset == dataset and p.scale == scale and p.protocol == protocol]


def paper_curve(dataset: str, protocol: str, backbone: str, method: str = "liif") -> dict[int, float]:
    """scale -> PSNR of the method's own paper row for this backbone (empty when that paper has none)."""
    source = LTE_PAPER if method == "lte" else PAPER
    return {p.scale: p.psnr for p in TABLE if p.source == source and p.method == method
            and p.dataset == dataset and p.protocol == protocol and p.backbone == backbone}
