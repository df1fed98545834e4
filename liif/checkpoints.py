"""Read checkpoints of the registered decoder families in three formats and write our own.

- official (yinboc/liif, jaewon-lee-b/lte, ...) ``.pth``: {'model': {'name': 'liif' | 'lte' | ..., 'args':
  {...}, 'sd': state_dict}, ...}; the family that declares the name reads its args
- OpenMMLab (LIIF only) mmediting/mmagic ``.pth``: {'state_dict': {'generator.*': ...}, 'meta': ...}
- ours: ``NAME.safetensors`` (weights, official key names, spec also in its metadata) next to
  ``NAME.json`` (the model spec). ``save`` writes both atomically; a round trip is lossless. When both
  specs are there they must agree: a file whose ``.json`` says another model than its embedded spec
  is refused, naming both files (neither wins silently); without the ``.json`` the embedded spec is used.

Everything is checked before the model is built, each problem one LiifError line: the spec's values
(``liif.models.validate``), then the tensors' names and shapes against the shapes the spec builds
(found on the ``meta`` device; for ``.safetensors`` read from the header, before any tensor is read),
then the tensors themselves: floating point and finite. So a spec edited to a huge model, or weights
with NaN or infinite values, are refused without allocating the model or rendering a flat image.
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
from liif.models.spec import encoder_kwargs, shapes

SPEC_KEY = "liif_spec"


def load(path: str | os.PathLike[str], device: torch.device | str = "cpu") -> tuple[ImplicitDecoder, ModelSpec]:
    """Load a model from any supported checkpoint file, in eval mode on ``device``."""
    spec, sd = read(path)  # checked: the spec, the tensors' names, shapes, dtypes and values
    model = build(spec)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:  # read() compared names and shapes: not expected
        msg = " ".join(str(e).split())
        raise LiifError(f"checkpoint {path} does not fit its model spec: {msg[:300]}") from None
    return model.to(device).eval(), spec


def read(path: str | os.PathLike[str]) -> tuple[ModelSpec, dict[str, torch.Tensor]]:
    """Return (spec, state dict in our key layout) for an official, OpenMMLab or own checkpoint, with
    the tensors checked against the spec (names, shapes) and for their values (float, finite)."""
    p = Path(path)
    if not p.is_file():
        raise LiifError(f"checkpoint not found: {p}")
    if p.suffix == ".safetensors":
        return _read_own(p)
    obj = _torch_load(p)
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict) and "sd" in obj["model"]:
        spec, sd = _from_official(obj["model"], p)
    elif isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        spec, sd = _from_openmmlab(_tensors(obj["state_dict"], "state_dict", p), p)
    else:
        kind = type(obj).__name__ if not isinstance(obj, dict) else f"dict with keys {_abbrev(sorted(map(str, obj)))}"
        names = "/".join(f.name.upper() for f in family.families())
        raise LiifError(f"{p} is not a {names} checkpoint (official, OpenMMLab or liif format); found a {kind}")
    _check_fits(p, spec, {k: tuple(t.shape) for k, t in sd.items()})
    _check_values(p, sd)
    return spec, sd


def save(model: ImplicitDecoder, spec: ModelSpec, path: str | os.PathLike[str],
         dtype: torch.dtype | None = None) -> Path:
    """Write ``path`` (.safetensors) and its sibling .json spec, each via temp file + rename.
    ``dtype`` (e.g. float16, half the size of a shipped file) converts the tensors; loading upcasts."""
    p = Path(path)
    if p.suffix != ".safetensors":
        raise LiifError(f"our checkpoint format is .safetensors, got {p.name}")
    spec_json = json.dumps(spec.to_dict(), indent=2)
    tensors = {k: v.detach().to("cpu", dtype=dtype or v.dtype).contiguous() for k, v in model.state_dict().items()}
    with atomic_path(p) as tmp:
        save_file(tensors, str(tmp), metadata={SPEC_KEY: spec_json, "format": "pt"})
    write_text_atomic(p.with_suffix(".json"), spec_json + "\n")
    return p


# -- checks ------------------------------------------------------------------------------------

def _check_fits(p: Path, spec: ModelSpec, got: dict[str, tuple[int, ...]]) -> None:
    """The tensors' names and shapes against those the spec builds (on the meta device: no data)."""
    try:
        want = shapes(spec)
    except ValueError as e:
        raise LiifError(f"checkpoint {p}: {e}") from None
    missing, unexpected = _key_diff(want, got)
    if missing or unexpected:
        raise LiifError(f"checkpoint {p} does not fit a {spec.encoder} {spec.method.upper()} model: "
                        f"missing keys {_abbrev(missing)}, unexpected keys {_abbrev(unexpected)}")
    wrong = [k for k in want if want[k] != got[k]]
    if wrong:
        k = wrong[0]
        more = f" (+{len(wrong) - 1} more)" if len(wrong) > 1 else ""
        raise LiifError(f"checkpoint {p} does not fit its model spec: size mismatch for {k}: the file has "
                        f"{list(got[k])}, the spec builds {list(want[k])}{more}")


