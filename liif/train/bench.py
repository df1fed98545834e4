"""``liif bench train``: training samples/s of our loop vs a reference loop, same model, data, batches.

reference: the official op structure - ``LIIF.query`` with the full 3x3 unfold and four nearest
           grid_samples of the 576-wide codes, fp32.
ours:      the layer-0 folded query (``liif.models.folded``) under autocast (bf16 by default) with
           NHWC (channels-last) encoder activations, as ``train.channels_last`` does.
Both start from the same weights and run the same pre-built batches (data loading is excluded:
in a real run it overlaps with compute in DataLoader workers). Steps alternate ref/ours so that
background load affects both alike; samples/s = batch / median step time.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch

from liif.checkpoints import atomic_path
from liif.errors import LiifError
from liif.train import config
from liif.train.loop import Step, build_data, epoch_batches, train_step

def main(args: argparse.Namespace) -> int:
    if args.iters < 1:
        raise LiifError("--iters must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = [f"data.train.roots={json.dumps(list(args.data))}", "data.train.div2k=null",
                 "data.val.hr=null", "data.val.lr=null", *args.overrides]
    if args.batch is not None:
        overrides.append(f"train.batch_size={args.batch}")
    cfg = config.load(args.config, overrides)
    device = torch.device("cuda" if torch.cuda.is_available() and cfg.train.device != "cpu" else "cpu")
    if args.precision == "fp16" and device.type != "cuda":
        raise LiifError("fp16 needs CUDA; use bf16 on the CPU")
    cfg.data.train.cache = "memory"
    train_set, _ = build_data(cfg)
    bs = cfg.train.batch_size
    plan = epoch_batches(len(train_set), bs, 0, cfg.train.seed)
    if len(plan) < args.iters + 1:
        raise LiifError(f"need {args.iters + 1} batches of {bs}, the data gives {len(plan)}")
    batches = [torch.utils.data.default_collate([train_set[i] for i in idx]) for idx in plan[:args.iters + 1]]

    torch.manual_seed(cfg.train.seed)
    ref_model = config.ModelSpec.from_dict(cfg.model)
    from liif.models import build
    ref = build(ref_model).to(device)
    ours = copy.deepcopy(ref)
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.precision)
    loops = {
        "reference": (Step(ref, fold=False), ref, None),
        "ours": (Step(ours, fold=True, channels_last=args.channels_last), ours, amp),
    }
    state = {}
    for name, (fwd, model, dtype) in loops.items():
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.train.lr)
        scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
        state[name] = (fwd, model, opt, scaler, dtype, [])
        train_step(fwd, model, opt, scaler, batches[0], device, dtype)  # warm-up
    for b in batches[1:]:
        for name in loops:
            fwd, model, opt, scaler, dtype, times = state[name]
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            train_step(fwd, model, opt, scaler, b, device, dtype)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    res = {name: bs / statistics.median(state[name][5]) for name in loops}
    spec = cfg.model_spec()
    print(f"liif bench train: {Path(args.config).name} ({spec.encoder}, hidden {spec.hidden}), batch {bs}, "
          f"{cfg.data.train.inp_size}px LR patches, {cfg.data.train.sample_q} queries/sample, device {device}, "
          f"{torch.get_num_threads()} threads, median of {args.iters} steps")
    print(f"  reference (LIIF.query, full unfold, fp32): {res['reference']:8.2f} samples/s")
    label = f"ours (layer-0 fold, {args.precision}{', NHWC' if args.channels_last else ''}):"
    print(f"  {label:<42} {res['ours']:8.2f} samples/s")
    ratio = res["ours"] / res["reference"]
    print(f"  ratio: {ratio:.2f}x")
    if args.json:
        fig = {"config": str(args.config), "batch": bs, "device": str(device), "threads": torch.get_num_threads(),
               "precision": args.precision, "channels_last": args.channels_last, "iters": args.iters,
               "reference_samples_per_s": res["reference"], "ours_samples_per_s": res["ours"], "ratio": ratio,
               "reference_step_s": state["reference"][5], "ours_step_s": state["ours"][5]}
        with atomic_path(Path(args.json)) as tmp:
            tmp.write_text(json.dumps(fig, indent=2) + "\n")
    return 0
