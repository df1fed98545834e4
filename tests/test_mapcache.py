"""The viewer's cache of features and maps (liif.render.mapcache): renders from it equal the normal
region render (fp32, within 1 LSB of the 8-bit output) for LIIF, LTE and LM-LIIF; what was computed
is reused; the cache stays within its bytes."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import GOLDEN
from liif import checkpoints
from liif.compute import Compute
from liif.pipeline import Pipeline
from liif.render.mapcache import Grid, MapCache
from liif.render.plan import working_set

SRC = Image.open(GOLDEN / "set5_butterfly_in.png").convert("RGB")  # 57x64
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def lmliif():
    return checkpoints.load(GOLDEN / "lmf" / "lm-liif-edsr-baseline-random.pth")


def pipelines(model, cache_bytes: int = 1 << 30) -> tuple[Pipeline, Pipeline]:
    compute = Compute.exact(CPU, "fp32")
    return (Pipeline(model, "fast", compute, cache=MapCache(cache_bytes)), Pipeline(model, "fast", compute))


def close(a, b) -> int:
    return int(np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).max())


# (output W, H), the window (x, y, w, h) and the view hint around it: inside, on the image's edges, and
# at a scale below x4, where LM-LIIF's maps depend on the cell
CASES = [((399, 448), (120, 210, 160, 90), (40, 150, 300, 220)),
         ((399, 448), (0, 0, 64, 64), (0, 0, 200, 160)),
         ((171, 192), (100, 130, 71, 62), (60, 90, 111, 102))]


@pytest.mark.parametrize("family", ["liif", "lte", "lmliif"])
def test_cached_renders_equal_region_renders(family, official, lte, lmliif):
    model = {"liif": official, "lte": lte, "lmliif": lmliif}[family][0]
    cached, plain = pipelines(model)
    for (W, H), region, hint in CASES:
        got = cached.image(SRC, size=(H, W), region=region, key="butterfly", hint=hint)
        want = plain.image(SRC, size=(H, W), region=region)
        assert got.size == want.size == region[2:]
        assert close(got, want) <= 1, (family, region)


def test_pans_reuse_what_was_computed(lmliif):
    model = lmliif[0]
    cached, plain = pipelines(model)
    cache = cached.cache
    cached.image(SRC, size=(448, 399), region=(0, 0, 100, 100), key="b", hint=(0, 0, 150, 150))
    feat = cache.entries[("b", "feat")]
    first = feat.filled
    assert 0 < first < 57 * 64  # the view's footprint, not the whole image
    cached.image(SRC, size=(448, 399), region=(20, 20, 100, 100), key="b")  # inside the view: nothing new
    assert feat.filled == first and len(cache.entries) == 2
    got = cached.image(SRC, size=(448, 399), region=(250, 300, 149, 148), key="b")  # a pan: the rest
    assert feat.filled > first
    assert close(got, plain.image(SRC, size=(448, 399), region=(250, 300, 149, 148))) <= 1
    filled = feat.filled
    cached.image(SRC, size=(160, 142), region=(0, 0, 40, 40), key="b")  # another cell: new maps, same features
    assert feat.filled == filled and len(cache.entries) == 3


def test_cache_is_bounded_in_bytes(official):
    model = official[0]
    one = 57 * 64 * (64 + model.map_channels) * 4  # features and maps of the image, fp32
    cached, plain = pipelines(model, cache_bytes=int(one * 1.5))
    for k in range(3):
        got = cached.image(SRC, size=(128, 114), region=(10, 10, 60, 50), key=f"image{k}")
        assert close(got, plain.image(SRC, size=(128, 114), region=(10, 10, 60, 50))) <= 1
        assert cached.cache.nbytes <= int(one * 1.5)
    assert cached.cache.evicted >= 2 and set(k for k, *_ in cached.cache.entries) == {"image2"}
    small, _ = pipelines(model, cache_bytes=1000)  # too small for any image: renders as without a cache
    got = small.image(SRC, size=(128, 114), region=(10, 10, 60, 50), key="x")
    assert close(got, plain.image(SRC, size=(128, 114), region=(10, 10, 60, 50))) <= 1
    assert not small.cache.entries


def test_grid_fills_missing_blocks_in_pieces():
    calls = []

    def fill(box):
        calls.append(box)
        y0, y1, x0, x1 = box
        ys, xs = torch.meshgrid(torch.arange(y0, y1), torch.arange(x0, x1), indexing="ij")
        return torch.stack([ys, xs], -1).float()

    grid = Grid((90, 50), 2, torch.float32, CPU, fill, halo=4, max_px=48 * 40)
    grid.ensure((3, 20, 5, 40))  # blocks 0:32 x 0:48: strips of the whole width, 16 rows (+ halo) each
    assert calls == [(0, 16, 0, 48), (16, 32, 0, 48)]
    grid.ensure((10, 30, 10, 30))  # already there
    assert len(calls) == 2
    grid.max_px = 30 * 30  # too little for a strip: squares
    grid.ensure((60, 90, 0, 50))
    assert calls[2:] == [(48, 64, 0, 16), (48, 64, 16, 32), (48, 64, 32, 48), (48, 64, 48, 50), (64, 80, 0, 16),
                         (64, 80, 16, 32), (64, 80, 32, 48), (64, 80, 48, 50), (80, 90, 0, 16), (80, 90, 16, 32),
                         (80, 90, 32, 48), (80, 90, 48, 50)]
    grid.max_px = 10_000  # the bounding box of what is missing, in one piece
    grid.ensure((0, 90, 0, 50))
    assert calls[14:] == [(0, 48, 0, 50)] and bool(grid.done.all())
    ys, xs = torch.meshgrid(torch.arange(90), torch.arange(50), indexing="ij")
    assert torch.equal(grid.data, torch.stack([ys, xs], -1).float())


@pytest.mark.parametrize("family", ["liif", "lmliif"])
def test_warm_fills_the_whole_image_and_renders_then_only_decode(family, official, lmliif):
    """``Pipeline.warm`` computes the image's features and maps (LIIF: the maps of every zoom; LM-LIIF:
    the maps of zooms past its cell clip, x4 and up) so that such renders compute nothing more and still
    equal the normal region render; without a cache it does nothing."""
    model = {"liif": official, "lmliif": lmliif}[family][0]
    cached, plain = pipelines(model)
    assert cached.warm(SRC, "b") is True
    grids = dict(cached.cache.entries)
    assert len(grids) == 2 and all(bool(g.done.all()) for g in grids.values())
    filled = {k: g.filled for k, g in grids.items()}
    assert filled[("b", "feat")] == 57 * 64
    for (W, H), region in (((285, 320), (30, 40, 200, 150)), ((456, 512), (300, 100, 156, 200))):  # x5, x8
        got = cached.image(SRC, size=(H, W), region=region, key="b", hint=(0, 0, W, H))
        assert close(got, plain.image(SRC, size=(H, W), region=region)) <= 1
    assert dict(cached.cache.entries) == grids and {k: g.filled for k, g in grids.items()} == filled
    assert plain.warm(SRC, "b") is False and pipelines(model, cache_bytes=1000)[0].warm(SRC, "b") is False


def test_warm_stops_between_pieces_and_keeps_what_it_did(official):
    from liif.api import RenderCancelled

    model = official[0]
    per_px, fixed = working_set(model, torch.float32)
    # room for about 12 rows of features (plus the encoder's halo) at a time: the image in several strips
    budget = fixed + (64 + 70) * (12 + 70) * (per_px - model.map_channels * 4)
    cached = Pipeline(model, "fast", Compute.exact(CPU, "fp32", budget), cache=MapCache(1 << 30))
    calls = []

    def cancel() -> bool:
        calls.append(1)
        return len(calls) > 1  # the first piece runs, the second is refused

    with pytest.raises(RenderCancelled):
        cached.warm(SRC, "b", cancel)
    feat = cached.cache.entries[("b", "feat")]
    assert 0 < feat.filled < 57 * 64
    assert cached.warm(SRC, "b") is True and feat.filled == 57 * 64