_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _check_dtype(p: Path, name: str, dtype: str, floating: bool) -> None:
    if not floating:
        raise LiifError(f"checkpoint {p}: tensor {name} is {dtype}; weights must be floating point "
                        "(float16, bfloat16, float32 or float64)")


def _check_values(p: Path, sd: dict[str, torch.Tensor]) -> None:
    """Every tensor floating point (real) and finite: NaN or inf weights would render a flat image."""
    for k, t in sorted(sd.items()):
        _check_dtype(p, k, str(t.dtype).removeprefix("torch."), t.dtype in _FLOATS)
        bad = int((~torch.isfinite(t)).sum())
        if bad:
            raise LiifError(f"checkpoint {p}: tensor {k} has {bad:,} NaN or infinite values (of {t.numel():,})")


def _tensors(sd: Any, what: str, p: Path) -> dict[str, torch.Tensor]:
    """``sd`` as a state dict: a mapping of names to dense tensors."""
    if not isinstance(sd, dict):
        raise LiifError(f"{p}: {what} must be a mapping of names to tensors, found a {type(sd).__name__}")
    for k, t in sd.items():
        if not isinstance(k, str):
            raise LiifError(f"{p}: {what} has the key {str(k)[:60]!r} ({type(k).__name__}); tensor names are strings")
        if not isinstance(t, torch.Tensor) or t.layout != torch.strided:
            kind = f"a {t.layout} tensor" if isinstance(t, torch.Tensor) else f"a {type(t).__name__}"
            raise LiifError(f"{p}: {what}[{str(k)[:60]!r}] is {kind}, not a dense tensor")
    return dict(sd)


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


_FLOAT_DTYPES = {"F16", "BF16", "F32", "F64"}  # safetensors header names of _FLOATS


def _read_own(p: Path) -> tuple[ModelSpec, dict[str, torch.Tensor]]:
    try:
        f = safe_open(str(p), framework="pt")
    except Exception as e:  # noqa: BLE001
        raise LiifError(f"cannot read safetensors file {p}: {' '.join(str(e).split())[:200]}") from None
    with f:
        spec = _own_spec(p, f.metadata() or {})
        header = {k: f.get_slice(k) for k in f.keys()}
        _check_fits(p, spec, {k: tuple(s.get_shape()) for k, s in header.items()})
        for k, s in header.items():  # before any tensor is read
            _check_dtype(p, k, s.get_dtype(), s.get_dtype() in _FLOAT_DTYPES)
        try:
            sd = {k: f.get_tensor(k) for k in header}
        except Exception as e:  # noqa: BLE001
            raise LiifError(f"cannot read safetensors file {p}: {' '.join(str(e).split())[:200]}") from None
    _check_values(p, sd)
    return spec, sd


MAX_SPEC_BYTES = 1 << 20  # a spec is a few hundred bytes


