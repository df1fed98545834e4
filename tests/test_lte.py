"""LTE, the second decoder family: parity with the official code's outputs (tests/data/golden/lte),
fast route == reference route at every size (tiles, regions, budgets), the cell clip, checkpoint
formats, and the commands (upscale, eval, export, bench) on an LTE checkpoint."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import GOLDEN, load_rgb, lte_golden, make_eval_set
from liif import checkpoints
from liif.models import LTE, ModelSpec, build
from liif.render import Window, plan_axis, plan_tiles, render, working_set
from liif.render.plan import encoder_halo, stripe_plan

INDEX = lte_golden()
CASES = INDEX["cases"]
IDS = [c["npy"][:-4] for c in CASES]


def case_input(case: dict) -> torch.Tensor:
    return load_rgb(GOLDEN / "lte" / case["input"])


def test_official_checkpoint_reads_as_lte(lte):
    model, spec = lte
    assert isinstance(model, LTE) and spec.method == "lte"
    assert spec.hidden == [256, 256, 256] and spec.hidden_dim == 256 and spec.cell_clip_scale == 4.0
    assert model.map_channels == 512 and model.has_global_term
    keys = set(model.state_dict())
    assert {"coef.weight", "coef.bias", "freq.weight", "freq.bias", "phase.weight"} <= keys
    assert model.phase.weight.shape == (128, 2)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_cell_clip_matches_the_index(lte, case):
    """The cell factor the official test script used for each golden is the model's render cell."""
    model, _ = lte
    H, W = case["out_hw"]
    cy, cx = model.render_cell((H, W), tuple(case["input_hw"]))
    assert cy == pytest.approx(2 / H * case["cell_factor"], rel=1e-12)
    assert cx == pytest.approx(2 / W * case["cell_factor"], rel=1e-12)


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("method", ["reference", "fast"])
def test_raw_output_matches_golden(lte, case, method):
    model, _ = lte
    out = render(model, case_input(case), tuple(case["out_hw"]), method=method)
    got = out.permute(1, 2, 0).numpy()
    gold = np.load(GOLDEN / "lte" / case["npy"])
    assert got.shape == gold.shape
    assert case["decoder_share_std"] > 0.2  # the decoder's share of the output is large: parity means something
    assert np.abs(got - gold).max() <= 1e-5


def test_cell_clip_changes_the_output_beyond_x4(lte):
    """Without the clip the x12 golden is not reproduced: the setting is live, not decorative."""
    model, spec = lte
    case = next(c for c in CASES if c["cell_factor"] > 1)
    unclipped = build(ModelSpec.from_dict({**spec.to_dict(), "cell_clip_scale": None}))
    unclipped.load_state_dict(model.state_dict())
    out = render(unclipped.eval(), case_input(case), tuple(case["out_hw"])).permute(1, 2, 0).numpy()
    assert np.abs(out - np.load(GOLDEN / "lte" / case["npy"])).max() > 1e-3


def small_lte(seed: int = 0) -> LTE:
    torch.manual_seed(seed)
    model = build(ModelSpec.from_dict({"method": "lte", "encoder_args": {"n_resblocks": 2, "n_feats": 16},
                                       "hidden": [48, 48], "hidden_dim": 32}))
    for p in model.parameters():  # decoder weights large enough that the decoder matters
        p.data.mul_(3.0 if p.dim() > 1 and p.shape[-1] != 3 else 1.0)
    assert isinstance(model, LTE)
    return model.eval()


@pytest.mark.parametrize("out_hw", [(37, 41), (96, 80), (230, 170), (17, 300)])
def test_fast_equals_reference_at_every_size(out_hw):
    model = small_lte()
    img = torch.rand(3, 23, 19, generator=torch.Generator().manual_seed(1))
    ref = render(model, img, out_hw, method="reference")
    fast = render(model, img, out_hw)
    assert (fast - ref).abs().max() <= 1e-5


