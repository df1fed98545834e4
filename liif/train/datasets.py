"""The data a training config describes: the training and validation sets, and each rank's batches of an epoch."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

from liif.data.folders import ImageFolder, PairedFolders, div2k
from liif.data.sampling import FixedScale, ImplicitDownsampled
from liif.errors import LiifError
from liif.train.config import Config


def build_data(cfg: Config, out: Path | None = None) -> tuple[ImplicitDownsampled, FixedScale | None]:
    """(the training set, the validation set or None when the config names none). An mmap cache without
    ``data.train.cache_dir`` lives in ``out/cache``."""
    d = cfg.data.train
    cache_dir = d.cache_dir if d.cache_dir is not None else (out / "cache" if out is not None else None)
    if d.cache == "mmap" and cache_dir is None:
        raise LiifError("config key data.train.cache: mmap needs data.train.cache_dir here")
    images = (div2k(d.div2k, "train", repeat=d.repeat, cache=d.cache, cache_dir=cache_dir) if d.div2k is not None
              else ImageFolder(d.roots, repeat=d.repeat, cache=d.cache, cache_dir=cache_dir))
    assert isinstance(images, ImageFolder)  # div2k without a scale: the HR images alone
    train = ImplicitDownsampled(images, d.inp_size, d.scale_min, d.scale_max, d.augment, d.sample_q, cfg.train.seed,
                                 d.degradation)
    v = cfg.data.val
    val = None
    if v.hr is not None:
        src: PairedFolders | ImageFolder = (PairedFolders(v.lr, v.hr, first_k=v.first_k) if v.lr is not None
                                            else ImageFolder(v.hr, first_k=v.first_k))
        val = FixedScale(src, v.scale)
    return train, val


def batches(loader: Iterable[Any]) -> Iterator[Any]:
    """``loader``'s batches; a LiifError raised in a DataLoader worker (an image that does not decode)
    comes back as its own line, not as the worker's traceback that DataLoader wraps it in."""
    it = iter(loader)
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except LiifError as e:
            last = str(e).strip().splitlines()[-1] if str(e).strip() else ""
            if "\n" in str(e).strip() and last.startswith("liif.errors.LiifError: "):
                raise LiifError(last.removeprefix("liif.errors.LiifError: ")) from None
            raise
        yield batch


def epoch_batches(n: int, batch: int, epoch: int, seed: int, rank: int = 0, world: int = 1) -> list[list[int]]:
    """This rank's batches of one epoch: ``DistributedSampler`` (shuffled, seeded, incomplete tail dropped)
    cut into per-rank batches of ``batch // world``.

    The sampler's permutation depends only on (seed, epoch) and rank r takes positions r, r + world, ...
    of it, so at step k the ranks together hold positions k*batch .. (k+1)*batch - 1: exactly the
    k-th batch of a single-process run with the same global batch, split into disjoint parts.
    """
    # The sampler shuffles with seed + epoch; spread the seeds so seed s, epoch e+1 is not seed s+1, epoch e.
    # The sampler only takes len() of its dataset; its stub asks for a Dataset, a range of indices does.
    sampler: torch.utils.data.DistributedSampler[int] = torch.utils.data.DistributedSampler(
        range(n), num_replicas=world, rank=rank, shuffle=True,  # type: ignore[arg-type]
        seed=seed * 100003, drop_last=True)
    sampler.set_epoch(epoch)
    return list(torch.utils.data.BatchSampler(sampler, batch // world, drop_last=True))