def _own_spec(p: Path, meta: dict[str, str]) -> ModelSpec:
    """The spec of ``p``: its sidecar ``.json`` and the one in its metadata, which must agree."""
    side = p.with_suffix(".json")
    embedded = meta.get(SPEC_KEY)
    inside = None if embedded is None else _parse_spec(embedded, f"the model spec inside {p}")
    if not side.is_file():
        if inside is None:
            raise LiifError(f"{p} has no model spec (neither {side.name} nor embedded metadata)")
        return inside
    try:
        if side.stat().st_size > MAX_SPEC_BYTES:
            raise LiifError(f"model spec {side} is {side.stat().st_size:,} bytes; a spec is at most {MAX_SPEC_BYTES:,}")
        text = side.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise LiifError(f"model spec {side} is not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise LiifError(f"cannot read model spec {side}: {e.strerror or e}") from None
    beside = _parse_spec(text, f"model spec {side}")
    a, b = _effective(beside), _effective(inside)
    diff = [k for k in {**a, **b} if a.get(k) != b.get(k)] if inside is not None else []
    if diff:
        k = diff[0]
        raise LiifError(f"{side} and the model spec inside {p} disagree ({', '.join(diff)}; {k}: {a.get(k)!r} vs "
                        f"{b.get(k)!r}); remove {side.name} to use the embedded spec, or save both again")
    return beside


def _effective(spec: ModelSpec | None) -> dict[str, Any]:
    """``spec.to_dict()`` with the encoder's defaults filled in, so specs that build the same model compare equal."""
    if spec is None:
        return {}
    return {**spec.to_dict(), "encoder_args": encoder_kwargs(spec.encoder, spec.encoder_args)}


def _parse_spec(text: str, where: str) -> ModelSpec:
    if len(text) > MAX_SPEC_BYTES:
        raise LiifError(f"{where} is {len(text):,} characters; a spec is at most {MAX_SPEC_BYTES:,}")
    try:
        d = json.loads(text)
    except RecursionError:
        raise LiifError(f"{where} is JSON nested too deeply to be a model spec") from None
    except ValueError as e:
        raise LiifError(f"{where} is not valid JSON: {e}") from None
    try:
        return ModelSpec.from_dict(d)
    except (ValueError, TypeError) as e:
        raise LiifError(f"bad {where}: {e}") from None


def _from_official(model: dict[str, Any], p: Path) -> tuple[ModelSpec, dict[str, torch.Tensor]]:
    """The official formats (yinboc/liif, jaewon-lee-b/lte, ...): {'name', 'args', 'sd'}. The family that
    declares ``name`` reads its ``args``; the encoder spec is common to all."""
    name = model.get("name")
    fam = family.reading(name) if isinstance(name, str) else None
    if fam is None or fam.from_official is None:  # (register refuses official names without a reader)
        known = " or ".join(f"'{n}'" for n in family.official_names())
        raise LiifError(f"{p} holds an official {str(name)[:60]!r} model, not {known}")
    args = model.get("args", {})
    if not isinstance(args, dict):
        raise LiifError(f"{p}: model.args must be a mapping, found a {type(args).__name__}")
    enc = args.get("encoder_spec", {})
    if not isinstance(enc, dict) or not isinstance(enc.get("args", {}), dict):
        raise LiifError(f"{p}: model.args.encoder_spec must be a mapping with 'name' and 'args', got {str(enc)[:80]}")
    if enc.get("name") not in ("edsr-baseline", "edsr", "rdn"):
        raise LiifError(f"{p}: unsupported encoder {str(enc.get('name'))[:60]!r}")
    enc_args = {k: v for k, v in enc.get("args", {}).items()}
    try:
        spec = ModelSpec(method=fam.name, encoder=enc["name"], encoder_args=enc_args,
                         **fam.from_official(str(name), args))
    except (ValueError, TypeError) as e:
        raise LiifError(f"{p}: {e}") from None
    return spec, _tensors(model["sd"], "model.sd", p)


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
    try:
        spec, rules, out = _openmmlab_spec(gen, p)
    except KeyError as e:
        raise LiifError(f"{p}: incomplete OpenMMLab checkpoint: no key 'generator.{e.args[0]}'") from None
    except (IndexError, ValueError) as e:
        raise LiifError(f"{p}: OpenMMLab generator does not describe a LIIF model: {e}") from None
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


def _openmmlab_spec(gen: dict[str, torch.Tensor], p: Path) -> tuple[ModelSpec, list[tuple[str, Any]], dict[str, Any]]:
    """(spec, key rules, tensors OpenMMLab leaves out) of a generator; KeyError for a missing key."""
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
    return spec, rules, out


def _key_diff(expected: dict[str, Any], got: dict[str, Any]) -> tuple[list[str], list[str]]:
    return sorted(set(expected) - set(got)), sorted(set(got) - set(expected))


def _abbrev(keys: list[str], n: int = 6) -> str:
    if not keys:
        return "none"
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return "[" + ", ".join(keys[:n]) + "]" + more
