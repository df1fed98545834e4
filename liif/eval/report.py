"""Writing evaluation results: per-image CSV, summary Markdown + JSON, the reproduction report and
its PSNR-vs-scale plot (drawn with Pillow, so no plotting dependency is needed)."""
from __future__ import annotations

import csv
import io
import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from liif.eval import published
from liif.eval.protocols import PROTOCOLS, ImageScore, Summary
from liif.fileio import atomic_path, write_text_atomic


def _num(x: float, digits: int = 4) -> float | None:
    return round(x, digits) if math.isfinite(x) else None


def _fmt(x: float | None, digits: int = 4) -> str:
    if x is None:
        return "-"
    return "inf" if math.isinf(x) else f"{x:.{digits}f}"


def write_csv(scores: Sequence[ImageScore], path: Path) -> Path:
    buf = io.StringIO()
    fields = ["dataset", "scale", "protocol", "image", "lr_source", "height", "width", "psnr", "ssim"]
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for s in scores:
        row = asdict(s)
        row["psnr"], row["ssim"] = _fmt(s.psnr, 6), _fmt(s.ssim, 6)
        w.writerow(row)
    return write_text_atomic(path, buf.getvalue())


def dataset_key(name: str) -> str | None:
    from liif.data.eval_sets import known_key

    return known_key(name)


def records(summaries: Sequence[Summary], backbone: str | None = None, method: str = "liif") -> list[dict]:
    """JSON records {dataset, scale, protocol, psnr, ssim, n_images, lr_source, published: [...]}: every
    published number of the same protocol (LIIF and LTE side by side), flagged when it is the same
    model (backbone and method) as ours."""
    out = []
    for s in summaries:
        pubs = published.lookup(dataset_key(s.dataset), s.scale, s.protocol)
        out.append({
            "dataset": s.dataset, "scale": s.scale, "protocol": s.protocol,
            "psnr": _num(s.psnr), "ssim": _num(s.ssim), "n_images": s.n_images, "lr_source": s.lr_source,
            "published": [{"source": p.source, "model": p.model, "same_backbone": p.backbone == backbone,
                           "same_model": p.backbone == backbone and p.method == method,
                           "psnr": p.psnr, "ssim": p.ssim, "psnr_diff": _num(s.psnr - p.psnr)} for p in pubs],
        })
    return out


def write_json(obj: object, path: Path) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=1) + "\n")


def summary_markdown(summaries: Sequence[Summary], backbone: str | None = None, method: str = "liif") -> str:
    """A Markdown table: our mean PSNR/SSIM and the published numbers with the difference."""
    lines = ["| dataset | scale | protocol | LR | images | PSNR (dB) | SSIM | published PSNR (source) "
             "| ours - published |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in records(summaries, backbone, method):
        pubs = r["published"]
        pub = "<br>".join(f"{p['psnr']:g} ({p['model']}, {p['source']})" for p in pubs) or "-"
        diff = "<br>".join(f"{p['psnr_diff']:+.2f}" if p["psnr_diff"] is not None else "-" for p in pubs) or "-"
        lines.append(f"| {r['dataset']} | x{r['scale']} | {r['protocol']} | {r['lr_source']} | {r['n_images']} | "
                     f"{_fmt(r['psnr'])} | {_fmt(r['ssim'])} | {pub} | {diff} |")
    return "\n".join(lines) + "\n"


def write_results(scores: Sequence[ImageScore], summaries: Sequence[Summary], out_dir: Path, stem: str,
                  backbone: str | None = None, method: str = "liif") -> list[Path]:
    """``<stem>-per-image.csv``, ``<stem>-summary.md`` and ``<stem>-summary.json`` in ``out_dir``."""
    return [write_csv(scores, out_dir / f"{stem}-per-image.csv"),
            write_text_atomic(out_dir / f"{stem}-summary.md", summary_markdown(summaries, backbone, method)),
            write_json(records(summaries, backbone, method), out_dir / f"{stem}-summary.json")]


# -- the plot ----------------------------------------------------------------------------------

COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (23, 190, 207)]


