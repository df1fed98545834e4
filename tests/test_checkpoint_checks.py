"""Checkpoints are checked before the model is built: the spec's values (types, ranges, sizes), malformed
JSON and official ``.pth`` layouts, the tensors' names and shapes against the spec (on the meta device),
then the weights themselves (floating point, finite), and the two specs of our format must agree. Each
problem is one LiifError line, never a traceback, a huge allocation or a silently flat render."""
import json

import pytest
import torch
from safetensors.torch import save_file

from conftest import COMIC, one_error_line, run_cli
from liif import checkpoints
from liif.errors import LiifError
from liif.models import ModelSpec, build

TINY = {"encoder": "edsr-baseline", "encoder_args": {"n_resblocks": 1, "n_feats": 8}, "hidden": [16]}


@pytest.fixture()
def tiny():
    spec = ModelSpec.from_dict(TINY)
    torch.manual_seed(0)
    return build(spec), spec


@pytest.fixture()
def no_build(monkeypatch):
    """Fail the test if a checkpoint builds its model for real before the checks refuse it."""
    def boom(spec):
        raise AssertionError(f"the model was built before the checkpoint was checked: {spec}")

    monkeypatch.setattr(checkpoints, "build", boom)


def sidecar_only(tmp_path, sd, spec_text):
    """A safetensors file without an embedded spec (another tool wrote it) and its .json spec."""
    p = tmp_path / "m.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(p))
    (tmp_path / "m.json").write_bytes(spec_text if isinstance(spec_text, bytes) else spec_text.encode())
    return p


def official_pth(tmp_path, model, args=None, **fields):
    args = args if args is not None else {
        "encoder_spec": {"name": "edsr-baseline", "args": {"n_resblocks": 1, "n_feats": 8}},
        "imnet_spec": {"name": "mlp", "args": {"out_dim": 3, "hidden_list": [16]}}}
    ck = {"model": {"name": "liif", "args": args, "sd": model.state_dict(), **fields}}
    torch.save(ck, tmp_path / "o.pth")
    return tmp_path / "o.pth"


@pytest.mark.parametrize("change,message", [
    ({"hidden": "abc"}, "hidden must be a list of layer widths (whole numbers), got 'abc'"),
    ({"hidden": -5}, "hidden must be a list of layer widths (whole numbers), got -5"),
    ({"hidden": 256.5}, "hidden must be a list of layer widths (whole numbers), got 256.5"),
    ({"hidden": [16.5]}, "hidden[0] must be a whole number from 1 to 65536, got 16.5"),
    ({"hidden": [10**9]}, "hidden[0] must be from 1 to 65536, got 1000000000"),
    ({"hidden": []}, "hidden must name at least one layer for a LIIF model"),
    ({"encoder_args": [1, 2]}, "encoder_args must be a mapping of names to values, got [1, 2]"),
    ({"encoder_args": {"n_feat": 8}}, "unknown EDSR encoder_args ['n_feat']; known: n_resblocks, n_feats"),
    ({"encoder_args": {"n_feats": 10**9}}, "encoder_args.n_feats must be from 1 to 4096, got 1000000000"),
    ({"encoder_args": {"n_resblocks": 10**9}}, "encoder_args.n_resblocks must be from 0 to 256, got 1000000000"),
    ({"encoder_args": {"n_feats": "64"}}, "encoder_args.n_feats must be a whole number from 1 to 4096, got '64'"),
    ({"encoder_args": {"scale": 5}}, "encoder_args.scale must be one of 1, 2, 3, 4, 8, 16, got 5"),
    ({"inp_mean": [0.5]}, "inp_mean must be a list of 3 numbers (R, G, B), got [0.5]"),
    ({"inp_mean": [0.5, "x", 0.5]}, "inp_mean[1] must be a finite number, got 'x'"),
    ({"out_std": [1, 1, float("nan")]}, "out_std[2] must be a finite number, got nan"),
    ({"inp_std": [0, 0, 0]}, "inp_std must be positive (at least 1e-06) in every channel, got [0.0, 0.0, 0.0]"),
    ({"method": ["liif"]}, "method must be a string, got ['liif']"),
    ({"encoder": 5}, "encoder must be a string, got 5"),
    ({"local_ensemble": "no"}, "local_ensemble must be true or false, got 'no'"),
    ({"method": "lte", "hidden_dim": "abc"}, "hidden_dim must be a whole number from 2 to 65536, got 'abc'"),
    ({"method": "lte", "hidden_dim": 7}, "LTE's hidden_dim must be even, got 7"),
    ({"method": "lte", "hidden": None}, "an LTE model needs an MLP"),
    ({"method": "lte", "cell_clip_scale": -1}, "cell_clip_scale must be from 1e-06 to inf, got -1"),
    ({"encoder": "rdn", "encoder_args": {"D": 256, "C": 64}}, "encoder_args D x C is 256 x 64 = 16384 dense"),
    ({"encoder": "rdn", "encoder_args": {"RDNkSize": 4}}, "encoder_args.RDNkSize must be one of 1, 3, 5, 7, got 4"),
])
def test_bad_spec_values_are_one_line(tmp_path, tiny, no_build, change, message):
    model, _ = tiny
    p = sidecar_only(tmp_path, model.state_dict(), json.dumps({**TINY, **change}))
    with pytest.raises(LiifError) as e:
        checkpoints.load(p)
    assert str(e.value).startswith(f"bad model spec {tmp_path / 'm.json'}: ") and message in str(e.value)


