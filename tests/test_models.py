import pytest
import torch

from liif.models import ModelSpec, build


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_edsr_baseline_liif_matches_official_counts():
    m = build(ModelSpec())
    assert n_params(m) == 1_567_323
    assert len(m.state_dict()) == 82
    assert m.in_dim == 580 and n_params(m.imnet) == 346_883


def test_rdn_liif_counts():
    m = build(ModelSpec(encoder="rdn"))
    assert n_params(m) == 22_320_835 and len(m.state_dict()) == 306
    a = build(ModelSpec(encoder="rdn", encoder_args={"RDNconfig": "A"}))
    assert len(a.encoder.RDBs) == 20 and len(a.encoder.RDBs[0].convs) == 6


@pytest.mark.parametrize("unfold,cell,ens,dim", [(True, True, True, 580), (False, True, True, 68),
                                                 (True, False, True, 578), (True, True, False, 580)])
def test_ablation_switches(unfold, cell, ens, dim):
    m = build(ModelSpec(feat_unfold=unfold, cell_decode=cell, local_ensemble=ens, hidden=[16, 16]))
    assert m.in_dim == dim
    out = m(torch.rand(1, 3, 6, 5), torch.rand(1, 7, 2) * 2 - 1, torch.full((1, 7, 2), 0.1))
    assert out.shape == (1, 7, 3)


def test_full_edsr_and_upsampling_variants():
    e = build(ModelSpec(encoder="edsr", encoder_args={"n_resblocks": 2, "n_feats": 32}, hidden=[8]))
    assert e.encoder.out_dim == 32 and e.encoder.body[0].res_scale == 0.1
    base = build(ModelSpec(encoder="edsr-baseline", encoder_args={"no_upsampling": False, "scale": 2}, hidden=None))
    y = base(torch.rand(1, 3, 5, 4), torch.zeros(1, 2, 2), torch.zeros(1, 2, 2))
    assert y.shape == (1, 2, 3)  # nearest lookup of the x2 upsampled image


def test_unknown_spec_rejected():
    with pytest.raises(ValueError, match="unknown model spec keys"):
        ModelSpec.from_dict({"encoder": "edsr-baseline", "bogus": 1})
    with pytest.raises(ValueError, match="unknown encoder"):
        ModelSpec.from_dict({"encoder": "vgg"})


HALF = [0.5, 0.5, 0.5]


def test_spec_dicts_keep_their_keys_order_and_values():
    """``to_dict`` is what .json sidecars, safetensors metadata and the ONNX cache hash hold: the shared
    fields, then the family's own after ``hidden``, normalisation as lists."""
    liif = ModelSpec(encoder="rdn", hidden=[16], local_ensemble=False)
    assert list(liif.to_dict().items()) == [
        ("method", "liif"), ("encoder", "rdn"), ("encoder_args", {}), ("hidden", [16]), ("local_ensemble", False),
        ("feat_unfold", True), ("cell_decode", True), ("inp_mean", HALF), ("inp_std", HALF), ("out_mean", HALF),
        ("out_std", HALF)]
    lte = ModelSpec.from_dict({"method": "lte", "hidden_dim": 8, "out_std": [1, 1, 1]})
    assert list(lte.to_dict().items()) == [
        ("method", "lte"), ("encoder", "edsr-baseline"), ("encoder_args", {}), ("hidden", [256, 256, 256]),
        ("hidden_dim", 8), ("cell_clip_scale", 4.0), ("global_term", True), ("inp_mean", HALF), ("inp_std", HALF),
        ("out_mean", HALF), ("out_std", [1.0, 1.0, 1.0])]
    assert ModelSpec.from_dict(lte.to_dict()) == lte and ModelSpec.from_dict(liif.to_dict()) == liif
    assert not liif.local_ensemble and lte.hidden_dim == 8 and ModelSpec(method="lte", hidden_dim=8).hidden_dim == 8
    lte.hidden_dim = 12  # a family's field is written through to the dict
    assert lte.to_dict()["hidden_dim"] == 12


def test_a_family_field_on_another_family_is_rejected():
    with pytest.raises(ValueError, match=r"unknown model spec keys for method 'liif': \['hidden_dim'\]"):
        ModelSpec.from_dict({"hidden_dim": 8})
    with pytest.raises(ValueError, match=r"unknown model spec keys for method 'lte': \['feat_unfold'\]"):
        ModelSpec(method="lte", feat_unfold=False)
    with pytest.raises(ValueError, match="unknown method 'vit'; expected one of liif, lte"):
        ModelSpec.from_dict({"method": "vit"})
    with pytest.raises(AttributeError, match="has no field 'hidden_dim'"):
        ModelSpec().hidden_dim  # noqa: B018
