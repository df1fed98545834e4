"""A decoder family is one file: the toy family of ``tests/toy_family.py``, registered by a fixture, gets
specs, our checkpoint format and the official reader, the reference and fast (tiled, region) renders,
the training fold, the ONNX export and ``liif weights list`` without a line anywhere else."""
from __future__ import annotations

import json

import pytest
import torch
import toy_family

from liif import checkpoints
from liif.cli import main
from liif.compute import Compute
from liif.errors import LiifError
from liif.models import ModelSpec, build, family
from liif.models.decoder import fast_forward
from liif.models.spec import VARIANTS
from liif.render import Window, plan_axis, plan_tiles, render, render_tiles, working_set
from liif.render.plan import encoder_halo, stripe_plan
from liif.train.step import Step, train_step

ENC = {"n_resblocks": 2, "n_feats": 16}
HALF = [0.5, 0.5, 0.5]


@pytest.fixture()
def toy():
    fam = family.register(toy_family.FAMILY)
    yield fam
    family.unregister(fam.name)


def small_toy(seed: int = 0, cell_term: bool = True) -> toy_family.Toy:
    torch.manual_seed(seed)
    model = build(ModelSpec(method="toy", encoder_args=ENC, hidden=[24, 16], cell_term=cell_term))
    assert isinstance(model, toy_family.Toy)
    for lin in [model.first, *model.tail[:-1]]:  # decoder weights large enough that the decoder matters
        lin.weight.data.mul_(3.0)
    return model.eval()


def test_a_family_in_one_file_builds_from_a_spec(toy):
    spec = ModelSpec(method="toy", encoder_args=ENC, hidden=[24, 16], cell_term=False)
    assert not spec.cell_term and ModelSpec(method="toy").hidden == [32, 32]
    assert list(spec.to_dict().items()) == [
        ("method", "toy"), ("encoder", "edsr-baseline"), ("encoder_args", ENC), ("hidden", [24, 16]),
        ("cell_term", False), ("inp_mean", HALF), ("inp_std", HALF), ("out_mean", HALF), ("out_std", HALF)]
    again = ModelSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec
    model = build(again)
    assert isinstance(model, toy_family.Toy) and model.first.in_features == 16 + 2 and model.map_channels == 24
    variant = build(ModelSpec.variant("edsr-tiny-toy"))
    assert isinstance(variant, toy_family.Toy) and [lin.out_features for lin in variant.tail] == [3]
    with pytest.raises(ValueError, match=r"unknown model spec keys for method 'toy': \['hidden_dim'\]"):
        ModelSpec(method="toy", hidden_dim=8)
    with pytest.raises(ValueError, match=r"unknown model spec keys for method 'liif': \['cell_term'\]"):
        ModelSpec.from_dict({"cell_term": True})
    with pytest.raises(ValueError, match="unknown method 'toys'; expected one of liif, lte, toy"):
        family.get("toys")


def test_a_family_in_one_file_is_refused_twice_and_leaves_with_unregister(toy):
    assert family.register(toy_family.FAMILY) is toy_family.FAMILY  # the same declaration: no-op
    other = toy_family.Family("toy", toy_family.Toy, {}, hidden=[8], build=toy_family._build)
    with pytest.raises(ValueError, match="a different decoder family 'toy' is registered already"):
        family.register(other)
    clash = toy_family.Family("toy2", toy_family.Toy, {}, hidden=[8], build=toy_family._build,
                              official_names=("lte",), from_official=toy_family._from_official)
    with pytest.raises(ValueError, match=r"'lte' reads official \['lte'\] already"):
        family.register(clash)
    family.unregister("toy")
    with pytest.raises(ValueError, match="unknown method 'toy'"):
        ModelSpec(method="toy")
    assert "edsr-tiny-toy" not in VARIANTS


def test_a_family_in_one_file_checkpoints(toy, tmp_path):
    """Our safetensors format round trip, the official format through the family's reader, and
    ``liif weights list`` showing the family's variant."""
    model = small_toy(cell_term=False)
    spec = ModelSpec(method="toy", encoder_args=ENC, hidden=[24, 16], cell_term=False)
    loaded, spec2 = checkpoints.load(checkpoints.save(model, spec, tmp_path / "toy.safetensors"))
    assert spec2 == spec and spec2.to_dict() == spec.to_dict() and isinstance(loaded, toy_family.Toy)
    a, b = model.state_dict(), loaded.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)

    args = {"encoder_spec": {"name": "edsr-baseline", "args": ENC},
            "imnet_spec": {"name": "mlp", "args": {"out_dim": 3, "hidden_list": [24, 16]}}, "cell_term": False}
    torch.save({"model": {"name": "toy", "args": args, "sd": model.state_dict()}}, tmp_path / "official.pth")
    official, spec3 = checkpoints.load(tmp_path / "official.pth")
    assert spec3 == spec and all(torch.equal(a[k], v) for k, v in official.state_dict().items())
    torch.save({"model": {"name": "toy", "args": {**args, "imnet_spec": None}, "sd": {}}}, tmp_path / "bad.pth")
    with pytest.raises(LiifError, match="bad.pth: an official toy model without imnet_spec"):
        checkpoints.load(tmp_path / "bad.pth")
    torch.save({"model": {"name": "vit", "args": args, "sd": {}}}, tmp_path / "vit.pth")
    with pytest.raises(LiifError, match="holds an official 'vit' model, not 'liif' or 'lte' or 'toy'"):
        checkpoints.load(tmp_path / "vit.pth")
    del a["first.bias"]
    torch.save({"model": {"name": "toy", "args": args, "sd": a}}, tmp_path / "short.pth")
    with pytest.raises(LiifError, match=r"does not fit a edsr-baseline TOY model: missing keys \[first.bias\]"):
        checkpoints.load(tmp_path / "short.pth")


