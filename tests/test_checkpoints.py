import re

import pytest
import torch
from safetensors.torch import save_file

from conftest import GOLDEN, golden_cases, load_rgb
from liif import checkpoints
from liif.errors import LiifError
from liif.models import ModelSpec, build
from liif.models.edsr import DIV2K_MEAN


def to_openmmlab(sd: dict, encoder: str) -> dict:
    """Our (official) key layout -> OpenMMLab 'generator.*' keys, as OpenMMLab mmagic names them."""
    out = {}
    for k, v in sd.items():
        if "sub_mean" in k or "add_mean" in k:
            continue
        if encoder == "edsr":
            k = re.sub(r"^encoder\.head\.0\.", "conv_first.", k)
            k = re.sub(r"^encoder\.body\.16\.", "conv_after_body.", k)
            k = re.sub(r"^encoder\.body\.(\d+)\.body\.0\.", r"body.\1.conv1.", k)
            k = re.sub(r"^encoder\.body\.(\d+)\.body\.2\.", r"body.\1.conv2.", k)
        else:
            k = k.replace("encoder.SFENet1.", "sfe1.").replace("encoder.SFENet2.", "sfe2.")
            k = re.sub(r"^encoder\.RDBs\.(\d+)\.convs\.(\d+)\.conv\.0\.", r"rdbs.\1.layers.\2.conv.", k)
            k = re.sub(r"^encoder\.RDBs\.(\d+)\.LFF\.", r"rdbs.\1.lff.", k)
            k = re.sub(r"^encoder\.GFF\.", "gff.", k)
        out["generator." + k] = v
    return out


def test_official_checkpoint_spec(official):
    model, spec = official
    assert spec.encoder == "edsr-baseline" and spec.hidden == [256] * 4
    assert spec.inp_mean == (0.5, 0.5, 0.5) and spec.local_ensemble and spec.feat_unfold and spec.cell_decode


def test_official_without_optimizer_state(official, tmp_path):
    model, _ = official
    args = {"encoder_spec": {"name": "edsr-baseline", "args": {"no_upsampling": True}},
            "imnet_spec": {"name": "mlp", "args": {"out_dim": 3, "hidden_list": [256] * 4}}}
    ck = {"model": {"name": "liif", "args": args, "sd": model.state_dict()}}
    torch.save(ck, tmp_path / "no-opt.pth")
    m2, _ = checkpoints.load(tmp_path / "no-opt.pth")
    assert all(v.equal(m2.state_dict()[k]) for k, v in model.state_dict().items())


def test_openmmlab_edsr_norm_checkpoint(official, tmp_path):
    """An OpenMMLab LIIF-EDSR file: renamed keys, no MeanShift, DIV2K-mean normalisation."""
    model, _ = official
    ck = {"meta": {"mmedit_version": "0.14.0"}, "state_dict": to_openmmlab(model.state_dict(), "edsr"),
          "optimizer": {}}
    torch.save(ck, tmp_path / "mm.pth")
    m2, spec = checkpoints.load(tmp_path / "mm.pth")
    assert spec.inp_mean == DIV2K_MEAN and spec.inp_std == (1.0, 1.0, 1.0) and spec.out_mean == DIV2K_MEAN
    # same raw decoder; normalisation recorded: input (x - mean) / 1, output pred * 1 + mean
    case = golden_cases()[0]
    img = load_rgb(GOLDEN / case["input"])
    x = torch.rand(1, 3, 9, 7)
    assert torch.equal(m2.encoder(x), model.encoder(x))
    assert torch.allclose(m2.normalize(img[None]), img[None] - torch.tensor(DIV2K_MEAN).view(1, 3, 1, 1))
    assert torch.allclose(m2.denormalize(torch.zeros(2, 3)), torch.tensor(DIV2K_MEAN).expand(2, 3))
    # the decoder half equals the official one on golden coordinates
    feat = model.encoder(model.normalize(img[None]))
    coord = torch.rand(1, 50, 2) * 2 - 1
    cell = torch.full((1, 50, 2), 0.01)
    assert torch.equal(m2.query(feat, coord, cell), model.query(feat, coord, cell))


