"""ONNX export of a model (any decoder family behind the seam) and an ONNX Runtime backend for the
fast renderer.

The export mirrors :class:`liif.render.TorchBackend` operation for operation, one graph each, so the
planning, tiling, region and blending code of :func:`liif.render.render_tiles` is shared:

``encoder.onnx``  image (1, 3, h, w) RGB in [0, 1] -> feat (1, C, h, w)
                  (input normalisation and the EDSR/RDN encoder)
``maps.onnx``     feat (1, C, h, w), rel_cell (2,) -> maps (h, w, D), channels-last: the method's
                  ``lr_maps`` (LIIF: the MLP's first layer as a 3x3 conv; LTE: amplitude and frequency
                  maps; LMF: the hypernet's tables; only LMF's graph has the rel_cell input)
``decoder.onnx``  maps (n_lr, D), idx (n,) int64, rel (n, 2), rel_cell (2,) -> pred (n, out):
                  the gather and the method's ``decode_rows`` (``first_hidden`` and ``tail``)
``global.onnx``   image (1, 3, h, w) RGB in [0, 1], coord (n, 2) -> (n, 3): the method's global
                  term (LTE's bilinear input), only for methods that have one

Every image and query dimension is dynamic. Opset :data:`OPSET` (17, ONNX Runtime >= 1.13).
``liif-onnx.json`` beside the graphs records the format, opset, graphs, model spec and a hash of
the weights; it is written last, so a folder without it is an incomplete export.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from liif.errors import LiifError
from liif.fileio import atomic_path
from liif.imaging import as_float, check_writable
from liif.models import ImplicitDecoder, ModelSpec

OPSET = 17
FORMAT = 2  # 1: encoder/layer0/decoder graphs of LIIF only
MANIFEST = "liif-onnx.json"
MAX_MANIFEST_BYTES = 1 << 20
GRAPHS = ("encoder.onnx", "maps.onnx", "decoder.onnx")
GLOBAL = "global.onnx"


def graphs_of(model: ImplicitDecoder) -> tuple[str, ...]:
    return GRAPHS + ((GLOBAL,) if model.has_global_term else ())


class _Encoder(nn.Module):
    def __init__(self, model: ImplicitDecoder) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model.encoder(self.model.normalize(image))


class _Maps(nn.Module):
    def __init__(self, model: ImplicitDecoder) -> None:
        super().__init__()
        self.model = model

    def forward(self, feat: torch.Tensor, rel_cell: torch.Tensor) -> torch.Tensor:
        return self.model.lr_maps(feat, rel_cell.view(1, 2))[0].permute(1, 2, 0)


class _Decoder(nn.Module):
    def __init__(self, model: ImplicitDecoder) -> None:
        super().__init__()
        self.model = model

    def forward(self, maps: torch.Tensor, idx: torch.Tensor, rel: torch.Tensor, rel_cell: torch.Tensor) -> torch.Tensor:
        rows = maps.index_select(0, idx)
        return self.model.decode_rows(rows, rel, rel_cell.unsqueeze(0).expand(idx.shape[0], 2))


class _Global(nn.Module):
    def __init__(self, model: ImplicitDecoder) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor, coord: torch.Tensor) -> torch.Tensor:
        out = self.model.global_term(self.model.normalize(image), coord.unsqueeze(0))
        assert out is not None
        return out[0]


def weights_hash(model: ImplicitDecoder, spec: ModelSpec) -> str:
    """sha256 over the spec and every state-dict tensor: names an export of exactly these weights."""
    h = hashlib.sha256(json.dumps(spec.to_dict(), sort_keys=True).encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def check_target(out_dir: str | os.PathLike[str]) -> Path:
    """Refuse, before any work, an export folder that is a file, lies under a file or cannot be written."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise LiifError(f"export target exists and is not a folder: {out}")
    check_writable(out / MANIFEST)
    return out


def export(model: ImplicitDecoder, spec: ModelSpec, out_dir: str | os.PathLike[str]) -> Path:
    """Write the graphs and the manifest to ``out_dir``; each file atomically, manifest last."""
    out = check_target(out_dir)
    try:
        _export(model, spec, out)
    except OSError as e:  # disk full, the folder removed meanwhile: no temp file is left (atomic_path)
        raise LiifError(f"cannot write the ONNX export to {out}: {e.strerror or e}") from None
    return out


