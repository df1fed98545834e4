"""CUDA correctness figures for docs/gpu-results.json (run by scripts/gpu-check.sh on a GPU machine).

1. Golden parity on CUDA: the reference route and the fast route in fp32 (TF32 off) against the
   official outputs in tests/data/golden (max abs diff; the promise is <= 1e-5).
2. Set14 x4, paper protocol: PSNR of the fast route in fp32 / TF32 / bf16 / fp16 and each one's
   loss against fp32 (the promise for bf16/fp16 is <= 0.02 dB).
3. Region == crop of the full render on CUDA, fp32: through the API (raw floats, <= 1e-5) and
   through the viewer's HTTP API (PNG pixels) when FastAPI is importable.

Usage: python scripts/gpu_check.py OUT.json
"""
from __future__ import annotations

import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests" / "data"  # goldens of the official code, Set5, Set14
DEVICE = os.environ.get("LIIF_CHECK_DEVICE", "cuda")  # cpu: a dry run of the script itself


def load_rgb(path: Path) -> torch.Tensor:
    return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1).float() / 255


def golden_parity(model: torch.nn.Module) -> dict[str, float]:
    from liif.render import render

    cases = json.loads((TESTS / "golden" / "index.json").read_text())["cases"]
    worst = {"reference": 0.0, "fast_fp32": 0.0}
    for c in cases:
        img = load_rgb(TESTS / "golden" / c["input"]).to(DEVICE)
        gold = torch.from_numpy(np.load(TESTS / "golden" / c["npy"]))
        for key, method in (("reference", "reference"), ("fast_fp32", "fast")):
            out = render(model, img, tuple(c["out_hw"]), method=method).permute(1, 2, 0).cpu()
            worst[key] = max(worst[key], float((out - gold).abs().max()))
    worst["cases"] = len(cases)
    return worst


def set14_psnr(path: Path, precs: list[str]) -> dict[str, dict[str, float]]:
    import liif
    from liif.data import eval_sets
    from liif.eval import protocols

    ds = eval_sets.resolve(str(TESTS / "Set14"))
    prot = protocols.protocol("benchmark")
    res: dict[str, dict[str, float]] = {}
    for p in precs:
        up = liif.load(path, device=DEVICE, precision=p)
        t0 = time.perf_counter()
        scores = protocols.evaluate(up, ds, [4], prot)
        res[p] = {"psnr": protocols.summarize(scores)[0].psnr, "seconds": time.perf_counter() - t0}
    for p in precs:
        res[p]["loss_vs_fp32_db"] = res["fp32"]["psnr"] - res[p]["psnr"]
    return res


def regions(path: Path) -> dict[str, float | bool | str]:
    import liif
    from liif.render import Window

    up = liif.load(path, device=DEVICE, precision="fp32")
    lr = load_rgb(TESTS / "Set14" / "LR_bicubic" / "X4" / sorted(
        (TESTS / "Set14" / "LR_bicubic" / "X4").iterdir())[0].name).to(DEVICE)
    out_hw = (lr.shape[1] * 7 + 3, lr.shape[2] * 5 + 1)  # non-integer, anisotropic
    full = up.render_rgb(lr, out_hw, Window.full(out_hw), "fp32")
    win = Window(out_hw[0] - 97, 13, 97, out_hw[1] - 13)  # touches the bottom and right borders
    part = up.render_rgb(lr, out_hw, win, "fp32")
    res: dict[str, float | bool | str] = {
        "api_region_vs_full_max_abs_diff": float(np.abs(part - full[win.y:, win.x:]).max())}
    try:
        from fastapi.testclient import TestClient

        from liif.serve.app import create_app
    except ImportError as e:
        res["viewer"] = f"skipped: {e}"
        return res
    folder = Path("/tmp/gpu-check-imgs")
    folder.mkdir(exist_ok=True)
    src = TESTS / "Set5" / "LR_bicubic" / "X4" / "img_002.png"
    (folder / "b.png").write_bytes(src.read_bytes())
    W, H = 173, 161
    with TestClient(create_app(up, folder), base_url="http://localhost") as client:
        def get(x: int, y: int, w: int, h: int) -> np.ndarray:
            r = client.get("/api/render", params={"image": "f:b.png", "W": W, "H": H, "x": x, "y": y, "w": w, "h": h})
            assert r.status_code == 200, r.text
            return np.asarray(Image.open(io.BytesIO(r.content)))
        whole = get(0, 0, W, H)
        piece = get(40, 100, 133, 61)
    res["viewer_region_equals_crop"] = bool((piece == whole[100:, 40:]).all())
    res["viewer_max_abs_diff_levels"] = int(np.abs(piece.astype(int) - whole[100:, 40:].astype(int)).max())
    return res


def main() -> int:
    import liif
    from liif import checkpoints, weights

    out = Path(sys.argv[1])
    path = weights.path("edsr-baseline-liif")
    model, _ = checkpoints.load(path, device=torch.device(DEVICE))
    if DEVICE == "cpu":
        precs = ["fp32"]
    else:
        precs = ["fp32", "tf32", "bf16", "fp16"] if torch.cuda.is_bf16_supported() else ["fp32", "tf32", "fp16"]
    report = {"device": torch.cuda.get_device_name() if DEVICE != "cpu" else "cpu", "torch": torch.__version__,
              "cuda": torch.version.cuda, "liif": liif.__version__, "date": time.strftime("%Y-%m-%d")}
    for name, fn in (("golden_parity", lambda: golden_parity(model)), ("set14_x4", lambda: set14_psnr(path, precs)),
                     ("regions", lambda: regions(path))):
        t0 = time.perf_counter()
        try:
            report[name] = fn()
        except Exception as e:  # keep going: every figure that can be had is worth the device time
            report[name] = {"error": f"{type(e).__name__}: {e}"}
        print(f"{name} ({time.perf_counter() - t0:.1f} s): {json.dumps(report[name])}", flush=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