@pytest.mark.parametrize("text,message", [
    (b"\xff\xfe{\"hidden\": [16]}", "is not UTF-8 text (byte 0)"),
    ("[" * 100_000 + "]" * 100_000, "is JSON nested too deeply to be a model spec"),
    ('{"hidden": [16]', "is not valid JSON: Expecting ',' delimiter"),
    ("[1, 2]", "a model spec must be a mapping of names to values, got [1, 2]"),
])
def test_malformed_spec_json_is_one_line(tmp_path, tiny, no_build, text, message):
    model, _ = tiny
    p = sidecar_only(tmp_path, model.state_dict(), text)
    with pytest.raises(LiifError, match="m.json") as e:
        checkpoints.load(p)
    assert message in str(e.value)


def test_an_inflated_spec_is_refused_before_it_is_built(tmp_path, tiny, no_build):
    """n_feats 8 -> 600 in the .json: the shapes the spec builds (meta device) against the file's header."""
    model, _ = tiny
    p = sidecar_only(tmp_path, model.state_dict(), json.dumps({**TINY, "encoder_args": {"n_resblocks": 1,
                                                                                          "n_feats": 600}}))
    with pytest.raises(LiifError, match=r"does not fit its model spec: size mismatch for encoder.head.0.weight: "
                                        r"the file has \[8, 3, 3, 3\], the spec builds \[600, 3, 3, 3\] \(\+8 more\)"):
        checkpoints.load(p)
    # above MAX_PARAMS (64 blocks of 4096 channels: 19 G parameters, 73 GiB): refused on the meta device
    p = sidecar_only(tmp_path, model.state_dict(), json.dumps({**TINY, "encoder_args": {"n_resblocks": 64,
                                                                                          "n_feats": 4096}}))
    with pytest.raises(LiifError, match=r"the model of this spec would have 19,479,580,827 parameters "
                                        r"\(72.6 GiB in fp32\); at most 1,000,000,000"):
        checkpoints.load(p)