def _export(model: ImplicitDecoder, spec: ModelSpec, out: Path) -> None:
    model = model.eval().float().cpu()
    c = int(model.encoder.out_dim)  # type: ignore[arg-type]
    d = model.map_channels
    img = torch.rand(1, 3, 12, 10)
    feat = torch.rand(1, c, 12, 10)
    maps = torch.rand(120, d)
    jobs: list[tuple[str, nn.Module, tuple[torch.Tensor, ...], list[str], dict[str, dict[int, str]]]] = [
        ("encoder.onnx", _Encoder(model), (img,), ["image", "feat"],
         {"image": {2: "h", 3: "w"}, "feat": {2: "h", 3: "w"}}),
        ("maps.onnx", _Maps(model), (feat, torch.rand(2)), ["feat", "rel_cell", "maps"],
         {"feat": {2: "h", 3: "w"}, "maps": {0: "h", 1: "w"}}),
        ("decoder.onnx", _Decoder(model), (maps, torch.randint(0, 120, (50,)), torch.rand(50, 2), torch.rand(2)),
         ["maps", "idx", "rel", "rel_cell", "pred"],
         {"maps": {0: "n_lr"}, "idx": {0: "n"}, "rel": {0: "n"}, "pred": {0: "n"}}),
    ]
    if model.has_global_term:
        jobs.append((GLOBAL, _Global(model), (img, torch.rand(50, 2) * 2 - 1), ["image", "coord", "value"],
                     {"image": {2: "h", 3: "w"}, "coord": {0: "n"}, "value": {0: "n"}}))
    for name, module, args, names, axes in jobs:
        with atomic_path(out / name) as tmp, warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(module.eval(), args, str(tmp), dynamo=False, opset_version=OPSET,
                              input_names=names[:len(args)], output_names=names[len(args):],
                              dynamic_axes=axes, do_constant_folding=True)
    manifest = {"format": FORMAT, "opset": OPSET, "graphs": list(graphs_of(model)), "spec": spec.to_dict(),
                "weights_sha256": weights_hash(model, spec), "torch": torch.__version__}
    with atomic_path(out / MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1) + "\n")


def read_manifest(export_dir: str | os.PathLike[str]) -> dict[str, Any]:
    d = Path(export_dir)
    m = d / MANIFEST
    if not m.is_file():
        raise LiifError(f"not a liif ONNX export (no {MANIFEST}): {d}; create one with `liif export onnx`")
    try:
        if m.stat().st_size > MAX_MANIFEST_BYTES:
            raise LiifError(f"{m} is {m.stat().st_size:,} bytes: not a liif ONNX manifest")
        manifest = json.loads(m.read_bytes().decode("utf-8"))
    except RecursionError:
        raise LiifError(f"cannot read {m}: JSON nested too deeply") from None
    except (OSError, ValueError) as e:  # (UnicodeDecodeError and JSONDecodeError are ValueErrors)
        raise LiifError(f"cannot read {m}: {e}") from None
    if not isinstance(manifest, dict):
        raise LiifError(f"{m} is not a liif ONNX manifest: a JSON object is expected, found "
                        f"{'null' if manifest is None else type(manifest).__name__}")
    if manifest.get("format") != FORMAT:
        raise LiifError(f"{m} has export format {str(manifest.get('format'))[:40]!r}; this liif reads format {FORMAT}")
    graphs = manifest.get("graphs")
    if (not isinstance(graphs, list) or not all(isinstance(g, str) for g in graphs)
            or not set(GRAPHS) <= set(graphs) or not set(graphs) <= {*GRAPHS, GLOBAL}):
        raise LiifError(f"{m} lists unexpected graphs {str(graphs)[:120]}")
    missing = [g for g in graphs if not (d / g).is_file()]
    if missing:
        raise LiifError(f"incomplete ONNX export in {d}: missing {', '.join(missing)}")
    return manifest


def cached_export(model: ImplicitDecoder, spec: ModelSpec, cache_root: Path | None = None) -> Path:
    """The export of these weights under ``<cache>/onnx/<hash>``, made on first use."""
    from liif import weights

    digest = weights_hash(model, spec)
    root = (cache_root or weights.cache_dir()) / "onnx"
    final = root / f"{digest[:20]}-opset{OPSET}-f{FORMAT}"
    if (final / MANIFEST).is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=root))
    try:
        export(model, spec, tmp)
        try:
            os.replace(tmp, final)
        except OSError:  # another process finished the same export first
            if not (final / MANIFEST).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


