"""Read checkpoints of the registered decoder families in three formats and write our own.

- official (yinboc/liif, jaewon-lee-b/lte, ...) ``.pth``: {'model': {'name': 'liif' | 'lte' | ..., 'args':
  {...}, 'sd': state_dict}, ...}; the family that declares the name reads its args
- OpenMMLab (LIIF only) mmediting/mmagic ``.pth``: {'state_dict': {'generator.*': ...}, 'meta': ...}
- ours: ``NAME.safetensors`` (weights, official key names, spec also in its metadata) next to
  ``NAME.json`` (the model spec). ``save`` writes both atomically; a round trip is lossless.
"""
from __future__ import annotations

import json
import os
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from liif.errors import LiifError
from liif.fileio import atomic_path, write_text_atomic
from liif.models import ImplicitDecoder, ModelSpec, build, family
from liif.models.edsr import DIV2K_MEAN

SPEC_KEY = "liif_spec"


def load(path: str | os.PathLike[str], device: torch.device | str = "cpu") -> tuple[ImplicitDecoder, ModelSpec]:
    """Load a model from any supported checkpoint file, in eval mode on ``device``."""
    spec, sd = read(path)
    model = build(spec)
    missing, unexpected = _key_diff(model.state_dict(), sd)
    if missing or unexpected:
        raise LiifError(f"checkpoint {path} does not fit a {spec.encoder} {spec.method.upper()} model: "
                        f"missing keys {_abbrev(missing)}, unexpected keys {_abbrev(unexpected)}")
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:  # shape mismatch
        msg = " ".join(str(e).split())
        raise LiifError(f"checkpoint {path} does not fit its model spec: {msg[:300]}") from None
    return model.to(device).eval(), spec


def read(path: str | os.PathLike[str]) -> tuple[ModelSpec, dict[str, torch.Tensor]]:
    """Return (spec, state dict in our key layout) for an official, OpenMMLab or own checkpoint."""
    p = Path(path)
    if not p.is_file():
        raise LiifError(f"checkpoint not found: {p}")
    if p.suffix == ".safetensors":
        return _read_own(p)
    obj = _torch_load(p)
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict) and "sd" in obj["model"]:
        return _from_official(obj["model"], p)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        return _from_openmmlab(obj["state_dict"], p)
    kind = type(obj).__name__ if not isinstance(obj, dict) else f"dict with keys {_abbrev(sorted(obj))}"
    names = "/".join(f.name.upper() for f in family.families())
    raise LiifError(f"{p} is not a {names} checkpoint (official, OpenMMLab or liif format); found a {kind}")


def save(model: ImplicitDecoder, spec: ModelSpec, path: str | os.PathLike[str]) -> Path:
    """Write ``path`` (.safetensors) and its sibling .json spec, each via temp file + rename."""
    p = Path(path)
    if p.suffix != ".safetensors":
        raise LiifError(f"our checkpoint format is .safetensors, got {p.name}")
    spec_json = json.dumps(spec.to_dict(), indent=2)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_path(p) as tmp:
        save_file(tensors, str(tmp), metadata={SPEC_KEY: spec_json, "format": "pt"})
    write_text_atomic(p.with_suffix(".json"), spec_json + "\n")
    return p


# -- formats -----------------------------------------------------------------------------------

