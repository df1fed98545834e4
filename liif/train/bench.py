"""``liif bench train``: training samples/s of our loop vs a reference loop, same model, data, batches.

reference: the official op structure - ``LIIF.query`` with the full 3x3 unfold and four nearest
           grid_samples of the 576-wide codes, in full fp32 (TF32 off on CUDA: the model card's
           semantics).
ours:      one or more variants (``--variants``): the layer-0 folded query (``liif.models.folded``)
           in a precision (``auto`` resolves to what the hardware runs natively), with NHWC
           (channels-last) encoder activations, optionally ``torch.compile``.
All loops start from the same weights and run the same pre-built batches (data loading is excluded
here: ``--loader-workers`` measures the data pipeline on its own, so a bottleneck shows). Steps
alternate between loops so that background load affects all alike; samples/s = batch / median
step time. On CUDA the timers synchronise, and each loop's peak GPU memory per step is reported.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from liif import compute
from liif.compute import Compute
from liif.data.cli import root_arg
from liif.errors import LiifError
from liif.fileio import write_text_atomic
from liif.train import config
from liif.train.datasets import build_data, epoch_batches
from liif.train.step import Forward, Step, train_step


@dataclass(frozen=True)
class LoopVariant:
    """One of our training loops (an entry of ``--variants``): ``PRECISION[:flag...]`` with flags nofold,
    nchw, compile. PRECISION is auto, fp32 (TF32 off), tf32 (fp32 tensors, TF32 matmuls/convs on CUDA),
    bf16, fp16; ``settings`` holds it resolved, on the bench's device."""

    name: str
    settings: Compute
    fold: bool = True
    channels_last: bool = True
    compile: bool = False

    @classmethod
    def parse(cls, text: str, device: torch.device) -> LoopVariant | str:
        """The loop, or a one-line reason why it is skipped on ``device``."""
        text = text.strip()
        prec, *flags = text.split(":")
        asked = prec
        unknown = set(flags) - {"nofold", "nchw", "compile"}
        if unknown or prec not in compute.CHOICES:
            raise LiifError(f"--variants: cannot read {text!r} (PRECISION[:nofold][:nchw][:compile], "
                            f"PRECISION one of {', '.join(compute.CHOICES)})")
        if prec == "auto":
            prec = compute.native(device)
        elif prec == "tf32" and device.type != "cuda":
            return f"{text}: TF32 exists on CUDA only"
        elif prec == "fp16" and device.type != "cuda":
            return f"{text}: fp16 needs CUDA"
        elif prec == "bf16" and device.type == "cpu" and compute.native(device) != "bf16":
            return f"{text}: bf16 is not native on this CPU ({compute.cpu_info().isa}); it would run emulated"
        name = text if prec == asked else f"{text} (={prec})"
        return cls(name, Compute.exact(device, prec), "nofold" not in flags, "nchw" not in flags, "compile" in flags)


def loader_throughput(train_set: Any, batch: int, workers: int, n_batches: int, seed: int,
                      pin: bool) -> float:
    """Samples/s the DataLoader delivers with ``workers`` processes (after its first batch)."""
    plan = epoch_batches(len(train_set), batch, 1, seed)[:n_batches + 1]
    loader = torch.utils.data.DataLoader(train_set, batch_sampler=plan, num_workers=workers, pin_memory=pin,
                                         persistent_workers=False, prefetch_factor=4 if workers else None)
    it = iter(loader)
    next(it)
    t0 = time.perf_counter()
    n = 0
    for b in it:
        n += b["inp"].shape[0]
    return n / (time.perf_counter() - t0)


def cache_bytes(train_set: Any) -> int:
    """Host bytes of decoded training images held by the in-memory cache (0 when uncached)."""
    images = getattr(train_set, "images", None)
    cached = getattr(images, "cached", None)
    return sum(int(a.nbytes) for a in cached) if cached is not None else 0