def tiles_for(model, img, out_hw, budget):
    h, w = img.shape[-2:]
    rows = plan_axis(out_hw[0], 0, out_hw[0], h, True, torch.device("cpu"))
    cols = plan_axis(out_hw[1], 0, out_hw[1], w, True, torch.device("cpu"))
    per_px, fixed = working_set(model, torch.float32)
    _, stripe_bytes = stripe_plan(model, budget, torch.device("cpu"))
    return plan_tiles(rows, cols, h, w, encoder_halo(model), budget, per_px, fixed + stripe_bytes,
                      Window.full(out_hw))


def test_tiles_and_regions_equal_the_reference():
    """A budget that forces many tiles (each with its own LR crop for the global term), and regions."""
    model = small_lte(2)
    img = torch.rand(3, 90, 70, generator=torch.Generator().manual_seed(3))
    out_hw = (250, 190)
    budget = 5 << 20
    assert len(tiles_for(model, img, out_hw, budget)) >= 4
    ref = render(model, img, out_hw, method="reference")
    tiled = render(model, img, out_hw, max_memory=budget)
    assert (tiled - ref).abs().max() <= 1e-5
    for win in (Window(0, 0, 40, 50), Window(101, 77, 63, 91), Window(249, 189, 1, 1), Window(3, 150, 247, 40)):
        got = render(model, img, out_hw, win, max_memory=budget)
        assert (got - ref[:, win.y:win.y + win.h, win.x:win.x + win.w]).abs().max() <= 1e-5, win


def test_own_format_round_trip(lte, tmp_path):
    model, spec = lte
    path = checkpoints.save(model, spec, tmp_path / "lte.safetensors")
    spec_json = json.loads(path.with_suffix(".json").read_text())
    assert spec_json["method"] == "lte" and "feat_unfold" not in spec_json  # only LTE's own fields
    model2, spec2 = checkpoints.load(path)
    assert spec2 == spec and isinstance(model2, LTE)
    case = CASES[0]
    a = render(model, case_input(case), tuple(case["out_hw"]))
    b = render(model2, case_input(case), tuple(case["out_hw"]))
    assert torch.equal(a, b)


def test_wrong_keys_are_refused(lte, tmp_path):
    from liif.errors import LiifError

    obj = torch.load(GOLDEN / "lte" / INDEX["checkpoint"], map_location="cpu", weights_only=True)
    del obj["model"]["sd"]["phase.weight"]
    torch.save(obj, tmp_path / "broken.pth")
    with pytest.raises(LiifError, match=r"does not fit a edsr-baseline LTE model: missing keys \[phase.weight\]"):
        checkpoints.load(tmp_path / "broken.pth")


def test_published_lte_rows_sit_beside_liif():
    """The LTE paper's tables are in ``liif eval``'s published figures, side by side with LIIF's."""
    from liif.eval import published

    div2k = {p.model: p.psnr for p in published.lookup("div2k", 4, "div2k")}
    assert div2k["EDSR-baseline-LTE"] == 29.04 and div2k["EDSR-baseline-LIIF"] == 29.00
    set14 = {p.model: p.psnr for p in published.lookup("set14", 4, "benchmark")}
    assert set14 == {"RDN-LIIF": 28.80, "RDN-LTE": 28.88}
    assert published.paper_curve("div2k", "div2k", "edsr-baseline", "lte")[30] == 20.53
    assert published.paper_curve("urban100", "benchmark", "rdn", "lte") == {2: 33.04, 3: 28.97, 4: 26.81}
    assert published.lookup("set5", 6, "benchmark")[0].model == "RDN-LIIF"  # LTE's table stops at x4


