"""What a viewer keeps between renders of one image: the encoder's output and the method's LR maps.

A render of a window encodes the window's LR footprint plus the encoder's halo, then turns the
features into the method's maps (``liif.models.decoder``). A viewer renders the same image again and
again (tiles, pans, zoom steps), so :class:`MapCache` keeps, per image, the features of the whole
LR image and, per cell where the method's maps see it (LM-LIIF, ``maps_see_cell``), the maps: each
a full-image tensor filled block by block on demand (:class:`Grid`). A render then only decodes;
what a request misses is encoded once, as one crop (the bounding box of the missing blocks plus the
halo, cut to the memory budget). Encoding a crop gives the whole-image values wherever the halo
covers the receptive field (the crop's border is the image's border, or far enough from it), so a
render from the cache equals the normal render up to float rounding.

The cache is a least-recently-used map counted in bytes: entries past ``limit`` bytes are dropped
(a render still using one keeps it alive until it ends); an image whose tensors alone would not fit
is not cached, and renders the normal way.
"""
from __future__ import annotations

import contextlib
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Protocol

import torch

from liif.compute import Compute
from liif.errors import LiifError
from liif.models.decoder import ImplicitDecoder
from liif.render.plan import Box, encoder_halo, working_set

BLOCK = 16  # LR pixels per side of a cached block
MAP_HALO = 1  # feature pixels around a block that its maps read (the methods' 3x3 convolutions)
Cancel = Callable[[], bool] | None


