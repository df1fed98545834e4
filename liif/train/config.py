"""Training configuration: YAML file + dotted ``--set a.b=c`` overrides, checked before training.

The config is a tree of dataclasses; every key, type and path is validated up front and errors
name the offending key (``train.lr``) or path, so a typo never costs a half-finished run.
Data paths written ``data:REL`` are resolved under the data root (``--data-root``, else
``$LIIF_DATA_DIR``, else the cache: :mod:`liif.data.roots`); other relative paths against the
current directory. The value checks (ranges, the model's size, the images, the run folder) are
:mod:`liif.train.checks`.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from liif.data.degrade.settings import Degradation
from liif.errors import LiifError
from liif.models.spec import ModelSpec
from liif.train.checks import check


@dataclass
class TrainData:
    """Training images and the random-scale sampler (spec section 5)."""

    roots: list[str] = field(default_factory=list)  # image folders, concatenated
    div2k: str | None = None  # a DIV2K root: uses DIV2K_train_HR (instead of roots)
    repeat: int = 1
    cache: str = "memory"  # "memory" (decoded once per process), "mmap" (once per node, mapped) or "none"
    cache_dir: str | None = None  # where the mmap cache lives (default <out>/cache)
    inp_size: int = 48
    scale_min: float = 1.0
    scale_max: float = 4.0
    augment: bool = True
    sample_q: int = 2304
    # null: the paper's clean PIL-bicubic LR; a block (``{}``: Real-ESRGAN's recipe): degraded LR
    # (liif.data.degrade.settings for the keys, liif.data.degrade.pipeline for the steps)
    degradation: Degradation | None = None


@dataclass
class ValData:
    """Whole-image validation at one integer scale; PSNR under the paper's protocol."""

    hr: str | None = None  # HR folder; None disables validation
    lr: str | None = None  # LR folder (e.g. LR_bicubic/X4); None: PIL-bicubic from HR
    scale: int = 4
    first_k: int | None = None
    y_channel: bool = True  # benchmark protocol (Y, shave = scale); false: RGB, shave = scale + 6
    every: int = 1  # epochs


@dataclass
class Data:
    train: TrainData = field(default_factory=TrainData)
    val: ValData = field(default_factory=ValData)
    workers: int = 0


@dataclass
class Optim:
    batch_size: int = 16  # global, over all processes
    epochs: int = 1000
    lr: float = 1e-4
    milestones: list[int] = field(default_factory=lambda: [200, 400, 600, 800])
    gamma: float = 0.5
    # > 0: train for this many minutes of training time instead of `epochs` epochs; the learning rate
    # drops at the same fractions of the budget as of the epochs (milestone / epochs), so a faster machine
    # trains more steps and still ends with its schedule done. 0: `epochs` epochs (fixed steps).
    budget_minutes: float = 0.0
    precision: str = "auto"  # auto (liif.compute: native bf16 or fp32 on CPU, bf16/fp16 on CUDA) | fp32 | bf16 | fp16
    fold: bool = True  # layer-0 fold (liif.models.folded); false = the official op structure
    compile: bool = False
    channels_last: bool = False  # NHWC encoder activations (faster convolutions on CPU)
    threads: int = 0  # torch CPU threads per process (0: torch's default)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    # weights the model starts from (a pretrained name such as edsr-baseline-liif, or a checkpoint file) when
    # the run starts afresh; the model section must describe their model. null: random initialisation
    init: str | None = None


@dataclass
class Checkpoint:
    save_every: int = 100  # epochs: keep epoch-N checkpoints
    last_every_iters: int = 0  # also refresh 'last' every N iterations (0: only at epoch ends)
    last_every_s: float = 60.0  # also refresh 'last' every S seconds of training (0: off); rank 0's clock decides


@dataclass
class Log:
    every: int = 50  # iterations between CSV/TensorBoard rows
    tensorboard: bool = False