def test_eval_command_on_an_lte_checkpoint(lte_path, tmp_path, capsys):
    """``liif eval`` reads the official LTE format and prints LIIF's and LTE's published rows together."""
    from liif.cli import main

    root = make_eval_set(tmp_path / "Set5", [(48, 40)], lr_scales=(4,))  # named Set5: its published rows apply
    rc = main(["eval", "--weights", str(lte_path), "--dataset", str(root), "--scales", "4",
               "--json", str(tmp_path / "r.json"), "--no-progress"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "RDN-LIIF" in out and "RDN-LTE" in out
    rec = json.loads((tmp_path / "r.json").read_text())[0]
    assert rec["scale"] == 4 and rec["n_images"] == 1
    same = {p["model"]: p["same_model"] for p in rec["published"]}
    assert same == {"RDN-LIIF": False, "RDN-LTE": False}  # ours is EDSR-baseline-LTE


def test_onnx_export_of_lte_matches_torch(lte, tmp_path):
    """Four graphs (global.onnx for the bilinear term); ONNX Runtime renders what torch renders."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from liif.export.onnx import GLOBAL, MANIFEST, OrtBackend, export
    from liif.render import render_tiles

    model, spec = lte
    out = export(model, spec, tmp_path / "lte")
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["graphs"] == ["encoder.onnx", "maps.onnx", "decoder.onnx", GLOBAL]
    assert manifest["spec"]["method"] == "lte"
    case = next(c for c in CASES if c["cell_factor"] > 1)
    img, out_hw = case_input(case), tuple(case["out_hw"])
    win = Window(50, 60, 200, 150)
    got = torch.empty(3, win.h, win.w)
    for (y, x), tile in render_tiles(model, img, out_hw, win, "fp32", 40 << 20, backend=OrtBackend(out)):
        got[:, y:y + tile.shape[1], x:x + tile.shape[2]] = tile
    gold = torch.from_numpy(np.load(GOLDEN / "lte" / case["npy"])).permute(2, 0, 1)
    assert (got - gold[:, win.y:win.y + win.h, win.x:win.x + win.w]).abs().max() <= 1e-4


def test_cli_upscale_with_official_lte_weights(lte, lte_path, tmp_path):
    """`liif upscale --weights lte.pth` writes the rounded render of the fast route (x12: clipped cell)."""
    from PIL import Image

    from liif.cli import main

    case = next(c for c in CASES if c["cell_factor"] > 1)
    out = tmp_path / "up.png"
    H, W = case["out_hw"]
    assert main(["upscale", str(GOLDEN / "lte" / case["input"]), "--size", f"{W}x{H}", "--weights", str(lte_path),
                 "--precision", "fp32", "-o", str(out), "--no-progress"]) == 0
    got = np.asarray(Image.open(out), dtype=np.int16)
    gold = np.load(GOLDEN / "lte" / case["npy"]) * 0.5 + 0.5
    want = np.round(np.clip(gold, 0, 1) * 255).astype(np.int16)
    assert got.shape == want.shape == (H, W, 3)
    assert np.abs(got - want).max() <= 1 and (got != want).mean() < 1e-3


def test_global_term_ablation_switch():
    """``global_term: false`` (our ablation switch) removes exactly the bilinear term, on both routes."""
    from liif.geometry import sample_bilinear

    model = small_lte(4)
    spec = ModelSpec.from_dict({"method": "lte", "encoder_args": {"n_resblocks": 2, "n_feats": 16},
                                "hidden": [48, 48], "hidden_dim": 32, "global_term": False})
    ablated = build(spec).eval()
    ablated.load_state_dict(model.state_dict())
    assert not ablated.has_global_term and spec.to_dict()["global_term"] is False
    img = torch.rand(3, 21, 17, generator=torch.Generator().manual_seed(5))
    out_hw = (50, 45)
    with_term = render(model, img, out_hw, method="reference")
    without = render(ablated, img, out_hw, method="reference")
    assert (render(ablated, img, out_hw) - without).abs().max() <= 1e-5
    coord = torch.stack(torch.meshgrid(*(torch.linspace(-1 + 1 / n, 1 - 1 / n, n) for n in out_hw), indexing="ij"), -1)
    bilinear = sample_bilinear(model.normalize(img[None]), coord.view(1, -1, 2))[0].t().reshape(3, *out_hw)
    assert (with_term - without - bilinear).abs().max() <= 1e-5