def test_openmmlab_rdn_checkpoint(tmp_path):
    spec = ModelSpec(encoder="rdn", encoder_args={"D": 2, "C": 3, "G": 8, "G0": 16}, hidden=[32, 32])
    m = build(spec)
    torch.save({"state_dict": to_openmmlab(m.state_dict(), "rdn")}, tmp_path / "rdn.pth")
    m2, spec2 = checkpoints.load(tmp_path / "rdn.pth")
    assert spec2.encoder_args == {"G0": 16, "RDNkSize": 3, "D": 2, "C": 3, "G": 8} and spec2.hidden == [32, 32]
    assert spec2.inp_mean == (0.5, 0.5, 0.5)
    x = torch.rand(1, 3, 6, 6)
    c = torch.rand(1, 5, 2) * 2 - 1
    assert torch.equal(m2(x, c, torch.full((1, 5, 2), 0.1)), m(x, c, torch.full((1, 5, 2), 0.1)))


def test_own_format_round_trip_rdn(tmp_path):
    spec = ModelSpec(encoder="rdn", encoder_args={"RDNconfig": "A", "D": 2}, hidden=[16], local_ensemble=False)
    m = build(spec)
    checkpoints.save(m, spec, tmp_path / "r.safetensors")
    m2, spec2 = checkpoints.load(tmp_path / "r.safetensors")
    assert spec2 == spec and all(v.equal(m2.state_dict()[k]) for k, v in m.state_dict().items())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "r.safetensors"]  # no temp files left


def test_mismatched_file_names_keys(official, tmp_path):
    model, _ = official
    sd = dict(model.state_dict())
    del sd["imnet.layers.8.bias"]
    sd["encoder.extra.weight"] = torch.zeros(1)
    ck = {"model": {"name": "liif", "args": {"encoder_spec": {"name": "edsr-baseline", "args": {}},
                                             "imnet_spec": {"name": "mlp", "args": {"hidden_list": [256] * 4}}},
                    "sd": sd}}
    torch.save(ck, tmp_path / "bad.pth")
    with pytest.raises(LiifError,
                       match=r"missing keys \[imnet.layers.8.bias\], unexpected keys \[encoder.extra.weight\]"):
        checkpoints.load(tmp_path / "bad.pth")


def test_shape_mismatch_is_reported(official, tmp_path):
    model, spec = official
    save_file(dict(model.state_dict()), str(tmp_path / "m.safetensors"))  # no embedded spec: the .json is the spec
    (tmp_path / "m.json").write_text('{"encoder": "edsr-baseline", "hidden": [128, 256, 256, 256]}')
    with pytest.raises(LiifError, match=r"does not fit its model spec: size mismatch for imnet.layers.0.weight: "
                                        r"the file has \[256, 580\], the spec builds \[128, 580\] \(\+2 more\)"):
        checkpoints.load(tmp_path / "m.safetensors")


@pytest.mark.parametrize("content,match", [
    (b"hello, not a checkpoint", "not a PyTorch checkpoint"),
    ("torch-list", "not a LIIF/LTE/LMLIIF/LMLTE checkpoint.*found a list"),
    ("torch-dict", r"not a LIIF/LTE/LMLIIF/LMLTE checkpoint.*dict with keys \[epoch, weights\]"),
    ("mm-other", "not an OpenMMLab LIIF checkpoint"),
])
def test_wrong_kind_of_file(tmp_path, content, match):
    p = tmp_path / "x.pth"
    if content == "torch-list":
        torch.save([1, 2], p)
    elif content == "torch-dict":
        torch.save({"weights": torch.zeros(2), "epoch": 3}, p)
    elif content == "mm-other":
        torch.save({"state_dict": {"backbone.conv.weight": torch.zeros(1)}}, p)
    else:
        p.write_bytes(content)
    with pytest.raises(LiifError, match=match):
        checkpoints.load(p)


def test_missing_checkpoint():
    with pytest.raises(LiifError, match="checkpoint not found"):
        checkpoints.load("/nonexistent/w.pth")