class Interrupted(LiifError):
    """Filling the cache stopped because the render's ``cancel()`` returned True."""


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` intra-op threads (None: as it is), then restore the count."""
    before = torch.get_num_threads()
    if n is None or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Encoder(Protocol):
    """What the cache needs of a compute backend."""

    def encode(self, crop: torch.Tensor) -> torch.Tensor: ...
    def lr_maps(self, feat: torch.Tensor, rel_cell: torch.Tensor | None = None) -> torch.Tensor: ...


class Grid:
    """A full-image (H, W, D) tensor whose blocks of ``BLOCK`` x ``BLOCK`` LR pixels are computed on
    demand by ``fill(box) -> (h, w, D)`` values of exactly that box, which reads ``halo`` pixels
    around the box and may hold ``max_px`` pixels (box plus halo) at a time. ``before(box)`` runs
    once before the pieces of a box are filled (the maps: their features, in one piece)."""

    def __init__(self, hw: tuple[int, int], depth: int, dtype: torch.dtype, device: torch.device,
                 fill: Callable[[Box], torch.Tensor], halo: int, max_px: int,
                 before: Callable[[Box, Cancel], None] | None = None) -> None:
        self.hw, self.fill, self.halo, self.max_px, self.before = hw, fill, halo, max_px, before
        self.data = torch.empty(*hw, depth, dtype=dtype, device=device)
        self.done = torch.zeros(math.ceil(hw[0] / BLOCK), math.ceil(hw[1] / BLOCK), dtype=torch.bool)
        self.lock = threading.Lock()
        self.filled = 0  # LR pixels computed so far (tests and logs)

    @property
    def nbytes(self) -> int:
        return self.data.numel() * self.data.element_size()

    def pieces(self, box: Box) -> list[Box]:
        """``box`` in pieces whose pixels plus halo stay within ``max_px``: the whole box, else
        strips of its whole width (the halo only above and below), else squares."""
        y0, y1, x0, x1 = box
        h2 = 2 * self.halo
        if (y1 - y0 + h2) * (x1 - x0 + h2) <= self.max_px:
            return [box]
        rows = (self.max_px // (x1 - x0 + h2) - h2) // BLOCK * BLOCK
        if rows >= BLOCK:
            return [(r, min(y1, r + rows), x0, x1) for r in range(y0, y1, rows)]
        side = max(BLOCK, (int(math.sqrt(self.max_px)) - h2) // BLOCK * BLOCK)
        return [(r, min(y1, r + side), c, min(x1, c + side)) for r in range(y0, y1, side) for c in range(x0, x1, side)]

    def ensure(self, box: Box, cancel: Cancel = None) -> None:
        """Compute the blocks of ``box`` (y0, y1, x0, x1) not yet computed: their bounding box, in
        :meth:`pieces`. :class:`Interrupted` when ``cancel()`` turns True between pieces (the pieces
        done stay done)."""
        by0, by1 = box[0] // BLOCK, -(-box[1] // BLOCK)
        bx0, bx1 = box[2] // BLOCK, -(-box[3] // BLOCK)
        with self.lock:
            missing = (~self.done[by0:by1, bx0:bx1]).nonzero()
            if missing.numel() == 0:
                return
            (my0, mx0), (my1, mx1) = missing.min(0).values.tolist(), missing.max(0).values.tolist()
            y0, y1 = (by0 + my0) * BLOCK, min(self.hw[0], (by0 + my1 + 1) * BLOCK)
            x0, x1 = (bx0 + mx0) * BLOCK, min(self.hw[1], (bx0 + mx1 + 1) * BLOCK)
            if self.before is not None:
                self.before((y0, y1, x0, x1), cancel)
            for piece in self.pieces((y0, y1, x0, x1)):
                if cancel is not None and cancel():
                    raise Interrupted("render cancelled")
                self.data[piece[0]:piece[1], piece[2]:piece[3]] = self.fill(piece)
                self.done[piece[0] // BLOCK:-(-piece[1] // BLOCK), piece[2] // BLOCK:-(-piece[3] // BLOCK)] = True
                self.filled += (piece[1] - piece[0]) * (piece[3] - piece[2])

    def flat(self) -> torch.Tensor:
        """The maps as the renderer reads them: (H * W, D) rows (a view)."""
        return self.data.reshape(-1, self.data.shape[-1])


def grow(box: Box, by: int, hw: tuple[int, int]) -> Box:
    return max(0, box[0] - by), min(hw[0], box[1] + by), max(0, box[2] - by), min(hw[1], box[3] + by)


class ImageMaps:
    """One image's features and maps (one cell), both on demand; :meth:`maps` is what a render reads."""

    def __init__(self, feat: Grid, maps: Grid) -> None:
        self.feat, self.grid = feat, maps

    def maps(self, box: Box, cancel: Cancel = None) -> torch.Tensor:
        """The flattened whole-image maps, with at least the codes of ``box`` computed."""
        self.grid.ensure(box, cancel)
        return self.grid.flat()


class MapCache:
    """Features per image and maps per (image, cell) in a least-recently-used map of ``limit`` bytes.
    ``fill_threads``: intra-op threads of the encoder and maps (the convolutions use every core even
    where the renders decode with fewer; None: the caller's)."""

    def __init__(self, limit: int, fill_threads: int | None = None) -> None:
        self.limit, self.fill_threads = limit, fill_threads
        self.entries: OrderedDict[Hashable, Grid] = OrderedDict()
        self.lock = threading.Lock()
        self.evicted = 0

    @property
    def nbytes(self) -> int:
        with self.lock:
            return self._held()

    def _held(self) -> int:
        """Bytes of the entries (the caller holds the lock)."""
        return sum(g.nbytes for g in self.entries.values())

    def clear(self) -> None:
        with self.lock:
            self.entries.clear()

    def _get(self, key: Hashable, make: Callable[[], Grid]) -> Grid | None:
        with self.lock:
            grid = self.entries.get(key)
            if grid is not None:
                self.entries.move_to_end(key)
                return grid
        grid = make()  # allocated outside the lock (torch.empty: no work)
        if grid.nbytes > self.limit:
            return None
        with self.lock:
            grid = self.entries.setdefault(key, grid)
            self.entries.move_to_end(key)
            total = self._held()
            while total > self.limit:
                gone, old = self.entries.popitem(last=False)
                total -= old.nbytes
                self.evicted += 1
                if isinstance(gone, tuple) and gone[1:] == ("feat",):  # its maps read it: they go too
                    for k in [k for k in self.entries if isinstance(k, tuple) and k[0] == gone[0]]:
                        total -= self.entries.pop(k).nbytes
                        self.evicted += 1
            return grid if key in self.entries else None

    def source(self, key: Hashable, model: ImplicitDecoder, dec: Encoder, img: torch.Tensor,
               rel_cell: torch.Tensor, compute: Compute, evict: bool = True) -> ImageMaps | None:
        """The cached features and maps of image ``key`` (its RGB ``img``, (3, H, W)) for a render with
        ``rel_cell``; None when they would not fit the cache (``evict=False``: would not fit beside what
        it holds)."""
        hw = (int(img.shape[-2]), int(img.shape[-1]))
        halo = encoder_halo(model)
        per_px, fixed = working_set(model, compute.dtype)
        dtype = compute.dtype
        map_bytes = per_px - 12 - model.encoder.activation_bytes_per_pixel()  # type: ignore[operator]
        feat_dim = int(model.encoder.out_dim)  # type: ignore[arg-type]
        avail = max(0, compute.budget - fixed)

        def encode(box: Box) -> torch.Tensor:
            y0, y1, x0, x1 = grown = grow(box, halo, hw)
            with torch_threads(self.fill_threads):
                out = dec.encode(img[None, :, y0:y1, x0:x1])[0].permute(1, 2, 0)
            return out[box[0] - grown[0]:box[1] - grown[0], box[2] - grown[2]:box[3] - grown[2]]

        see_cell = model.maps_see_cell
        cell_key = tuple(float(v) for v in rel_cell.tolist()) if see_cell else None
        if not evict:  # room for what is missing beside what the cache holds, or nothing at all
            size = torch.empty((), dtype=dtype).element_size() * hw[0] * hw[1]
            with self.lock:
                need = sum(size * depth for k, depth in (((key, "feat"), feat_dim),
                                                         ((key, "maps", cell_key), model.map_channels))
                           if k not in self.entries)
                if need and self._held() + need > self.limit:
                    return None
        feat = self._get((key, "feat"), lambda: Grid(hw, feat_dim, dtype, img.device, encode, halo,
                                                     avail // (per_px - map_bytes)))
        if feat is None:
            return None

        def maps_of(box: Box) -> torch.Tensor:
            y0, y1, x0, x1 = grown = grow(box, MAP_HALO, hw)
            f = feat.data[y0:y1, x0:x1].permute(2, 0, 1)[None]
            with torch_threads(self.fill_threads):
                m = dec.lr_maps(f, rel_cell) if see_cell else dec.lr_maps(f)
            return m[box[0] - grown[0]:box[1] - grown[0], box[2] - grown[2]:box[3] - grown[2]]

        grid = self._get((key, "maps", cell_key), lambda: Grid(
            hw, model.map_channels, dtype, img.device, maps_of, MAP_HALO, avail // (4 * map_bytes + 8 * feat_dim),
            before=lambda box, cancel: feat.ensure(grow(box, MAP_HALO, hw), cancel)))  # features: fewest pieces
        return None if grid is None else ImageMaps(feat, grid)


__all__ = ["BLOCK", "Grid", "ImageMaps", "Interrupted", "MapCache", "torch_threads"]