def plot_psnr_vs_scale(series: Sequence[tuple[str, tuple[int, int, int], bool, dict[int, float]]],
                       path: Path, title: str, size: tuple[int, int] = (900, 560)) -> Path:
    """Line plot PSNR (dB) over scale (log axis). ``series`` = (label, colour, dashed, {scale: psnr})."""
    W, H = size
    left, right, top, bottom = 70, 230, 40, 50
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=13)
    pts = [(s, v) for *_, data in series for s, v in data.items() if math.isfinite(v)]
    if not pts:
        raise ValueError("nothing to plot")
    scales = sorted({s for s, _ in pts})
    x0, x1 = math.log(min(scales)), math.log(max(scales))
    if x1 - x0 < 1e-9:
        x0, x1 = x0 - 0.5, x1 + 0.5
    lo, hi = math.floor(min(v for _, v in pts)) - 1, math.ceil(max(v for _, v in pts)) + 1
    step = 1 if hi - lo <= 12 else 2

    def xy(s: float, v: float) -> tuple[float, float]:
        x = left + (math.log(s) - x0) / (x1 - x0) * (W - left - right)
        y = top + (hi - v) / (hi - lo) * (H - top - bottom)
        return x, y

    d.rectangle([left, top, W - right, H - bottom], outline="black")
    for v in range(lo, hi + 1, step):
        _, y = xy(scales[0], v)
        d.line([left, y, W - right, y], fill=(225, 225, 225))
        d.text((left - 8, y), f"{v}", fill="black", font=font, anchor="rm")
    for s in scales:
        x, _ = xy(s, lo)
        d.line([x, top, x, H - bottom], fill=(235, 235, 235))
        d.text((x, H - bottom + 6), f"x{s}", fill="black", font=font, anchor="ma")
    d.text(((left + W - right) / 2, 12), title, fill="black", font=font, anchor="ma")
    d.text(((left + W - right) / 2, H - 8), "scale (log axis)", fill="black", font=font, anchor="ms")
    d.text((12, top - 20), "PSNR (dB)", fill="black", font=font, anchor="ls")
    for i, (label, colour, dashed, data) in enumerate(series):
        line = [xy(s, v) for s, v in sorted(data.items()) if math.isfinite(v)]
        for a, b in itertools.pairwise(line):
            _segment(d, a, b, colour, dashed)
        for x, y in line:
            d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour if not dashed else "white", outline=colour)
        ly = top + 10 + 20 * i
        _segment(d, (W - right + 12, ly), (W - right + 42, ly), colour, dashed)
        d.text((W - right + 48, ly), label, fill="black", font=font, anchor="lm")
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return path


def _segment(d: ImageDraw.ImageDraw, a: tuple[float, float], b: tuple[float, float],
             colour: tuple[int, int, int], dashed: bool) -> None:
    if not dashed:
        d.line([a, b], fill=colour, width=2)
        return
    length = math.dist(a, b)
    n = max(1, int(length // 8))
    for k in range(0, n, 2):
        t0, t1 = k / n, min(1.0, (k + 1) / n)
        d.line([(a[0] + (b[0] - a[0]) * t0, a[1] + (b[1] - a[1]) * t0),
                (a[0] + (b[0] - a[0]) * t1, a[1] + (b[1] - a[1]) * t1)], fill=colour, width=2)


# -- the reproduction report -----------------------------------------------------------------------

def report_markdown(summaries: Sequence[Summary], weights: str, backbone: str, plot_name: str,
                    command: str, method: str = "liif") -> str:
    """The reproduction report: how it was measured, ours vs the paper per dataset, the plot."""
    prots = sorted({s.protocol for s in summaries})
    name = method.upper()
    out = [f"# {name} reproduction report: `{weights}`", "",
           f"Method: `{method}`. Backbone: `{backbone}`. Command: `{command}`", "",
           "Protocols used (see docs/evaluation.md):"]
    out += [f"- `{p}`: {PROTOCOLS[p].summary}" for p in prots]
    out += ["- every number is the mean of per-image values; batch 1, the fast renderer, "
            "prediction clamped to [0, 1].", "",
            f"![PSNR vs scale]({plot_name})", "",
            f"Solid: these weights. Dashed: the {name} paper's numbers (same backbone where the paper "
            f"lists it; the papers' benchmark tables have RDN only). The tables list every published "
            f"number of the same protocol, LIIF's and LTE's side by side.", ""]
    for ds in dict.fromkeys(s.dataset for s in summaries):
        rows = [s for s in summaries if s.dataset == ds]
        out += [f"## {ds}", "", summary_markdown(rows, backbone, method)]
    return "\n".join(out)


def report_series(summaries: Sequence[Summary], backbone: str,
                  method: str = "liif") -> list[tuple[str, tuple[int, int, int], bool, dict[int, float]]]:
    series = []
    for i, name in enumerate(dict.fromkeys(s.dataset for s in summaries)):
        rows = [s for s in summaries if s.dataset == name]
        colour = COLOURS[i % len(COLOURS)]
        series.append((f"{name} (ours)", colour, False, {s.scale: s.psnr for s in rows}))
        key, prot = dataset_key(name), rows[0].protocol
        if key is None:
            continue
        paper = published.paper_curve(key, prot, backbone, method)
        label = f"{name} paper"
        if not paper:
            paper = published.paper_curve(key, prot, "rdn", method)
            label = f"{name} paper RDN-{method.upper()}"
        if paper:
            series.append((label, colour, True, paper))
    return series
