"""Write a trained checkpoint as the half-precision safetensors file the package ships, and print its sha256.

    python scripts/ship_weights.py runs/realworld/checkpoints/last/model.safetensors \
        liif/weights/files/edsr-baseline-liif-realworld.safetensors

Loading upcasts to float32 (``liif.checkpoints.load``); the variant that ships the file declares this
sha256 (``Pretrained(bundled=..., digest=...)`` in its family file).
"""
from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import torch

from liif import checkpoints


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", help="any checkpoint liif reads")
    p.add_argument("out", help="the .safetensors file to write")
    args = p.parse_args()
    model, spec = checkpoints.load(args.checkpoint)
    out = checkpoints.save(model, spec, args.out, dtype=torch.float16)
    out.with_suffix(".json").unlink()  # the spec travels in the file's metadata
    print(f"{out}: {out.stat().st_size:,} bytes, sha256 {hashlib.sha256(Path(out).read_bytes()).hexdigest()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