class OrtBackend:
    """The four operations of :class:`liif.render.TorchBackend`, computed by ONNX Runtime (fp32).

    Tensors are converted to NumPy on the way in and back to torch on the way out, so the
    renderer's planning and blending stay in torch and are shared with the torch path.
    """

    precision = "fp32"

    def __init__(self, export_dir: str | os.PathLike[str], threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise LiifError("the onnxruntime backend needs onnxruntime: pip install 'liif[onnx]'") from None
        self.dir = Path(export_dir)
        self.manifest = read_manifest(self.dir)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.sessions = {g: _session(ort, self.dir / g, opts) for g in self.manifest["graphs"]}
        # The exporter drops inputs a model does not use (rel_cell without LIIF's cell_decode).
        self.inputs = {g: {i.name for i in s.get_inputs()} for g, s in self.sessions.items()}
        check_graphs(self.dir, self.sessions)

    def _run(self, graph: str, **inputs: np.ndarray) -> torch.Tensor:
        used = {k: v for k, v in inputs.items() if k in self.inputs[graph]}
        try:
            return torch.from_numpy(self.sessions[graph].run(None, used)[0])
        except Exception as e:  # noqa: BLE001 - ONNX Runtime's own exception types
            raise LiifError(f"ONNX Runtime failed on {self.dir / graph}: {_first_line(e)}") from None

    def encode(self, crop: torch.Tensor) -> torch.Tensor:
        return self._run("encoder.onnx", image=_np(as_float(crop)))

    def lr_maps(self, feat: torch.Tensor, rel_cell: torch.Tensor | None = None) -> torch.Tensor:
        if rel_cell is None and "rel_cell" in self.inputs["maps.onnx"]:
            raise LiifError("the maps of this export depend on the render's cell: pass rel_cell")
        cells = {} if rel_cell is None else {"rel_cell": _np(rel_cell)}
        return self._run("maps.onnx", feat=_np(feat), **cells)

    def decode(self, maps: torch.Tensor, idx: torch.Tensor, rel: torch.Tensor, rel_cell: torch.Tensor) -> torch.Tensor:
        idx_np = np.ascontiguousarray(idx.detach().cpu().numpy(), dtype=np.int64)
        return self._run("decoder.onnx", maps=_np(maps), idx=idx_np, rel=_np(rel), rel_cell=_np(rel_cell))

    def global_term(self, crop: torch.Tensor, coord: torch.Tensor) -> torch.Tensor | None:
        if GLOBAL not in self.sessions:
            return None
        return self._run(GLOBAL, image=_np(as_float(crop)), coord=_np(coord))


# Each graph's inputs as the export names them (the exporter drops unused ones: only rel_cell may go; the maps
# keep it only for methods whose maps see the cell, LMF's) and its one output.
SIGNATURES = {"encoder.onnx": ({"image"}, set(), "feat"), "maps.onnx": ({"feat"}, {"rel_cell"}, "maps"),
              "decoder.onnx": ({"maps", "idx", "rel"}, {"rel_cell"}, "pred"),
              GLOBAL: ({"image", "coord"}, set(), "value")}


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0][:200] if lines else ''}"


def _session(ort: Any, path: Path, opts: Any) -> Any:
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - a corrupt, empty or foreign file
        raise LiifError(f"cannot load {path}: not a valid ONNX graph ({_first_line(e)})") from None


def check_graphs(export_dir: Path, sessions: dict[str, Any]) -> None:
    """Each graph is the one its name says (inputs, output), and the widths that pass between them agree:
    encoder -> maps (the feature channels), maps -> decoder (the map channels)."""
    for g, s in sessions.items():
        required, optional, output = SIGNATURES[g]
        names = {i.name for i in s.get_inputs()}
        outs = [o.name for o in s.get_outputs()]
        if not required <= names <= required | optional or outs != [output]:
            raise LiifError(f"{export_dir / g} is not liif's {g[:-5]} graph: it takes {sorted(names)} and gives "
                            f"{outs}, expected {sorted(required | optional)} -> [{output!r}]")

    def dim(g: str, which: str, name: str, axis: int) -> Any:
        io = sessions[g].get_inputs() if which == "in" else sessions[g].get_outputs()
        return next(x.shape[axis] for x in io if x.name == name)

    for (a, name_a, axis_a), (b, name_b, axis_b) in (
            (("encoder.onnx", "feat", 1), ("maps.onnx", "feat", 1)),
            (("maps.onnx", "maps", 2), ("decoder.onnx", "maps", 1))):
        da, db = dim(a, "out", name_a, axis_a), dim(b, "in", name_b, axis_b)
        if isinstance(da, int) and isinstance(db, int) and da != db:
            raise LiifError(f"the graphs in {export_dir} come from different models: {a} gives {da} channels, "
                            f"{b} takes {db}; export the model again")


BACKENDS = ("torch", "onnxruntime")


def backend_for(kind: str, model: ImplicitDecoder, spec: ModelSpec, onnx_dir: str | os.PathLike[str] | None,
                method: str = "fast") -> OrtBackend:
    """The render backend for ``Upscaler(backend=kind)``: the export in ``onnx_dir`` (checked to be
    of these very weights) or, without one, an export cached under the liif cache folder."""
    if kind not in BACKENDS:
        raise LiifError(f"unknown backend {kind!r}; expected one of {', '.join(BACKENDS)}")
    if method != "fast":
        raise LiifError(f"the {kind} backend runs the fast renderer; method {method!r} is torch only")
    if next(model.parameters()).device.type != "cpu":
        raise LiifError(f"the {kind} backend runs on the CPU; load the model with device='cpu'")
    if onnx_dir is None:
        return OrtBackend(cached_export(model, spec))
    manifest = read_manifest(onnx_dir)
    if manifest.get("weights_sha256") != weights_hash(model, spec):
        raise LiifError(f"the ONNX export in {onnx_dir} was made from other weights; re-export it with "
                        f"`liif export onnx` or leave out the export folder")
    return OrtBackend(onnx_dir)


def _np(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().float().numpy())


__all__ = ["OPSET", "OrtBackend", "backend_for", "cached_export", "check_graphs", "check_target", "export",
           "read_manifest", "weights_hash"]
