"""The seam's fast query (maps once per LR pixel, one gather per query and code; the training route)
equals each method's reference ``query`` (forward and gradients): every LIIF variant and LTE."""
from __future__ import annotations

import pytest
import torch

from liif.models import ModelSpec, build
from liif.models.decoder import fast_forward as folded_forward
from liif.models.decoder import fast_query as folded_query


@pytest.mark.parametrize("ensemble,unfold,cell", [(True, True, True), (False, True, True),
                                                   (True, False, True), (True, True, False)])
def test_folded_query_matches_reference(ensemble: bool, unfold: bool, cell: bool) -> None:
    torch.manual_seed(0)
    model = build(ModelSpec(encoder_args={"n_resblocks": 1, "n_feats": 8}, hidden=[32, 16],
                            local_ensemble=ensemble, feat_unfold=unfold, cell_decode=cell))
    feat = torch.randn(2, 8, 7, 11, requires_grad=True)  # non-square, batch of 2
    coord = torch.rand(2, 300, 2) * 2 - 1
    coord[0, :4] = torch.tensor([[-1.0, -1.0], [1.0, 1.0], [-1.0, 1.0], [0.0, 0.0]])  # borders and ties
    cell_t = torch.rand(2, 300, 2) * 0.3
    ref = model.query(feat, coord, cell_t)
    got = folded_query(model, feat, coord, cell_t)
    assert got.shape == ref.shape == (2, 300, 3)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    params = [feat] + list(model.imnet.parameters())
    g_ref = torch.autograd.grad((ref * torch.linspace(-1, 1, 3)).sum(), params)
    g_got = torch.autograd.grad((got * torch.linspace(-1, 1, 3)).sum(), params)
    for a, b in zip(g_got, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_folded_forward_with_the_official_model(official) -> None:
    model, _ = official
    torch.manual_seed(1)
    inp = torch.rand(1, 3, 12, 10) * 2 - 1
    coord = torch.rand(1, 500, 2) * 2 - 1
    cell = torch.full((1, 500, 2), 2 / 30)
    with torch.no_grad():
        torch.testing.assert_close(folded_forward(model, inp, coord, cell), model(inp, coord, cell),
                                   rtol=1e-5, atol=2e-5)


def test_folded_query_under_bf16_autocast_stays_close() -> None:
    torch.manual_seed(2)
    model = build(ModelSpec(encoder_args={"n_resblocks": 1, "n_feats": 16}, hidden=[64, 64]))
    inp = torch.rand(2, 3, 9, 9) * 2 - 1
    coord = torch.rand(2, 200, 2) * 2 - 1
    cell = torch.full((2, 200, 2), 2 / 27)
    with torch.no_grad():
        ref = model(inp, coord, cell)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = folded_forward(model, inp, coord, cell)
    assert got.dtype == torch.float32
    assert (got - ref).abs().max() < 0.02 * ref.abs().max()


def test_lte_fast_query_matches_reference() -> None:
    """LTE: maps [A, Q] once, gather, basis, MLP, blend, plus the bilinear global term."""
    torch.manual_seed(3)
    model = build(ModelSpec.from_dict({"method": "lte", "encoder_args": {"n_resblocks": 1, "n_feats": 8},
                                       "hidden": [32, 16], "hidden_dim": 24}))
    inp = torch.rand(2, 3, 7, 11) * 2 - 1
    coord = torch.rand(2, 300, 2) * 2 - 1
    coord[0, :4] = torch.tensor([[-1.0, -1.0], [1.0, 1.0], [-1.0, 1.0], [0.0, 0.0]])
    cell = torch.rand(2, 300, 2) * 0.3
    ref = model(inp, coord, cell)
    got = folded_forward(model, inp, coord, cell)
    assert got.shape == ref.shape == (2, 300, 3)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    params = [p for p in model.parameters() if p.requires_grad]
    g_ref = torch.autograd.grad((ref * torch.linspace(-1, 1, 3)).sum(), params)
    g_got = torch.autograd.grad((got * torch.linspace(-1, 1, 3)).sum(), params)
    for a, b in zip(g_got, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