def test_a_family_in_one_file_is_listed_by_weights_list(toy, capsys):
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert "edsr-tiny-toy\tdownload by hand\ta toy decoder on a one-block EDSR (tests only)" in out
    assert "edsr-baseline-liif\t" in out and "rdn-lte\t" in out


def tiles_for(model, img, out_hw, budget) -> int:
    h, w = img.shape[-2:]
    rows = plan_axis(out_hw[0], 0, out_hw[0], h, True, torch.device("cpu"))
    cols = plan_axis(out_hw[1], 0, out_hw[1], w, True, torch.device("cpu"))
    per_px, fixed = working_set(model, torch.float32)
    _, stripe_bytes = stripe_plan(model, budget, torch.device("cpu"))
    return len(plan_tiles(rows, cols, h, w, encoder_halo(model), budget, per_px, fixed + stripe_bytes,
                          Window.full(out_hw)))


def test_a_family_in_one_file_renders_fast_as_reference(toy):
    """The fast route in many tiles and in regions equals the reference route (fp32)."""
    model = small_toy(1)
    img = torch.rand(3, 90, 70, generator=torch.Generator().manual_seed(2))
    out_hw = (250, 190)
    budget = 4 << 20
    assert tiles_for(model, img, out_hw, budget) >= 4
    ref = render(model, img, out_hw, method="reference")
    bicubic = torch.nn.functional.interpolate(model.normalize(img[None]), out_hw, mode="bicubic")[0]
    assert (ref - bicubic).std() > 0.05  # the decoder's output is far from smooth: parity means something
    assert (render(model, img, out_hw, max_memory=budget) - ref).abs().max() <= 1e-5
    for win in (Window(101, 77, 63, 91), Window(0, 150, 250, 40), Window(249, 189, 1, 1)):
        got = render(model, img, out_hw, win, max_memory=budget)
        assert (got - ref[:, win.y:win.y + win.h, win.x:win.x + win.w]).abs().max() <= 1e-5, win


def test_a_family_in_one_file_trains_through_the_fold(toy):
    """The training fold gives the reference's loss and gradients; a training step moves the weights."""
    model = small_toy(3).train()
    g = torch.Generator().manual_seed(4)
    batch = {"inp": torch.rand(2, 3, 9, 11, generator=g), "coord": torch.rand(2, 300, 2, generator=g) * 2 - 1,
             "cell": torch.rand(2, 300, 2, generator=g) * 0.3, "gt": torch.rand(2, 300, 3, generator=g)}
    inp, gt = model.normalize(batch["inp"]), (batch["gt"] - 0.5) / 0.5
    params = [p for p in model.parameters() if p.requires_grad]
    losses, grads = [], []
    for forward in (model, lambda *a: fast_forward(model, *a)):
        loss = torch.nn.functional.l1_loss(forward(inp, batch["coord"], batch["cell"]), gt)
        losses.append(loss.item())
        grads.append(torch.autograd.grad(loss, params))
    assert losses[0] == pytest.approx(losses[1], rel=1e-6, abs=1e-7)
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)
    before = [p.detach().clone() for p in params]
    opt = torch.optim.Adam(params, lr=1e-3)
    loss = train_step(Step(model, fold=True), model, opt, torch.amp.GradScaler("cpu", enabled=False), batch,
                      Compute.exact(torch.device("cpu"), "fp32"))
    assert loss == pytest.approx(losses[0], rel=1e-6)
    assert all(not torch.equal(p, q) for p, q in zip(params, before, strict=True))


def test_a_family_in_one_file_exports_to_onnx(toy, tmp_path):
    """The ONNX export renders with ONNX Runtime what torch renders, in tiles, on a region."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from liif.export.onnx import GRAPHS, MANIFEST, OrtBackend, backend_for, export

    model = small_toy(5)
    spec = ModelSpec(method="toy", encoder_args=ENC, hidden=[24, 16])
    out = export(model, spec, tmp_path / "toy")
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["graphs"] == list(GRAPHS) and manifest["spec"] == spec.to_dict()
    backend = backend_for("onnxruntime", model, spec, out)
    assert isinstance(backend, OrtBackend)
    img = torch.rand(3, 60, 50, generator=torch.Generator().manual_seed(6))
    out_hw, win = (170, 140), Window(7, 11, 150, 120)
    got = torch.empty(3, win.h, win.w)
    n = 0
    for (y, x), tile in render_tiles(model, img, out_hw, win, "fp32", 4 << 20, backend=backend):
        got[:, y:y + tile.shape[1], x:x + tile.shape[2]] = tile
        n += 1
    want = render(model, img, out_hw, win, max_memory=4 << 20)
    ref = render(model, img, out_hw, win, method="reference")
    assert n >= 4
    assert (got - want).abs().max() <= 1e-4 and (got - ref).abs().max() <= 1e-4
