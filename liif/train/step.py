"""The model as trained: ``Step`` (the module DDP wraps), one optimisation step, and validation PSNR.

A step: forward (layer-0 folded query, autocast where the precision asks for it), L1 loss in the
normalised space, backward (DDP averages gradients), Adam.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from liif.compute import Compute
from liif.data.sampling import FixedScale
from liif.errors import LiifError
from liif.models import ImplicitDecoder
from liif.models.decoder import fast_forward as folded_forward

# The model as trained, (inp, coord, cell) -> prediction: a Step, under DDP with several processes,
# compiled with train.compile (torch.compile is typed as returning a plain callable).
Forward = Callable[..., torch.Tensor]


class Step(nn.Module):
    """The trained function as a module (so DDP can wrap it): normalised LR + queries -> prediction."""

    def __init__(self, model: ImplicitDecoder, fold: bool, channels_last: bool = False) -> None:
        super().__init__()
        self.model, self.fold, self.channels_last = model, fold, channels_last
        if channels_last:
            # Module.to(memory_format=...) is documented and works; torch's overloads omit it
            model.encoder.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def forward(self, inp: torch.Tensor, coord: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            inp = inp.contiguous(memory_format=torch.channels_last)
        return folded_forward(self.model, inp, coord, cell) if self.fold else self.model(inp, coord, cell)


def train_step(forward: Forward, model: ImplicitDecoder, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
               batch: dict[str, torch.Tensor], settings: Compute) -> float:
    """One optimisation step on one (per-rank) batch on ``settings.device``, the forward under
    ``settings.autocast()``; returns the L1 loss in the normalised space."""
    device = settings.device
    inp = model.normalize(batch["inp"].to(device, non_blocking=True))
    coord = batch["coord"].to(device, non_blocking=True)
    cell = batch["cell"].to(device, non_blocking=True)
    gt = (batch["gt"].to(device, non_blocking=True) - model.out_mean.view(3)) / model.out_std.view(3)
    with settings.autocast():
        pred = forward(inp, coord, cell)
    loss = F.l1_loss(pred.float(), gt)
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    return loss.item()


@torch.no_grad()
def probe(step: Step, device: torch.device) -> None:
    """One forward of a 4 x 4 input with 4 queries, before anything is written: a model that the config
    describes but that cannot run (a LIIF without an MLP, ``n_colors`` other than 3) is a one-line config
    error here instead of a traceback at the first step."""
    inp = torch.zeros(1, 3, 4, 4, device=device)
    coord = torch.zeros(1, 4, 2, device=device)
    cell = torch.full((1, 4, 2), 0.5, device=device)
    try:
        pred = step(inp, coord, cell)
    except (ValueError, TypeError, RuntimeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise LiifError(f"config key model: the model does not run: {first}") from None
    if tuple(pred.shape) != (1, 4, 3):
        raise LiifError(f"config key model: the model predicts {tuple(pred.shape)} for 4 queries of one image, "
                        f"not (1, 4, 3) (RGB)")


@torch.no_grad()
def validate(model: ImplicitDecoder, val: FixedScale, y_channel: bool, device: torch.device) -> float:
    """Mean PSNR over whole images rendered at the validation scale (Y + shave s, or RGB + shave s + 6)."""
    from liif.eval.metrics import psnr  # noqa: PLC0415 - written by the evaluation work
    from liif.render import render

    was_training = model.training
    model.eval()
    values = []
    for i in range(len(val)):
        lr, hr = val[i]
        pred = render(model, lr.to(device), (hr.shape[-2], hr.shape[-1]))
        sr = model.denormalize(pred.permute(1, 2, 0)).permute(2, 0, 1).clamp(0, 1).cpu()
        shave = val.scale if y_channel else val.scale + 6
        values.append(float(psnr(sr, hr, shave=shave, y_channel=y_channel)))
    model.train(was_training)
    return sum(values) / len(values)
