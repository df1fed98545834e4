"""The embedded default job: a generated test card, LIIF at several scales, and a bicubic-vs-LIIF sheet.

The test card is drawn here (so its licence is this project's): a high-resolution pattern of
rings, a zone plate, text, stripes and a gradient, reduced with Pillow's bicubic filter to a
small "low-resolution" input, which is what LIIF was trained to invert.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from liif import imaging
from liif.api import Upscaler

SCALES = (2.0, 3.5, 8.0)


def test_card(size: int = 96, oversample: int = 4) -> Image.Image:
    """A deterministic RGB test card of ``size`` x ``size`` pixels."""
    big = size * oversample
    yy, xx = np.mgrid[0:big, 0:big].astype(np.float32) / big
    r2 = (xx - 0.72) ** 2 + (yy - 0.28) ** 2
    zone = 0.5 + 0.5 * np.cos(2 * np.pi * 150 * r2)  # chirp: frequency rises with radius
    img = np.stack([0.25 + 0.6 * xx, 0.3 + 0.5 * yy, 0.75 - 0.5 * xx], -1)
    mask = r2 < 0.06
    img[mask] = zone[mask][:, None] * np.array([0.95, 0.9, 0.3], dtype=np.float32)
    im = Image.fromarray((img * 255).astype(np.uint8))
    d = ImageDraw.Draw(im)
    for i in range(8):  # stripes of decreasing pitch
        x0 = int(big * (0.05 + i * 0.055))
        d.rectangle([x0, int(big * 0.62), x0 + max(1, oversample * (8 - i) // 2), int(big * 0.95)], fill=(20, 20, 20))
    for k in range(5):  # concentric rings
        r = oversample * (4 + 5 * k)
        c = (int(big * 0.28), int(big * 0.3))
        d.ellipse([c[0] - r, c[1] - r, c[0] + r, c[1] + r], outline=(200, 30, 30), width=oversample)
    font = ImageFont.load_default(size=oversample * 11)
    d.text((int(big * 0.52), int(big * 0.66)), "LIIF", fill=(255, 255, 255), font=font, stroke_width=oversample // 2,
           stroke_fill=(0, 0, 0))
    return im.resize((size, size), Image.Resampling.BICUBIC)


def comparison(lr: Image.Image, liif_img: Image.Image, label_scale: float) -> Image.Image:
    """Side by side: bicubic (left) and LIIF (right) at the same size, with captions."""
    bic = lr.resize(liif_img.size, Image.Resampling.BICUBIC)
    w, h = liif_img.size
    pad = 24
    sheet = Image.new("RGB", (2 * w + 3 * 8, h + pad + 8), (255, 255, 255))
    sheet.paste(bic, (8, pad))
    sheet.paste(liif_img.convert("RGB"), (w + 16, pad))
    d = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=16)
    d.text((8, 4), f"bicubic x{label_scale:g}", fill=(0, 0, 0), font=font)
    d.text((w + 16, 4), f"LIIF x{label_scale:g}", fill=(0, 0, 0), font=font)
    return sheet


def run(up: Upscaler, out_dir: Path, image: Image.Image | None = None,
        say: Callable[[str], None] | None = None) -> list[Path]:
    """Write the input, one LIIF render per scale and the comparison sheet into ``out_dir``;
    ``say`` gets a line before each step (the CLI prints them: a render takes a while on a CPU)."""
    tell = say if say is not None else (lambda _: None)
    out_dir.mkdir(parents=True, exist_ok=True)
    lr = image if image is not None else test_card()
    tell(f"demo: writing the {lr.width}x{lr.height} test card to {out_dir / 'input.png'}")
    written = [imaging.save_png(lr, out_dir / "input.png")]
    results = {}
    for i, s in enumerate(SCALES, 1):
        tell(f"demo: rendering x{s:g} ({round(lr.width * s)}x{round(lr.height * s)}, {i} of {len(SCALES)})...")
        res = up.upscale(lr, scale=s)
        assert isinstance(res, Image.Image)
        results[s] = res
        written.append(imaging.save_png(res, out_dir / f"liif_x{s:g}.png"))
    tell(f"demo: writing the bicubic vs LIIF sheet at x{SCALES[-1]:g}")
    compare = comparison(lr, results[SCALES[-1]], SCALES[-1])
    written.append(imaging.save_png(compare, out_dir / "compare_bicubic_vs_liif.png"))
    return written