@dataclass
class Config:
    model: dict[str, Any] = field(default_factory=dict)  # a liif.models.ModelSpec
    data: Data = field(default_factory=Data)
    train: Optim = field(default_factory=Optim)
    checkpoint: Checkpoint = field(default_factory=Checkpoint)
    log: Log = field(default_factory=Log)

    def model_spec(self) -> ModelSpec:
        return ModelSpec.from_dict(self.model)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load(path: str | Path, overrides: list[str] | None = None, data_root: Path | None = None) -> Config:
    """Read a YAML config, apply ``a.b=c`` overrides, resolve ``data:`` paths under ``data_root``
    (None: :func:`liif.data.roots.data_root`), validate everything (keys, types, paths)."""
    p = Path(path)
    if not p.is_file():
        raise LiifError(f"config file not found: {p}")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise LiifError(f"{p} is not valid YAML: {' '.join(str(e).split())}") from None
    if not isinstance(raw, dict):
        raise LiifError(f"{p} must hold a mapping at the top level")
    for item in overrides or []:
        apply_override(raw, item)
    cfg = from_dict(raw)
    hints = resolve_data_paths(cfg, data_root)
    check(cfg, hints)
    return cfg


def resolve_data_paths(cfg: Config, root: Path | None = None) -> dict[str, str]:
    """Replace every ``data:REL`` path of ``cfg`` by ``<data root>/REL``, in place. Returns, per
    config key so resolved, what to run if its folder is missing (for the errors of :func:`check`)."""
    from liif.data import roots

    d, v = cfg.data.train, cfg.data.val
    hints: dict[str, str] = {}
    for i, text in enumerate(d.roots):
        hints[f"data.train.roots[{i}]"] = roots.fetch_hint(text)
        d.roots[i] = roots.resolve(text, root)
    for key, obj, attr in (("data.train.div2k", d, "div2k"), ("data.train.cache_dir", d, "cache_dir"),
                           ("data.val.hr", v, "hr"), ("data.val.lr", v, "lr")):
        text = getattr(obj, attr)
        if text is not None:
            hints[key] = roots.fetch_hint(text)
            setattr(obj, attr, roots.resolve(text, root))
    return {k: h for k, h in hints.items() if h}


def apply_override(raw: dict[str, Any], item: str) -> None:
    """``a.b.c=value`` (value parsed as YAML) into the nested dict ``raw``."""
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise LiifError(f"--set expects KEY=VALUE with a dotted key, e.g. train.lr=2e-4; got {item!r}")
    node = raw
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        nxt = node.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise LiifError(f"--set {key}: {'.'.join(parts[:i + 1])} is not a section")
        node = nxt
    try:
        node[parts[-1]] = yaml.safe_load(value)
    except yaml.YAMLError:
        node[parts[-1]] = value


def from_dict(raw: dict[str, Any]) -> Config:
    return _build(Config, raw, "")


def _build(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise LiifError(f"config key {where or '<top>'} must be a section (mapping), got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise LiifError(f"unknown config key {_join(where, unknown[0])} (known keys here: {', '.join(sorted(names))})")
    kw = {name: _coerce(hints[name], value, _join(where, name)) for name, value in raw.items()}
    return cls(**kw)


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, key)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value if value is not None else {}, key)  # type: ignore[arg-type]
    if origin is list:
        if not isinstance(value, list):
            raise LiifError(f"config key {key} must be a list, got {value!r}")
        return [_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise LiifError(f"config key {key} must be a mapping, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise LiifError(f"config key {key} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise LiifError(f"config key {key} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool):
            raise LiifError(f"config key {key} must be a number, got {value!r}")
        try:
            return float(value)  # YAML reads 1e-4 (no dot) as a string
        except (TypeError, ValueError):
            raise LiifError(f"config key {key} must be a number, got {value!r}") from None
    if tp is str:
        if not isinstance(value, str):
            raise LiifError(f"config key {key} must be a string, got {value!r}")
        return value
    return value


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def dump(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