@pytest.mark.parametrize("edit,message", [
    (lambda ck: ck["model"].update(args=[1, 2]), "model.args must be a mapping, found a list"),
    (lambda ck: ck["model"]["args"]["imnet_spec"].pop("args"), "imnet_spec must be a mapping with an 'args' mapping"),
    (lambda ck: ck["model"]["args"]["imnet_spec"]["args"].update(hidden_list="abc"),
     "imnet_spec.args.hidden_list must be a list of widths, got abc"),
    (lambda ck: ck["model"].update(sd=[1, 2]), "model.sd must be a mapping of names to tensors, found a list"),
    (lambda ck: ck["model"]["sd"].update({"imnet.layers.0.bias": 3}), "model.sd['imnet.layers.0.bias'] is a int, "
                                                                       "not a dense tensor"),
    (lambda ck: ck["model"]["sd"].update({3: torch.zeros(1)}), "model.sd has the key '3' (int); tensor names are"),
    (lambda ck: ck["model"]["sd"].update({"imnet.layers.0.bias": torch.zeros(16).to_sparse()}),
     "model.sd['imnet.layers.0.bias'] is a torch.sparse_coo tensor, not a dense tensor"),
    (lambda ck: ck["model"]["args"].update(encoder_spec="edsr-baseline"),
     "model.args.encoder_spec must be a mapping with 'name' and 'args', got edsr-baseline"),
    (lambda ck: ck["model"]["args"].update(local_ensemble="yes"), "local_ensemble must be true or false, got 'yes'"),
    (lambda ck: ck["model"].update(name="lte", args={**ck["model"]["args"], "hidden_dim": "abc"}),
     "hidden_dim must be a whole number from 2 to 65536, got 'abc'"),
    (lambda ck: ck["model"]["args"]["encoder_spec"]["args"].update(n_feats=1500),
     "size mismatch for encoder.head.0.weight: the file has [8, 3, 3, 3], the spec builds [1500, 3, 3, 3]"),
])
def test_odd_official_files_are_one_line(tmp_path, tiny, no_build, edit, message):
    model, _ = tiny
    p = official_pth(tmp_path, model)
    ck = torch.load(p, weights_only=True)
    edit(ck)
    torch.save(ck, p)
    with pytest.raises(LiifError) as e:
        checkpoints.load(p)
    assert message in str(e.value) and str(p) in str(e.value)


def test_partial_openmmlab_files_are_one_line(tmp_path, no_build):
    from test_checkpoints import to_openmmlab

    m = build(ModelSpec(encoder="rdn", encoder_args={"D": 2, "C": 2, "G": 4, "G0": 8}, hidden=[8]))
    sd = to_openmmlab(m.state_dict(), "rdn")
    del sd["generator.rdbs.0.layers.0.conv.weight"]
    torch.save({"state_dict": sd}, tmp_path / "mm.pth")
    with pytest.raises(LiifError, match=r"incomplete OpenMMLab checkpoint: "
                                        r"no key 'generator.rdbs.0.layers.0.conv.weight'"):
        checkpoints.load(tmp_path / "mm.pth")
    sd = to_openmmlab(m.state_dict(), "rdn")
    sd["generator.imnet.layers.0.weight"] = "w"
    torch.save({"state_dict": sd}, tmp_path / "mm.pth")
    with pytest.raises(LiifError, match=r"state_dict\['generator.imnet.layers.0.weight'\] is a str, not a dense"):
        checkpoints.load(tmp_path / "mm.pth")


# -- the weights (item 9) -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused(tmp_path, tiny, value):
    model, spec = tiny
    with torch.no_grad():
        model.imnet.layers[2].weight[1, 3] = value
    checkpoints.save(model, spec, tmp_path / "m.safetensors")
    with pytest.raises(LiifError, match=r"tensor imnet.layers.2.weight has 1 NaN or infinite values \(of 48\)"):
        checkpoints.load(tmp_path / "m.safetensors")
    p = official_pth(tmp_path, model)
    with pytest.raises(LiifError, match=r"o.pth: tensor imnet.layers.2.weight has 1 NaN or infinite values"):
        checkpoints.load(p)


