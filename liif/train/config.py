"""Training configuration: YAML file + dotted ``--set a.b=c`` overrides, checked before training.

The config is a tree of dataclasses; every key, type and path is validated up front and errors
name the offending key (``train.lr``) or path, so a typo never costs a half-finished run.
Data paths written ``data:REL`` are resolved under the data root (``--data-root``, else
``$LIIF_DATA_DIR``, else the cache: :mod:`liif.data.roots`); other relative paths against the
current directory.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from liif.compute import CHOICES as PRECISIONS
from liif.errors import LiifError
from liif.models.spec import ModelSpec


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


def check(cfg: Config, hints: dict[str, str] | None = None) -> None:
    """Value and path checks that need more than types; each error names its key or path (and, from
    ``hints``, what to fetch when a ``data:`` folder is missing)."""
    from liif.data.folders import list_images

    try:
        cfg.model_spec()
    except (ValueError, TypeError) as e:
        raise LiifError(f"config key model: {e}") from None
    t, d = cfg.train, cfg.data.train
    _positive("train.batch_size", t.batch_size)
    _positive("train.epochs", t.epochs)
    _positive("data.train.repeat", d.repeat)
    _positive("data.train.inp_size", d.inp_size)
    _positive("data.train.sample_q", d.sample_q)
    _positive("data.val.scale", cfg.data.val.scale)
    _positive("data.val.every", cfg.data.val.every)
    _positive("checkpoint.save_every", cfg.checkpoint.save_every)
    _positive("log.every", cfg.log.every)
    if cfg.checkpoint.last_every_iters < 0:
        raise LiifError(f"config key checkpoint.last_every_iters must be >= 0, got {cfg.checkpoint.last_every_iters}")
    if not cfg.checkpoint.last_every_s >= 0:
        raise LiifError(f"config key checkpoint.last_every_s must be >= 0, got {cfg.checkpoint.last_every_s}")
    if t.lr <= 0:
        raise LiifError(f"config key train.lr must be positive, got {t.lr}")
    if not (math.isfinite(t.budget_minutes) and t.budget_minutes >= 0):
        raise LiifError(f"config key train.budget_minutes must be a finite number >= 0, got {t.budget_minutes}")
    if t.precision not in PRECISIONS:
        raise LiifError(f"config key train.precision must be one of {', '.join(PRECISIONS)}, got {t.precision!r}")
    if t.device not in ("auto", "cpu", "cuda"):
        raise LiifError(f"config key train.device must be auto, cpu or cuda, got {t.device!r}")
    if d.cache not in ("memory", "mmap", "none"):
        raise LiifError(f"config key data.train.cache must be 'memory', 'mmap' or 'none', got {d.cache!r}")
    if not 1.0 <= d.scale_min <= d.scale_max:
        raise LiifError(f"config keys data.train.scale_min/scale_max need 1 <= min <= max, "
                        f"got {d.scale_min}, {d.scale_max}")
    if d.sample_q > d.inp_size ** 2:
        raise LiifError(f"config key data.train.sample_q ({d.sample_q}) exceeds inp_size^2 ({d.inp_size ** 2})")
    if t.threads < 0:
        raise LiifError(f"config key train.threads must be >= 0, got {t.threads}")
    if cfg.data.workers < 0:
        raise LiifError(f"config key data.workers must be >= 0, got {cfg.data.workers}")
    if (d.div2k is None) == (not d.roots):
        raise LiifError("config key data.train: give exactly one of roots (image folders) or div2k (a DIV2K root)")
    folders = [(f"data.train.roots[{i}]", r) for i, r in enumerate(d.roots)]
    if d.div2k is not None:
        folders.append(("data.train.div2k", str(Path(d.div2k) / "DIV2K_train_HR")))
    v = cfg.data.val
    if v.hr is not None:
        folders.append(("data.val.hr", v.hr))
    if v.lr is not None:
        if v.hr is None:
            raise LiifError("config key data.val.lr needs data.val.hr")
        folders.append(("data.val.lr", v.lr))
    for key, folder in folders:
        try:
            list_images(folder)
        except LiifError as e:
            hint = (hints or {}).get(key, "")
            raise LiifError(f"config key {key}: {e}{hint}") from None
    if t.precision == "fp16" and t.device == "cpu":
        raise LiifError("config key train.precision: fp16 needs CUDA; use bf16 on the CPU")


def _positive(key: str, value: int) -> None:
    if value <= 0:
        raise LiifError(f"config key {key} must be positive, got {value}")


def dump(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