def main(args: argparse.Namespace) -> int:
    if args.iters < 1:
        raise LiifError("--iters must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = [f"data.train.roots={json.dumps(list(args.data))}", "data.train.div2k=null",
                 "data.val.hr=null", "data.val.lr=null", *args.overrides]
    if args.batch is not None:
        overrides.append(f"train.batch_size={args.batch}")
    cfg = config.load(args.config, overrides, data_root=root_arg(args.data_root))
    want = args.device or ("cuda" if torch.cuda.is_available() and cfg.train.device != "cpu" else "cpu")
    device = torch.device(want)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LiifError("--device cuda: CUDA is not available")
    variants: list[LoopVariant] = []
    for text in args.variants.split(","):
        parsed = LoopVariant.parse(text, device)
        if isinstance(parsed, str):
            print(f"  skipped: {parsed}")
        else:
            variants.append(parsed)
    cfg.data.train.cache = "memory"
    t_data = time.perf_counter()
    train_set, _ = build_data(cfg)
    t_data = time.perf_counter() - t_data
    bs = cfg.train.batch_size
    plan = epoch_batches(len(train_set), bs, 0, cfg.train.seed)
    if len(plan) < args.iters + 1:
        raise LiifError(f"need {args.iters + 1} batches of {bs}, the data gives {len(plan)}")
    batches = [torch.utils.data.default_collate([train_set[i] for i in idx]) for idx in plan[:args.iters + 1]]
    if device.type == "cuda":
        batches = [{k: v.pin_memory() for k, v in b.items()} for b in batches]

    spec = cfg.model_spec()
    where = (f"GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda"
             else compute.cpu_info().describe())
    print(f"liif bench train: {Path(args.config).name} ({spec.encoder}, hidden {spec.hidden}), batch {bs}, "
          f"{cfg.data.train.inp_size}px LR patches, {cfg.data.train.sample_q} queries/sample, device {device} "
          f"({where}), torch {torch.__version__}, median of {args.iters} steps", flush=True)

    from liif.models import build
    torch.manual_seed(cfg.train.seed)
    base = build(spec).to(device)
    loops: dict[str, dict[str, Any]] = {}
    reference = LoopVariant("reference", Compute.exact(device, "fp32"), fold=False, channels_last=False)
    ours = ([] if args.no_reference else [reference]) + variants
    runs: list[tuple[str | None, Any, LoopVariant]] = [(None, base, v) for v in ours]
    for other in args.compare:  # other decoders (configs that differ in their model section) on the same batches
        torch.manual_seed(cfg.train.seed)
        extra = build(config.load(other, overrides, data_root=root_arg(args.data_root)).model_spec()).to(device)
        runs += [(Path(other).stem, extra, v) for v in variants]
    for label, model0, v in runs:
        name = v.name if label is None else f"{label}: {v.name}"
        model = copy.deepcopy(model0)
        fwd: Forward = Step(model, fold=v.fold, channels_last=v.channels_last)
        if v.compile:
            fwd = torch.compile(fwd)
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.train.lr)
        scaler = torch.amp.GradScaler(device.type, enabled=v.settings.dtype == torch.float16)
        loops[name] = {"fwd": fwd, "model": model, "opt": opt, "scaler": scaler, "settings": v.settings,
                       "times": [], "peak": 0}
        t0 = time.perf_counter()
        with v.settings.fp32_math():
            train_step(fwd, model, opt, scaler, batches[0], v.settings)  # warm-up (and compilation)
        loops[name]["warmup_s"] = time.perf_counter() - t0
    for b in batches[1:]:
        for st in loops.values():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
            t0 = time.perf_counter()
            with st["settings"].fp32_math():
                train_step(st["fwd"], st["model"], st["opt"], st["scaler"], b, st["settings"])
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                st["peak"] = max(st["peak"], torch.cuda.max_memory_allocated(device))
            st["times"].append(time.perf_counter() - t0)
    res = {name: bs / statistics.median(st["times"]) for name, st in loops.items()}
    ref = res.get("reference")
    rows = []
    for name, st in loops.items():
        label = ("reference (LIIF.query, full unfold, fp32)" if name == "reference" else f"ours [{name}]")
        if args.compare and name != "reference" and ": " not in name:
            label = f"ours [{Path(args.config).stem}: {name}]"
        ratio = f" = {res[name] / ref:.2f}x" if ref and name != "reference" else ""
        mem = f", peak GPU {st['peak'] / 2**30:.2f} GiB/step" if device.type == "cuda" else ""
        print(f"  {label:<44} {res[name]:9.2f} samples/s{ratio}{mem}", flush=True)
        rows.append({"loop": name, "samples_per_s": res[name], "ratio_vs_reference": res[name] / ref if ref else None,
                     "step_s": st["times"], "warmup_s": st["warmup_s"], "peak_gpu_bytes": st["peak"] or None})
    loader_rows = []
    for w in args.loader_workers:
        sps = loader_throughput(train_set, bs, w, args.loader_batches, cfg.train.seed, device.type == "cuda")
        loader_rows.append({"workers": w, "samples_per_s": sps})
        print(f"  data loader alone, {w} worker(s): {sps:9.2f} samples/s", flush=True)
    cached = cache_bytes(train_set)
    print(f"  data cache: {cached / 2**20:.0f} MiB decoded images in host memory (built in {t_data:.1f} s)")
    if args.json:
        fig = {"config": str(args.config), "batch": bs, "device": str(device), "where": where,
               "torch": torch.__version__, "threads": torch.get_num_threads(), "iters": args.iters,
               "loops": rows, "loader": loader_rows, "cache_bytes": cached}
        if ref is not None and len(rows) == 2:  # the one-variant summary of earlier versions
            fig.update({"precision": variants[0].settings.precision, "channels_last": variants[0].channels_last,
                        "reference_samples_per_s": ref, "ours_samples_per_s": rows[1]["samples_per_s"],
                        "ratio": rows[1]["samples_per_s"] / ref})
        write_text_atomic(args.json, json.dumps(fig, indent=2) + "\n")
    return 0
