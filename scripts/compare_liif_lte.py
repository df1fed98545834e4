"""Decoder families with the same budget: train tiny CPU configs, score them under the paper protocol.

    python scripts/compare_liif_lte.py                  # LIIF, LTE and the ablation (~45 min on 2 AVX2 cores)
    python scripts/compare_liif_lte.py --skip-train     # score runs/cmp-* as they are
    python scripts/compare_liif_lte.py --no-ablation    # only LIIF and LTE (~30 min)
    python scripts/compare_liif_lte.py --arms liif,lte,lmliif --json docs/lmf-tiny.json   # with LM-LIIF

The ablation is the tiny LTE without its bilinear global term (``model.global_term=false``).

``configs/tiny-cpu.yaml``, ``configs/tiny-cpu-lte.yaml`` and ``configs/tiny-cpu-lmliif.yaml`` differ only in the
decoder (same encoder,
data, steps, optimiser, schedule and seed). The script trains them one after the other, so each has
the machine to itself, and records each run's wall time. Then it scores the last checkpoints on
Set5 and Set14 at x2, x3, x4, x6 and x8 under the paper's benchmark protocol in fp32 (Y channel,
shave = scale, MATLAB-bicubic LR files for x2-x4 and PIL bicubic beyond). It prints a Markdown
table and writes the figures as JSON (default ``docs/liif-vs-lte.json``).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from liif import api
from liif.data import eval_sets
from liif.eval import protocols
from liif.fileio import write_text_atomic

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "data" / "golden"  # the official code's and bicubic's PSNR on the same LR files
# arm -> (config, overrides); "lte-noglobal" is the ablation without LTE's bilinear global term
# Equal steps, not equal time (fixed-step mode), one compute thread as in the recorded study (docs/liif-vs-lte.md)
FIXED = ["train.budget_minutes=0", "train.threads=1"]
CONFIGS: dict[str, tuple[str, list[str]]] = {
    "liif": ("configs/tiny-cpu.yaml", FIXED),
    "lte": ("configs/tiny-cpu-lte.yaml", FIXED),
    "lte-noglobal": ("configs/tiny-cpu-lte.yaml", [*FIXED, "model.global_term=false"]),
    "lmliif": ("configs/tiny-cpu-lmliif.yaml", FIXED),
}
LABELS = {"liif": "tiny LIIF", "lte": "tiny LTE", "lte-noglobal": "tiny LTE without its global term",
          "lmliif": "tiny LM-LIIF"}
GAPS = {"lte": "LTE - LIIF", "lmliif": "LM-LIIF - LIIF"}  # columns printed when both arms ran
SETS = ("Set5", "Set14")
SCALES = (2, 3, 4, 6, 8)
SUMMARY = "train-summary.json"  # each run's `liif train` summary plus its wall time, kept beside the run


def train(method: str, out: Path) -> dict[str, Any]:
    """Run ``liif train`` for one method; its JSON summary plus the wall time."""
    start = time.monotonic()
    config, overrides = CONFIGS[method]
    sets = [a for o in overrides for a in ("--set", o)]
    done = subprocess.run([sys.executable, "-m", "liif.cli", "train", config, *sets, "--out", str(out),
                           "--no-progress"], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"compare: training {method} failed: {done.stderr.strip().splitlines()[-1:]}")
    summary: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    summary["wall_s"] = round(time.monotonic() - start, 1)
    write_text_atomic(out / SUMMARY, json.dumps(summary, indent=1) + "\n")
    return summary


def score(weights: Path) -> dict[str, float]:
    """PSNR (dB) per "Set-xS" under the paper benchmark protocol, fp32."""
    up = api.load(str(weights), device="cpu", precision="fp32")
    out = {}
    for name in SETS:
        ds = eval_sets.resolve(name.lower())  # under the data root: `liif data fetch set5` / `set14`
        scores = protocols.evaluate(up, ds, SCALES, protocols.protocol("benchmark"))
        for s in protocols.summarize(scores):
            out[f"{name}-x{s.scale}"] = round(s.psnr, 4)
    return out


def table(psnr: dict[str, dict[str, float]], bicubic: dict[str, float], arms: list[str]) -> str:
    gaps = [a for a in GAPS if a in arms and "liif" in arms]
    head = ["set", "scale", "bicubic", *(LABELS[a] for a in arms), *(GAPS[a] for a in gaps)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key in psnr[arms[0]]:
        name, scale = key.split("-x")
        bic = f"{bicubic[key]:.2f}" if key in bicubic else "-"
        cells = [f"{psnr[a][key]:.2f}" for a in arms] + [f"{psnr[a][key] - psnr['liif'][key]:+.2f}" for a in gaps]
        lines.append(f"| {name} | x{scale} | {bic} | {' | '.join(cells)} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default="runs", help="where the runs go (runs/cmp-liif, runs/cmp-lte, ...)")
    p.add_argument("--skip-train", action="store_true", help="score existing runs only")
    p.add_argument("--no-ablation", action="store_true", help="leave out the LTE run without its global term")
    p.add_argument("--arms", default="liif,lte,lte-noglobal", help=f"runs, in order, of: {', '.join(CONFIGS)}")
    p.add_argument("--json", default="docs/liif-vs-lte.json", help="where to write the figures")
    args = p.parse_args()
    arms = [a.strip() for a in args.arms.split(",") if not (args.no_ablation and a.strip() == "lte-noglobal")]
    unknown = [a for a in arms if a not in CONFIGS]
    if unknown or not arms:
        sys.exit(f"compare: unknown run {unknown[0] if unknown else '(none)'!r}; runs: {', '.join(CONFIGS)}")
    runs = {m: ROOT / args.runs / f"cmp-{m}" for m in arms}
    report: dict[str, Any] = {"configs": {a: CONFIGS[a] for a in arms}, "protocol": "benchmark (paper), fp32",
                              "training": {},
                              "psnr": {}}
    for method, out in runs.items():
        if not args.skip_train:
            print(f"trained {method}: {train(method, out)}", flush=True)
        if (out / SUMMARY).is_file():
            report["training"][method] = json.loads((out / SUMMARY).read_text())
    for method, out in runs.items():
        report["psnr"][method] = score(out / "checkpoints" / "last" / "model.safetensors")
    bicubic = json.loads((GOLDEN / "reference-metrics.json").read_text())
    report["psnr"]["bicubic"] = bicubic["bicubic_pil_upsampling_of_the_LR_files"]
    print(table(report["psnr"], report["psnr"]["bicubic"], arms))
    write_text_atomic(ROOT / args.json, json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
