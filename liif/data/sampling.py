"""Training and validation samples for LIIF (spec section 5).

``ImplicitDownsampled`` is the paper's training wrapper: a random scale s ~ U(scale_min, scale_max),
a random HR crop of round(48 s) pixels, its 48 x 48 LR version by PIL bicubic on uint8 (rounding,
as the official float->uint8->PIL->float route gives for uint8 sources), three coin-flip
augmentations (flip rows, flip columns, transpose) and 2304 random HR pixels as queries.

Randomness is a numpy Generator seeded by (seed, epoch, index): an item depends only on those
three numbers, not on the worker process, the rank or the order of access. With a ``degradation``
(:mod:`liif.data.degrade.pipeline`) the LR is the crop degraded down to the same n x n instead; its
draws come from a second generator seeded by (seed, epoch, index, 1), so the crop, scale, flips and
queries are those the clean sampler draws. That makes a
distributed run draw the very samples a single-process run with the same global batch draws,
and a resumed run repeat the interrupted epoch's samples.

``FixedScale`` yields whole (LR, HR) image pairs at one integer scale for validation: either from
paired folders (LR files given, e.g. LR_bicubic/X4) or down-sampled from HR on the fly.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

from liif.coords import make_coord
from liif.data.degrade.pipeline import degrade
from liif.data.degrade.settings import Degradation
from liif.data.folders import ImageFolder, PairedFolders
from liif.data.resize import resize_uint8
from liif.errors import LiifError
from liif.imaging import as_float_chw


class ImplicitDownsampled(torch.utils.data.Dataset):
    """Random-scale training samples: dict(inp (3, n, n), coord (q, 2), cell (q, 2), gt (q, 3))."""

    def __init__(self, images: ImageFolder, inp_size: int = 48, scale_min: float = 1.0, scale_max: float = 4.0,
                 augment: bool = True, sample_q: int | None = 2304, seed: int = 0,
                 degradation: Degradation | None = None) -> None:
        if not 1.0 <= scale_min <= scale_max:
            raise LiifError(f"need 1 <= scale_min <= scale_max, got {scale_min}, {scale_max}")
        if sample_q is not None and sample_q > inp_size * inp_size:
            raise LiifError(f"sample_q {sample_q} exceeds the {inp_size}x{inp_size} pixels of the smallest crop")
        self.images, self.inp_size = images, inp_size
        self.scale_min, self.scale_max = scale_min, scale_max
        self.augment, self.sample_q, self.seed = augment, sample_q, seed
        self.degradation = degradation
        self.epoch = 0
        sizes = images.sizes()
        self.usable = [j for j, (h, w) in enumerate(sizes) if min(h, w) >= inp_size]
        if not self.usable:
            raise LiifError(f"no image in {images.root} is at least {inp_size} px on its short side")
        if len(self.usable) < len(sizes):
            warnings.warn(f"{len(sizes) - len(self.usable)} image(s) in {images.root} are smaller than "
                          f"{inp_size} px and are skipped", stacklevel=2)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.usable) * self.images.repeat

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, i])
        img = self.images[self.usable[i % len(self.usable)]]
        h, w = img.shape[:2]
        n = self.inp_size
        s = rng.uniform(self.scale_min, self.scale_max)
        # Images too small for the drawn scale get the largest scale that fits (not an error).
        w_hr = min(round(n * s), h, w)
        y0 = int(rng.integers(0, h - w_hr + 1))
        x0 = int(rng.integers(0, w - w_hr + 1))
        crop = img[y0:y0 + w_hr, x0:x0 + w_hr]
        if self.degradation is None:
            lr = resize_uint8(np.ascontiguousarray(crop), (n, n))
        else:
            lr = degrade(crop, (n, n), self.degradation, np.random.default_rng([self.seed, self.epoch, i, 1]))
        if self.augment:
            flips = rng.random(3) < 0.5
            if flips[0]:
                crop, lr = crop[::-1], lr[::-1]
            if flips[1]:
                crop, lr = crop[:, ::-1], lr[:, ::-1]
            if flips[2]:
                crop, lr = crop.transpose(1, 0, 2), lr.transpose(1, 0, 2)
        hr = as_float_chw(crop)
        coord = make_coord(hr.shape[-2:])
        gt = hr.reshape(3, -1).t()
        if self.sample_q is not None:
            pick = torch.from_numpy(rng.choice(coord.shape[0], self.sample_q, replace=False))
            coord, gt = coord[pick], gt[pick]
        cell = torch.tensor([2.0 / hr.shape[-2], 2.0 / hr.shape[-1]]).expand(coord.shape[0], 2).clone()
        return {"inp": as_float_chw(lr), "coord": coord, "cell": cell, "gt": gt.contiguous()}


class FixedScale(torch.utils.data.Dataset):
    """Whole-image validation pairs at integer ``scale``: (lr (3, h, w), hr (3, h*s, w*s)) in [0, 1].

    From ``PairedFolders`` the LR file is used as given and HR is cropped top-left to LR size x
    scale (the benchmark protocol); from an ``ImageFolder`` the HR is cropped to a multiple of the
    scale and down-sampled with PIL bicubic (the protocol beyond x4).
    """

    def __init__(self, data: PairedFolders | ImageFolder, scale: int) -> None:
        if scale < 1:
            raise LiifError(f"validation scale must be a positive integer, got {scale}")
        self.data, self.scale = data, int(scale)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.scale
        if isinstance(self.data, PairedFolders):
            lr, hr = self.data[i]
            h, w = lr.shape[:2]
            if hr.shape[0] < h * s or hr.shape[1] < w * s:
                raise LiifError(f"HR image {i} ({hr.shape[1]}x{hr.shape[0]}) is smaller than its LR x{s}")
            return as_float_chw(lr), as_float_chw(hr[:h * s, :w * s])
        hr = self.data[i]
        h, w = hr.shape[0] // s, hr.shape[1] // s
        hr = np.ascontiguousarray(hr[:h * s, :w * s])
        return as_float_chw(resize_uint8(hr, (h, w))), as_float_chw(hr)
