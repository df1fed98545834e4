"""ONNX export of a LIIF model and an ONNX Runtime backend for the fast renderer.

The export mirrors :class:`liif.render.TorchBackend` method for method, one graph each, so the
planning, tiling, region and blending code of :func:`liif.render.render_tiles` is shared:

``encoder.onnx``  image (1, 3, h, w) RGB in [0, 1] -> feat (1, C, h, w)
                  (input normalisation and the EDSR/RDN encoder)
``layer0.onnx``   feat (1, C, h, w), rel_cell (2,) -> z (h, w, 256)
                  (the MLP's first layer as a 3x3 conv of the feature map, channels-last)
``decoder.onnx``  z (n_lr, 256), idx (n,) int64, rel (n, 2) -> pred (n, 3)
                  (gather of the query's code row, the offset term, the remaining layers)

Every image and query dimension is dynamic. Opset :data:`OPSET` (17, ONNX Runtime >= 1.13).
``liif-onnx.json`` beside the graphs records the format, opset, model spec and a hash of the
weights; it is written last, so a folder without it is an incomplete export.
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

from liif.checkpoints import atomic_path
from liif.errors import LiifError
from liif.models import LIIF, ModelSpec
from liif.render import TorchBackend

OPSET = 17
FORMAT = 1
MANIFEST = "liif-onnx.json"
GRAPHS = ("encoder.onnx", "layer0.onnx", "decoder.onnx")


class _Encoder(nn.Module):
    def __init__(self, model: LIIF) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model.encoder(self.model.normalize(image))


class _Layer0(nn.Module):
    def __init__(self, tb: TorchBackend) -> None:
        super().__init__()
        self.register_buffer("conv_w", tb.conv_w.clone())
        self.register_buffer("b0", tb.b0.clone())
        w_cell = tb.w_cell if tb.w_cell is not None else torch.zeros(tb.width, 2)
        self.register_buffer("w_cell", w_cell.clone())
        self.pad = tb.conv_w.shape[-1] // 2

    def forward(self, feat: torch.Tensor, rel_cell: torch.Tensor) -> torch.Tensor:
        bias = self.b0 + self.w_cell @ rel_cell
        z = nn.functional.conv2d(feat, self.conv_w, bias, padding=self.pad)
        return z[0].permute(1, 2, 0)


class _Decoder(nn.Module):
    def __init__(self, model: LIIF, tb: TorchBackend) -> None:
        super().__init__()
        assert model.imnet is not None
        self.register_buffer("w_rel", tb.w_rel.float().clone())
        self.layers = nn.ModuleList(
            [m for m in model.imnet.layers if isinstance(m, nn.Linear)][1:])  # layer 0 is in layer0.onnx

    def forward(self, z: torch.Tensor, idx: torch.Tensor, rel: torch.Tensor) -> torch.Tensor:
        h = torch.relu(z.index_select(0, idx) + rel @ self.w_rel)
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < len(self.layers) - 1:
                h = torch.relu(h)
        return h


def weights_hash(model: LIIF, spec: ModelSpec) -> str:
    """sha256 over the spec and every state-dict tensor: names an export of exactly these weights."""
    h = hashlib.sha256(json.dumps(spec.to_dict(), sort_keys=True).encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def export(model: LIIF, spec: ModelSpec, out_dir: str | os.PathLike[str]) -> Path:
    """Write the three graphs and the manifest to ``out_dir``; each file atomically, manifest last."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise LiifError(f"export target exists and is not a folder: {out}")
    model = model.eval().float().cpu()
    tb = TorchBackend(model, "fp32")
    c = int(model.encoder.out_dim)  # type: ignore[arg-type]
    img = torch.rand(1, 3, 12, 10)
    feat = torch.rand(1, c, 12, 10)
    z = torch.rand(120, tb.width)
    jobs: list[tuple[str, nn.Module, tuple[torch.Tensor, ...], list[str], dict[str, dict[int, str]]]] = [
        ("encoder.onnx", _Encoder(model), (img,), ["image", "feat"],
         {"image": {2: "h", 3: "w"}, "feat": {2: "h", 3: "w"}}),
        ("layer0.onnx", _Layer0(tb), (feat, torch.tensor([0.5, 0.5])), ["feat", "rel_cell", "z"],
         {"feat": {2: "h", 3: "w"}, "z": {0: "h", 1: "w"}}),
        ("decoder.onnx", _Decoder(model, tb), (z, torch.randint(0, 120, (50,)), torch.rand(50, 2)),
         ["z", "idx", "rel", "pred"], {"z": {0: "n_lr"}, "idx": {0: "n"}, "rel": {0: "n"}, "pred": {0: "n"}}),
    ]
    for name, module, args, names, axes in jobs:
        with atomic_path(out / name) as tmp, warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(module.eval(), args, str(tmp), dynamo=False, opset_version=OPSET,
                              input_names=names[:len(args)], output_names=names[len(args):],
                              dynamic_axes=axes, do_constant_folding=True)
    manifest = {"format": FORMAT, "opset": OPSET, "graphs": list(GRAPHS), "spec": spec.to_dict(),
                "weights_sha256": weights_hash(model, spec), "torch": torch.__version__}
    with atomic_path(out / MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    return out


def read_manifest(export_dir: str | os.PathLike[str]) -> dict[str, Any]:
    d = Path(export_dir)
    m = d / MANIFEST
    if not m.is_file():
        raise LiifError(f"not a liif ONNX export (no {MANIFEST}): {d}; create one with `liif export onnx`")
    try:
        manifest = json.loads(m.read_text())
    except (OSError, ValueError) as e:
        raise LiifError(f"cannot read {m}: {e}") from None
    if manifest.get("format") != FORMAT:
        raise LiifError(f"{m} has export format {manifest.get('format')!r}; this liif reads format {FORMAT}")
    missing = [g for g in GRAPHS if not (d / g).is_file()]
    if missing:
        raise LiifError(f"incomplete ONNX export in {d}: missing {', '.join(missing)}")
    return manifest


def cached_export(model: LIIF, spec: ModelSpec, cache_root: Path | None = None) -> Path:
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
    """The three methods of :class:`liif.render.TorchBackend`, computed by ONNX Runtime (fp32).

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
        providers = ["CPUExecutionProvider"]
        self.sessions = {g: ort.InferenceSession(str(self.dir / g), opts, providers=providers) for g in GRAPHS}

    def _run(self, graph: str, **inputs: np.ndarray) -> np.ndarray:
        return self.sessions[graph].run(None, inputs)[0]

    def encode(self, crop: torch.Tensor) -> torch.Tensor:
        """RGB crop (1, 3, h, w) in [0, 1] -> feature map (1, C, h, w)."""
        x = crop.float() / 255 if crop.dtype == torch.uint8 else crop  # compact uint8 inputs
        return torch.from_numpy(self._run("encoder.onnx", image=_np(x)))

    def layer0_map(self, feat: torch.Tensor, rel_cell: torch.Tensor) -> torch.Tensor:
        """feat (1, C, h, w) -> Z (h, w, 256), channels-last."""
        return torch.from_numpy(self._run("layer0.onnx", feat=_np(feat), rel_cell=_np(rel_cell)))

    def decode(self, z: torch.Tensor, idx: torch.Tensor, rel: torch.Tensor) -> torch.Tensor:
        """Rows ``idx`` of Z (n_lr, 256) plus the offset term, through the remaining layers -> (n, 3)."""
        idx_np = np.ascontiguousarray(idx.detach().cpu().numpy(), dtype=np.int64)
        return torch.from_numpy(self._run("decoder.onnx", z=_np(z), idx=idx_np, rel=_np(rel)))


BACKENDS = ("torch", "onnxruntime")


def backend_for(kind: str, model: LIIF, spec: ModelSpec, onnx_dir: str | os.PathLike[str] | None,
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


__all__ = ["OPSET", "OrtBackend", "backend_for", "cached_export", "export", "read_manifest", "weights_hash"]