def _torch_load(p: Path) -> Any:
    if not zipfile.is_zipfile(p):
        with open(p, "rb") as f:
            head = f.read(2)
        if head != b"\x80\x02":  # legacy (non-zip) torch.save pickles start with protocol 2
            raise LiifError(f"{p} is not a PyTorch checkpoint file")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many kinds here
        raise LiifError(f"cannot read checkpoint {p}: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from None


def _read_own(p: Path) -> tuple[ModelSpec, dict[str, torch.Tensor]]:
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
            sd = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # noqa: BLE001
        raise LiifError(f"cannot read safetensors file {p}: {e}") from None
    side = p.with_suffix(".json")
    text = side.read_text() if side.is_file() else meta.get(SPEC_KEY)
    if text is None:
        raise LiifError(f"{p} has no model spec (neither {side.name} nor embedded metadata)")
    try:
        return ModelSpec.from_dict(json.loads(text)), sd
    except (ValueError, TypeError) as e:
        raise LiifError(f"bad model spec for {p}: {e}") from None


def _from_official(model: dict[str, Any], p: Path) -> tuple[ModelSpec, dict[str, torch.Tensor]]:
    """The official formats (yinboc/liif, jaewon-lee-b/lte, ...): {'name', 'args', 'sd'}. The family that
    declares ``name`` reads its ``args``; the encoder spec is common to all."""
    name = model.get("name")
    fam = family.reading(name)
    if fam is None or fam.from_official is None:  # (register refuses official names without a reader)
        known = " or ".join(f"'{n}'" for n in family.official_names())
        raise LiifError(f"{p} holds an official '{name}' model, not {known}")
    args = model.get("args", {})
    enc = args.get("encoder_spec", {})
    enc_args = {k: v for k, v in enc.get("args", {}).items()}
    if enc.get("name") not in ("edsr-baseline", "edsr", "rdn"):
        raise LiifError(f"{p}: unsupported encoder {enc.get('name')!r}")
    try:
        spec = ModelSpec(method=fam.name, encoder=enc["name"], encoder_args=enc_args,
                         **fam.from_official(str(name), args))
    except ValueError as e:
        raise LiifError(f"{p}: {e}") from None
    return spec, dict(model["sd"])


_MM_EDSR = [
    (r"conv_first\.(.*)", r"encoder.head.0.\1"),
    (r"body\.(\d+)\.conv1\.(.*)", r"encoder.body.\1.body.0.\2"),
    (r"body\.(\d+)\.conv2\.(.*)", r"encoder.body.\1.body.2.\2"),
    (r"conv_after_body\.(.*)", None),  # index depends on the block count, filled in below
    (r"imnet\.(.*)", r"imnet.\1"),
]
_MM_RDN = [
    (r"sfe1\.(.*)", r"encoder.SFENet1.\1"),
    (r"sfe2\.(.*)", r"encoder.SFENet2.\1"),
    (r"rdbs\.(\d+)\.layers\.(\d+)\.conv\.(.*)", r"encoder.RDBs.\1.convs.\2.conv.0.\3"),
    (r"rdbs\.(\d+)\.lff\.(.*)", r"encoder.RDBs.\1.LFF.\2"),
    (r"gff\.(\d)\.(.*)", r"encoder.GFF.\1.\2"),
    (r"imnet\.(.*)", r"imnet.\1"),
]


def _from_openmmlab(sd: dict[str, torch.Tensor], p: Path) -> tuple[ModelSpec, dict[str, torch.Tensor]]:
    gen = {k[len("generator."):]: v for k, v in sd.items() if k.startswith("generator.")}
    if not gen:
        raise LiifError(f"{p} has a state_dict without 'generator.*' keys: not an OpenMMLab LIIF checkpoint")
    hidden = [gen[f"imnet.layers.{i}.weight"].shape[0]
              for i in range(0, 100, 2) if f"imnet.layers.{i + 2}.weight" in gen]
    out: dict[str, torch.Tensor] = {}
    if "conv_first.weight" in gen:
        n_blocks = len({k.split(".")[1] for k in gen if k.startswith("body.")})
        n_feats = gen["conv_first.weight"].shape[0]
        rules = [(a, b if b else rf"encoder.body.{n_blocks}.\1") for a, b in _MM_EDSR]
        spec = ModelSpec(method="liif", encoder="edsr-baseline",
                         encoder_args={"n_resblocks": n_blocks, "n_feats": n_feats}, hidden=hidden,
                         inp_mean=DIV2K_MEAN, inp_std=(1.0, 1.0, 1.0),
                         out_mean=DIV2K_MEAN, out_std=(1.0, 1.0, 1.0))
        # MeanShift convs are not in OpenMMLab files; they are unused, so emit their fixed values.
        for name, sign in (("sub_mean", -1), ("add_mean", 1)):
            out[f"encoder.{name}.weight"] = torch.eye(3).view(3, 3, 1, 1)
            out[f"encoder.{name}.bias"] = sign * torch.tensor(DIV2K_MEAN)
    elif "sfe1.weight" in gen:
        d = len({k.split(".")[1] for k in gen if k.startswith("rdbs.")})
        c = len({k.split(".")[3] for k in gen if k.startswith("rdbs.0.layers.")})
        g = gen["rdbs.0.layers.0.conv.weight"].shape[0]
        g0 = gen["sfe1.weight"].shape[0]
        k = gen["sfe1.weight"].shape[-1]
        rules = _MM_RDN
        spec = ModelSpec(method="liif", encoder="rdn",
                         encoder_args={"G0": g0, "RDNkSize": k, "D": d, "C": c, "G": g}, hidden=hidden)
    else:
        raise LiifError(f"{p}: OpenMMLab generator is neither LIIF-EDSR nor LIIF-RDN "
                        f"(keys {_abbrev(sorted(gen))})")
    unknown = []
    for key, v in gen.items():
        for pat, rep in rules:
            if re.fullmatch(pat, key):
                out[re.sub(pat, rep, key)] = v
                break
        else:
            unknown.append(key)
    if unknown:
        raise LiifError(f"{p}: unexpected OpenMMLab keys {_abbrev(unknown)}")
    return spec, out


def _key_diff(expected: dict[str, Any], got: dict[str, Any]) -> tuple[list[str], list[str]]:
    return sorted(set(expected) - set(got)), sorted(set(got) - set(expected))


def _abbrev(keys: list[str], n: int = 6) -> str:
    if not keys:
        return "none"
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return "[" + ", ".join(keys[:n]) + "]" + more