def test_integer_weights_are_refused(tmp_path, tiny, no_build):
    model, spec = tiny
    sd = {k: v.round().to(torch.int32) for k, v in model.state_dict().items()}
    save_file(sd, str(tmp_path / "m.safetensors"), metadata={checkpoints.SPEC_KEY: json.dumps(spec.to_dict())})
    with pytest.raises(LiifError, match=r"tensor encoder.add_mean.bias is I32; weights must be floating point"):
        checkpoints.load(tmp_path / "m.safetensors")
    torch.save({"model": {"name": "liif", "args": torch.load(official_pth(tmp_path, model))["model"]["args"],
                          "sd": sd}}, tmp_path / "i.pth")
    with pytest.raises(LiifError, match=r"tensor encoder.add_mean.bias is int32; weights must be floating point"):
        checkpoints.load(tmp_path / "i.pth")


def test_disagreeing_specs_are_refused_naming_both_files(tmp_path, tiny):
    model, spec = tiny
    p = checkpoints.save(model, spec, tmp_path / "m.safetensors")
    # the same model written otherwise (defaults spelled out, key order) agrees
    (tmp_path / "m.json").write_text(json.dumps({"hidden": [16], "local_ensemble": True, "encoder": "edsr-baseline",
                                                 "encoder_args": {"n_feats": 8, "n_resblocks": 1,
                                                                  "no_upsampling": True, "res_scale": 1.0}}))
    assert checkpoints.load(p)[1].encoder_args == {"n_feats": 8, "n_resblocks": 1, "no_upsampling": True,
                                                   "res_scale": 1.0}  # the .json's
    (tmp_path / "m.json").write_text(json.dumps({**TINY, "out_mean": [0.4, 0.5, 0.5]}))
    with pytest.raises(LiifError) as e:
        checkpoints.load(p)
    assert str(e.value) == (f"{tmp_path / 'm.json'} and the model spec inside {p} disagree (out_mean; out_mean: "
                            "[0.4, 0.5, 0.5] vs [0.5, 0.5, 0.5]); remove m.json to use the embedded spec, or save "
                            "both again")
    (tmp_path / "m.json").unlink()
    assert checkpoints.load(p)[1] == spec


def test_cli_refuses_bad_weights_in_one_line(tmp_path, tiny, capsys):
    model, spec = tiny
    with torch.no_grad():
        model.imnet.layers[0].bias.fill_(float("nan"))
    checkpoints.save(model, spec, tmp_path / "m.safetensors")
    out = tmp_path / "out.png"
    rc, _, err = run_cli(["upscale", str(COMIC), "-o", str(out), "--scale", "2", "--weights",
                          str(tmp_path / "m.safetensors")], capsys)
    assert rc == 1 and "tensor imnet.layers.0.bias has 16 NaN or infinite values" in one_error_line(err)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["m.json", "m.safetensors"]


def test_sizing_a_model_on_the_meta_device_stays_cheap():
    """``shapes`` builds every registered variant on the meta device without importing torch's Python
    decompositions (an op without a C++ meta kernel, e.g. torch.eye, pulls in torch._dynamo: 80 MB and
    seconds on every checkpoint load)."""
    import subprocess
    import sys

    from conftest import ROOT

    code = ("import sys, torch\n"
            "from liif.models import ModelSpec\n"
            "from liif.models.spec import VARIANTS, shapes\n"
            "n = {name: len(shapes(ModelSpec.variant(name))) for name in VARIANTS}\n"
            "print(n, 'torch._dynamo' in sys.modules)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert res.returncode == 0, res.stderr
    counts, dynamo = res.stdout.rsplit(" ", 1)
    assert dynamo.strip() == "False"
    assert {"'edsr-baseline-liif': 82", "'rdn-liif': 306", "'edsr-baseline-lte': 85", "'rdn-lte': 309"} <= \
        set(counts.strip("{}").split(", ")), counts
