"""ONNX export and the ONNX Runtime backend: graphs, opset, dynamic sizes, parity with the goldens
and with the torch path, the Upscaler/CLI plumbing and its errors."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

onnx = pytest.importorskip("onnx", reason="ONNX export needs onnx: pip install 'liif[onnx]'")
pytest.importorskip("onnxruntime", reason="the onnxruntime backend needs onnxruntime: pip install 'liif[onnx]'")

from conftest import GOLDEN, golden_cases, load_rgb  # noqa: E402
from liif.api import Upscaler  # noqa: E402
from liif.cli import main  # noqa: E402
from liif.errors import LiifError  # noqa: E402
from liif.export.onnx import GRAPHS, MANIFEST, OPSET, OrtBackend, cached_export, export  # noqa: E402
from liif.models import ModelSpec, build  # noqa: E402
from liif.render import Window, render, render_tiles  # noqa: E402

CASES = golden_cases()
IDS = [c["npy"][:-4] for c in CASES]
TOL = 1e-4


@pytest.fixture(scope="module")
def export_dir(official, tmp_path_factory):
    model, spec = official
    return export(model, spec, tmp_path_factory.mktemp("onnx") / "edsr-baseline-liif")


@pytest.fixture(scope="module")
def ort(export_dir):
    return OrtBackend(export_dir)


def ort_render(model, backend, img, out_hw, window=None, max_memory=None, tiles=None) -> np.ndarray:
    window = window or Window.full(out_hw)
    out = torch.empty(3, window.h, window.w)
    for (y, x), tile in render_tiles(model, img, out_hw, window, "fp32", max_memory, backend=backend):
        out[:, y:y + tile.shape[1], x:x + tile.shape[2]] = tile
        if tiles is not None:
            tiles.append((y, x))
    return out.permute(1, 2, 0).numpy()


class NullBackend:
    """Shapes only: lets a test see how render_tiles would tile, at no compute cost."""

    def __init__(self, model) -> None:
        self.c, self.width = model.encoder.out_dim, model.map_channels

    def encode(self, crop):
        return torch.zeros(1, self.c, *crop.shape[-2:])

    def lr_maps(self, feat):
        return torch.zeros(*feat.shape[-2:], self.width)

    def decode(self, maps, idx, rel, rel_cell):
        return torch.zeros(idx.shape[0], 3)

    def global_term(self, crop, coord):
        return None


def smallest_tiling_budget(model, img, out_hw, win) -> int:
    """The smallest memory budget (whole MiB) the renderer accepts for this window."""
    for mib in range(1, 257):
        try:
            for _ in render_tiles(model, img, out_hw, win, "fp32", mib << 20, backend=NullBackend(model)):
                pass
        except LiifError:
            continue
        return mib << 20
    raise AssertionError("no budget up to 256 MiB")


def test_graphs_opset_and_dynamic_axes(export_dir):
    manifest = json.loads((export_dir / MANIFEST).read_text())
    assert manifest["opset"] == OPSET == 17 and manifest["graphs"] == list(GRAPHS)
    dims = {}
    for g in GRAPHS:
        m = onnx.load(str(export_dir / g))
        onnx.checker.check_model(m)
        assert [o.version for o in m.opset_import if o.domain in ("", "ai.onnx")] == [OPSET]
        for v in list(m.graph.input) + list(m.graph.output):
            dims[(g, v.name)] = [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
    assert dims[("encoder.onnx", "image")] == [1, 3, "h", "w"]
    assert dims[("encoder.onnx", "feat")] == [1, 64, "h", "w"]
    assert dims[("maps.onnx", "maps")] == ["h", "w", 256]
    assert dims[("decoder.onnx", "maps")] == ["n_lr", 256]
    assert dims[("decoder.onnx", "rel_cell")] == [2]
    assert dims[("decoder.onnx", "idx")] == ["n"] and dims[("decoder.onnx", "pred")] == ["n", 3]


def test_backend_methods_match_torch(official, ort):
    """Each method on its own, at sizes other than the export's example inputs."""
    from liif.render import TorchBackend

    model, _ = official
    tb = TorchBackend(model)
    crop = torch.rand(1, 3, 23, 31, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        feat_t, feat_o = tb.encode(crop), ort.encode(crop)
        assert feat_o.shape == feat_t.shape == (1, 64, 23, 31)
        assert (feat_o - feat_t).abs().max() <= 1e-4
        cell = torch.tensor([0.31, 0.27])
        z_t, z_o = tb.lr_maps(feat_t), ort.lr_maps(feat_t)
        assert z_o.shape == z_t.shape == (23, 31, 256)
        assert (z_o - z_t).abs().max() <= 1e-4
        z = z_t.reshape(-1, 256).contiguous()
        idx = torch.randint(0, z.shape[0], (777,), generator=torch.Generator().manual_seed(1))
        rel = torch.rand(777, 2) * 2 - 1
        p_t, p_o = tb.decode(z.clone(), idx, rel, cell), ort.decode(z, idx, rel, cell)
        assert p_o.dtype == torch.float32 and p_o.shape == (777, 3)
        assert (p_o - p_t).abs().max() <= 1e-4


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_golden_parity(official, ort, case):
    model, _ = official
    got = ort_render(model, ort, load_rgb(GOLDEN / case["input"]), tuple(case["out_hw"]))
    diff = float(np.abs(got - np.load(GOLDEN / case["npy"])).max())
    assert diff <= TOL, diff


def test_parity_with_torch_path_window(official, ort):
    model, _ = official
    case = CASES[0]
    img, out_hw = load_rgb(GOLDEN / case["input"]), tuple(case["out_hw"])
    win = Window(9, 13, 101, 87)
    got = ort_render(model, ort, img, out_hw, win)
    want = render(model, img, out_hw, window=win).permute(1, 2, 0).numpy()
    assert np.abs(got - want).max() <= TOL
    assert np.abs(got - np.load(GOLDEN / case["npy"])[9:110, 13:100]).max() <= TOL


def test_parity_tiled_small_model(tmp_path):
    """Another architecture (small random EDSR, 32-wide MLP, no cell) rendered in many tiles under a
    small memory budget: the encoder then runs on interior crops with halos, as on big images."""
    torch.manual_seed(0)
    spec = ModelSpec(encoder="edsr-baseline", encoder_args={"n_resblocks": 2, "n_feats": 16},
                     hidden=[32, 32], cell_decode=False)
    model = build(spec).eval()
    backend = OrtBackend(export(model, spec, tmp_path / "small"))
    img = torch.rand(3, 70, 90, generator=torch.Generator().manual_seed(2))
    out_hw, win = (170, 215), Window(7, 11, 150, 190)
    budget = smallest_tiling_budget(model, img, out_hw, win)
    tiles: list[tuple[int, int]] = []
    got = ort_render(model, backend, img, out_hw, win, max_memory=budget, tiles=tiles)
    want = render(model, img, out_hw, window=win, max_memory=budget).permute(1, 2, 0).numpy()
    ref = render(model, img, out_hw, window=win, method="reference").permute(1, 2, 0).numpy()
    assert len(tiles) >= 9
    assert np.abs(got - want).max() <= TOL
    assert np.abs(got - ref).max() <= TOL


def test_upscaler_backend_png_and_region(official, export_dir):
    model, spec = official
    up = Upscaler(model, spec, backend="onnxruntime", onnx_dir=export_dir, quantize="truncate")
    case = CASES[1]
    src = Image.open(GOLDEN / case["input"])
    full = np.asarray(up.upscale(src, size=tuple(case["out_hw"])), dtype=np.int16)
    gold = np.asarray(Image.open(GOLDEN / case["png"]), dtype=np.int16)
    d = np.abs(full - gold)
    assert d.max() <= 1 and d.any(axis=-1).mean() <= 0.001
    region = np.asarray(up.upscale(src, size=tuple(case["out_hw"]), region=(31, 17, 53, 40)), dtype=np.int16)
    assert np.abs(region - full[17:57, 31:84]).max() <= 1


def test_cached_export_made_once(official, tmp_path, monkeypatch):
    monkeypatch.setenv("LIIF_CACHE_DIR", str(tmp_path))
    model, spec = official
    first = cached_export(model, spec)
    assert first.parent == tmp_path / "onnx" and (first / MANIFEST).is_file()
    stamp = (first / "decoder.onnx").stat().st_mtime_ns
    up = Upscaler(model, spec, backend="onnxruntime")  # finds the same export
    assert up._backend.dir == first and (first / "decoder.onnx").stat().st_mtime_ns == stamp
    assert [p.name for p in (tmp_path / "onnx").iterdir()] == [first.name]  # no temp folders left


def test_backend_errors(official, export_dir, tmp_path):
    model, spec = official
    with pytest.raises(LiifError, match="fp32 only"):
        Upscaler(model, spec, precision="bf16", backend="onnxruntime", onnx_dir=export_dir)
    with pytest.raises(LiifError, match="unknown backend"):
        Upscaler(model, spec, backend="tensorrt")
    with pytest.raises(LiifError, match="fast renderer"):
        Upscaler(model, spec, method="reference", backend="onnxruntime", onnx_dir=export_dir)
    with pytest.raises(LiifError, match="not a liif ONNX export"):
        Upscaler(model, spec, backend="onnxruntime", onnx_dir=tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    for f in GRAPHS:
        (other / f).write_bytes((export_dir / f).read_bytes())
    manifest = json.loads((export_dir / MANIFEST).read_text())
    (other / MANIFEST).write_text(json.dumps({**manifest, "weights_sha256": "0" * 64}))
    with pytest.raises(LiifError, match="other weights"):
        Upscaler(model, spec, backend="onnxruntime", onnx_dir=other)
    (other / "maps.onnx").unlink()
    with pytest.raises(LiifError, match="missing maps.onnx"):
        Upscaler(model, spec, backend="onnxruntime", onnx_dir=other)


def test_cli_export_and_upscale(official_path, tmp_path, capsys):
    out = tmp_path / "exp"
    assert main(["export", "onnx", "--weights", str(official_path), "-o", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(GRAPHS + (MANIFEST,))
    src = GOLDEN / "set14_comic_in.png"
    args = [str(src), "--size", "120x96", "--weights", str(official_path)]
    assert main(["upscale", *args, "--device", "cpu", "--precision", "fp32", "-o", str(tmp_path / "t.png")]) == 0
    assert main(["upscale", *args, "--backend", "onnxruntime", "--onnx-dir", str(out),
                 "-o", str(tmp_path / "o.png")]) == 0
    a = np.asarray(Image.open(tmp_path / "t.png"), dtype=np.int16)
    b = np.asarray(Image.open(tmp_path / "o.png"), dtype=np.int16)
    assert a.shape == (96, 120, 3) and np.abs(a - b).max() <= 1
    assert main(["upscale", *args, "--backend", "onnxruntime", "--onnx-dir", str(tmp_path / "nope"),
                 "-o", str(tmp_path / "x.png")]) == 1
    assert "not a liif ONNX export" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def copy_export(src, dst):
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


@pytest.mark.parametrize("text,message", [
    ("[1, 2]", "is not a liif ONNX manifest: a JSON object is expected, found list"),
    ("null", "is not a liif ONNX manifest: a JSON object is expected, found null"),
    ('{"format": 2, "graphs": [["encoder.onnx"]]}', "lists unexpected graphs [['encoder.onnx']]"),
    ("[" * 100_000, "JSON nested too deeply"),
    (b"\xff\xfe{}", "'utf-8' codec can't decode byte 0xff"),
])
def test_bad_manifests_are_one_line(export_dir, tmp_path, text, message):
    d = copy_export(export_dir, tmp_path / "e")
    (d / MANIFEST).write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(LiifError) as e:
        OrtBackend(d)
    assert str(d / MANIFEST) in str(e.value) and message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("damage,message", [
    (lambda d: (d / "decoder.onnx").write_bytes(b"\x08\x07garbage" * 50), "decoder.onnx: not a valid ONNX graph"),
    (lambda d: (d / "encoder.onnx").write_bytes(b""), "encoder.onnx: not a valid ONNX graph"),
    (lambda d: (d / "maps.onnx").write_bytes((d / "maps.onnx").read_bytes()[:5000]), "maps.onnx: not a valid ONNX"),
    (lambda d: [(d / a).write_bytes((d.parent / "orig" / b).read_bytes())
                for a, b in (("encoder.onnx", "maps.onnx"), ("maps.onnx", "encoder.onnx"))],
     "encoder.onnx is not liif's encoder graph: it takes ['feat'] and gives ['maps'], expected ['image'] -> "
     "['feat']"),
    (lambda d: (d / "maps.onnx").write_bytes((d.parent / "small" / "maps.onnx").read_bytes()),
     "come from different models: encoder.onnx gives 64 channels, maps.onnx takes 16"),
])
def test_damaged_graphs_are_one_line(official, export_dir, tmp_path, damage, message):
    copy_export(export_dir, tmp_path / "orig")
    small = ModelSpec(encoder_args={"n_resblocks": 1, "n_feats": 16}, hidden=[8])
    export(build(small), small, tmp_path / "small")
    d = copy_export(export_dir, tmp_path / "e")
    damage(d)
    model, spec = official
    with pytest.raises(LiifError) as e:
        Upscaler(model, spec, backend="onnxruntime", onnx_dir=d)
    assert str(d) in str(e.value) and message in str(e.value) and "\n" not in str(e.value)


def test_export_target_is_checked_before_the_model_loads(tmp_path, capsys, monkeypatch):
    from conftest import one_error_line
    from liif import checkpoints

    def no_load(*a, **kw):
        raise AssertionError("the model was loaded before the export target was checked")

    monkeypatch.setattr(checkpoints, "load", no_load)
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"not a folder")
    for out, why in ((clip / "x", f"cannot write {clip / 'x' / MANIFEST}: {clip} is not a folder"),
                     (clip, f"export target exists and is not a folder: {clip}"),
                     ("/proc/x", f"cannot write /proc/x/{MANIFEST}: ")):
        rc = main(["export", "onnx", "--weights", str(clip), "-o", str(out)])
        assert rc == 1 and why in one_error_line(capsys.readouterr().err)
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"] and not Path("/proc/x").exists()


def test_a_failing_graph_run_is_one_line(export_dir):
    backend = OrtBackend(export_dir)

    class Broken:
        def run(self, *a, **kw):
            raise RuntimeError("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Got invalid dimensions\nmore detail")

    backend.sessions["maps.onnx"] = Broken()
    with pytest.raises(LiifError) as e:
        backend.lr_maps(torch.zeros(1, 64, 4, 4))
    assert str(e.value) == (f"ONNX Runtime failed on {export_dir / 'maps.onnx'}: RuntimeError: [ONNXRuntimeError] : "
                            "2 : INVALID_ARGUMENT : Got invalid dimensions")
