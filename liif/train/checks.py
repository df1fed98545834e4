"""The value checks of a training config, run before anything is built or written: ranges of the
numbers, the model's arguments, every image's header and the validation images' sizes (``check``, run
by ``config.load``; the model section's types and ranges are also those every model spec checks,
``liif.models.validate``); the model's size, counted on the meta device (``check_model_size``, run by
the loop before it builds the model); whether the run folder can be written (``check_folder``).

Each problem is one :class:`LiifError` that names its config key (``config key train.lr ...``), the file
or the folder, so a bad value never costs a traceback after an epoch of training.
"""
from __future__ import annotations

import inspect
import math
import os
import tempfile
import types
import typing
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image, UnidentifiedImageError

from liif.compute import CHOICES as PRECISIONS
from liif.errors import LiifError
from liif.models import edsr, family, rdn
from liif.models.spec import ENCODERS, MEANS, ModelSpec, meta_shapes, parameters

if TYPE_CHECKING:
    from liif.train.config import Config

MAX_WIDTH = 4096  # MLP widths and the decoder's own sizes (LTE's hidden_dim): the paper's are 256
MAX_ENCODER = 1024  # the encoder's sizes (channels, blocks): the paper's largest is 256; building 2 x 1024
#                     convolutions, even on the meta device, takes seconds
MAX_DEPTH = 64  # MLP layers (the paper: 4)
MAX_PARAMS = 1_000_000_000  # 4 GB of fp32 weights, 12 GB with Adam's moments (RDN-LIIF: 22 M)
MAX_SEED = 2**32 - 1  # numpy's seed range (the sampler), and seed x 100003 stays within torch's int64
MAX_SAMPLES = 10_000_000  # samples per epoch (images x repeat): each epoch's shuffled order is a list of them


def check(cfg: Config, hints: dict[str, str] | None = None) -> None:
    """Value and path checks that need more than types; each error names its key or path (and, from
    ``hints``, what to fetch when a ``data:`` folder is missing)."""
    check_numbers(cfg)
    check_model(cfg.model)
    check_extras(cfg)
    check_data(cfg, hints or {})


def check_extras(cfg: Config) -> None:
    """The degradation block (every range and probability) and the initial weights (a known name or a file)."""
    from liif.data.degrade.settings import problems
    from liif.weights import REGISTRY

    if cfg.data.train.degradation is not None:
        found = problems(cfg.data.train.degradation)
        if found:
            raise LiifError(found[0])
    init = cfg.train.init
    if init is not None and init not in REGISTRY and not Path(init).expanduser().is_file():
        raise LiifError(f"config key train.init: {init!r} is neither a pretrained name ({', '.join(REGISTRY)}) "
                        f"nor a checkpoint file")


def check_numbers(cfg: Config) -> None:
    """Ranges of the numbers and choices of ``train``, ``data``, ``checkpoint`` and ``log``."""
    t, d, v = cfg.train, cfg.data.train, cfg.data.val
    for key, value in (("train.batch_size", t.batch_size), ("train.epochs", t.epochs),
                       ("data.train.repeat", d.repeat), ("data.train.inp_size", d.inp_size),
                       ("data.train.sample_q", d.sample_q), ("data.val.scale", v.scale),
                       ("data.val.every", v.every), ("checkpoint.save_every", cfg.checkpoint.save_every),
                       ("log.every", cfg.log.every)):
        _positive(key, value)
    if v.first_k is not None:
        _positive("data.val.first_k", v.first_k)
    for i, m in enumerate(t.milestones):
        _positive(f"train.milestones[{i}]", m)
    if cfg.checkpoint.last_every_iters < 0:
        raise LiifError(f"config key checkpoint.last_every_iters must be >= 0, got {cfg.checkpoint.last_every_iters}")
    if not cfg.checkpoint.last_every_s >= 0:
        raise LiifError(f"config key checkpoint.last_every_s must be >= 0, got {cfg.checkpoint.last_every_s}")
    for key, x in (("train.lr", t.lr), ("train.gamma", t.gamma)):
        if not (math.isfinite(x) and x > 0):
            raise LiifError(f"config key {key} must be a finite number > 0, got {x}")
    if not (math.isfinite(t.budget_minutes) and t.budget_minutes >= 0):
        raise LiifError(f"config key train.budget_minutes must be a finite number >= 0, got {t.budget_minutes}")
    if not 0 <= t.seed <= MAX_SEED:
        raise LiifError(f"config key train.seed must be between 0 and {MAX_SEED}, got {t.seed}")
    if t.precision not in PRECISIONS:
        raise LiifError(f"config key train.precision must be one of {', '.join(PRECISIONS)}, got {t.precision!r}")
    if t.device not in ("auto", "cpu", "cuda"):
        raise LiifError(f"config key train.device must be auto, cpu or cuda, got {t.device!r}")
    if t.precision == "fp16" and t.device == "cpu":
        raise LiifError("config key train.precision: fp16 needs CUDA; use bf16 on the CPU")
    if d.cache not in ("memory", "mmap", "none"):
        raise LiifError(f"config key data.train.cache must be 'memory', 'mmap' or 'none', got {d.cache!r}")
    if not (math.isfinite(d.scale_max) and 1.0 <= d.scale_min <= d.scale_max):
        raise LiifError(f"config keys data.train.scale_min/scale_max need 1 <= min <= max, both finite, "
                        f"got {d.scale_min}, {d.scale_max}")
    if d.sample_q > d.inp_size ** 2:
        raise LiifError(f"config key data.train.sample_q ({d.sample_q}) exceeds inp_size^2 ({d.inp_size ** 2})")
    if t.threads < 0:
        raise LiifError(f"config key train.threads must be >= 0, got {t.threads}")
    if cfg.data.workers < 0:
        raise LiifError(f"config key data.workers must be >= 0, got {cfg.data.workers}")


def _positive(key: str, value: int) -> None:
    if value <= 0:
        raise LiifError(f"config key {key} must be positive, got {value}")


# -- the model ----------------------------------------------------------------------------------------------

def check_model(model: dict[str, Any]) -> ModelSpec:
    """The ``model`` section as a spec whose arguments have the types and sizes its classes take."""
    for name in MEANS:
        values = model.get(name, [0.5] * 3)
        if not (isinstance(values, (list, tuple)) and len(values) == 3 and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in values)):
            raise LiifError(f"config key model.{name} must be 3 finite numbers (R, G, B), got {_short(values)}")
        if name.endswith("std") and min(values) <= 0:
            raise LiifError(f"config key model.{name} must be positive (it divides), got {values}")
    # The training caps first, on the raw section, so their messages name the key; then the spec's own
    # checks (liif.models.validate: types, ranges, the family's fields), which hold for every spec.
    _check_hidden(model.get("hidden"))
    encoder = model.get("encoder", "edsr-baseline")
    if isinstance(encoder, str) and encoder in ENCODERS:
        _check_encoder_args(encoder, {} if model.get("encoder_args") is None else model["encoder_args"])
    try:
        spec = ModelSpec.from_dict(model)
    except (ValueError, TypeError) as e:
        raise LiifError(f"config key model: {e}") from None
    fam = family.get(spec.method)
    hints = _init_hints(fam.model)
    for name, default in fam.spec_fields.items():  # the type the class declares (LTE: cell_clip_scale may be None)
        tp = hints.get(name, type(default) if default is not None else typing.Any)
        _check_value(f"model.{name}", spec.own[name], tp)
    return spec


def check_model_size(spec: ModelSpec) -> None:
    """The model of ``spec``, built on the meta device (shapes only, no memory), builds and has at most
    ``MAX_PARAMS`` parameters."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            params = parameters(meta_shapes(spec))  # uncapped: the training cap is named here
    except (ValueError, TypeError, RuntimeError, KeyError, IndexError, AssertionError) as e:
        raise LiifError(f"config key model: cannot build it ({type(e).__name__}: {_first_line(e)})") from None
    if params > MAX_PARAMS:
        raise LiifError(f"config key model: {params:,} parameters, more than the {MAX_PARAMS:,} a training run "
                        f"takes (encoder_args {spec.encoder_args}, hidden {spec.hidden})")


def _init_hints(cls: Any) -> dict[str, Any]:
    """The type hints of ``cls.__init__``; none where they do not resolve."""
    try:
        return typing.get_type_hints(cls.__init__)
    except (NameError, TypeError, AttributeError):
        return {}


def _check_hidden(hidden: Any) -> None:
    if hidden is None:
        return
    if not isinstance(hidden, list) or len(hidden) > MAX_DEPTH:
        raise LiifError(f"config key model.hidden must be a list of at most {MAX_DEPTH} layer widths "
                        f"(or null), got {_short(hidden)}")
    for i, width in enumerate(hidden):
        _check_value(f"model.hidden[{i}]", width, int)


def _check_encoder_args(encoder: str, args: Any) -> None:
    """Every ``encoder_args`` key is an argument of the encoder's class, of the type it declares."""
    if not isinstance(args, dict):
        raise LiifError(f"config key model.encoder_args must be a mapping, got {_short(args)}")
    cls = rdn.RDN if encoder in rdn.VARIANTS else edsr.EDSR  # as liif.models.spec.build_encoder picks
    hints = typing.get_type_hints(cls.__init__)
    known = [n for n in inspect.signature(cls.__init__).parameters if n != "self"]
    for name, value in args.items():
        if name not in known:
            raise LiifError(f"config key model.encoder_args: {encoder} takes no argument {name!r} "
                            f"(it takes {', '.join(known)})")
        _check_value(f"model.encoder_args.{name}", value, hints.get(name, typing.Any), MAX_ENCODER)


def _check_value(key: str, value: Any, tp: Any, cap: int = MAX_WIDTH) -> None:
    """``value`` of declared type ``tp``: a bool is a bool, an int a size in 1..``cap``, a float a finite
    number > 0, a str a str (``X | None`` also takes None)."""
    options = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
    if value is None and type(None) in options:
        return
    if bool in options:
        ok, what = isinstance(value, bool), "true or false"
    elif int in options:
        ok = isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= cap
        what = f"an integer from 1 to {cap}"
    elif float in options:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
        what = "a finite number > 0"
    elif str in options:
        ok, what = isinstance(value, str), "a string"
    else:
        return
    if not ok:
        raise LiifError(f"config key {key} must be {what}, got {_short(value)}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:300]


# -- the data -------------------------------------------------------------------------------------------------

def check_data(cfg: Config, hints: dict[str, str]) -> None:
    """Every folder exists and holds images whose headers read; the samples per epoch stay within
    ``MAX_SAMPLES``; each validation image is large enough for the validation scale and its shave."""
    from liif.data.folders import list_images

    d, v = cfg.data.train, cfg.data.val
    if (d.div2k is None) == (not d.roots):
        raise LiifError("config key data.train: give exactly one of roots (image folders) or div2k (a DIV2K root)")
    folders = [(f"data.train.roots[{i}]", r) for i, r in enumerate(d.roots)]
    if d.div2k is not None:
        folders.append(("data.train.div2k", str(Path(d.div2k) / "DIV2K_train_HR")))
    if v.hr is not None:
        folders.append(("data.val.hr", v.hr))
    if v.lr is not None:
        if v.hr is None:
            raise LiifError("config key data.val.lr needs data.val.hr")
        folders.append(("data.val.lr", v.lr))
    sizes: dict[str, list[tuple[Path, int, int]]] = {}
    for key, folder in folders:
        try:
            files = list_images(folder)
        except LiifError as e:
            raise LiifError(f"config key {key}: {e}{hints.get(key, '')}") from None
        sizes[key] = image_sizes(key, files[:v.first_k] if key.startswith("data.val") else files)
    images = sum(len(s) for k, s in sizes.items() if k.startswith("data.train"))
    if images * d.repeat > MAX_SAMPLES:
        raise LiifError(f"config key data.train.repeat: {images} images x {d.repeat} = {images * d.repeat:,} "
                        f"samples per epoch, more than {MAX_SAMPLES:,}; lower the repeat")
    if d.cache == "mmap" and d.cache_dir is not None:
        check_folder(Path(d.cache_dir), "config key data.train.cache_dir")
    lr = sizes.get("data.val.lr")
    if v.hr is not None and (lr is None or len(lr) == len(sizes["data.val.hr"])):  # else PairedFolders explains
        _check_val_sizes(cfg, sizes["data.val.hr"], lr)


def image_sizes(key: str, files: list[Path]) -> list[tuple[Path, int, int]]:
    """(file, width, height) of each file from its header (the pixels are not decoded); a file that is not a
    readable image is an error naming it."""
    out = []
    for f in files:
        try:
            with Image.open(f) as im:
                out.append((f, *im.size))
        except UnidentifiedImageError:
            raise LiifError(f"config key {key}: {f} is not an image Pillow can read") from None
        except Exception as e:  # noqa: BLE001 - Pillow raises many kinds (OSError, DecompressionBombError, ...)
            raise LiifError(f"config key {key}: cannot read image {f}: {_first_line(e)}") from None
    return out


def _check_val_sizes(cfg: Config, hr: list[tuple[Path, int, int]], lr: list[tuple[Path, int, int]] | None) -> None:
    """Validation crops HR to LR x scale (or to a multiple of the scale), then shaves ``shave`` pixels off
    each border before the PSNR: every image must keep pixels after that."""
    v = cfg.data.val
    s = v.scale
    shave = s if v.y_channel else s + 6
    for i, (f, w, h) in enumerate(hr):
        lw, lh = lr[i][1:] if lr is not None else (w // s, h // s)
        if w < lw * s or h < lh * s:
            raise LiifError(f"config key data.val.hr: {f} ({w}x{h}) is smaller than its LR image ({lw}x{lh}) x{s}")
        if min(lw, lh) * s <= 2 * shave:
            raise LiifError(f"config key data.val.scale: {f} ({w}x{h}) is too small for validation at x{s}: "
                            f"{min(lw, lh) * s} px across after cropping to a multiple of {s}, no more than "
                            f"the {shave} px shaved off each border")


# -- the run folder -------------------------------------------------------------------------------------------

def check_folder(folder: Path, what: str) -> None:
    """Before anything is written: ``folder`` is a folder we can write in, or one we can create (the
    nearest existing folder above is a writable folder). Creates nothing."""
    probe = Path(folder)
    while not probe.exists():
        if probe.is_symlink():  # a dangling link where a folder is expected
            raise LiifError(f"{what} {folder}: {probe} is a broken link")
        probe = probe.parent
    if not probe.is_dir():
        where = "is a file, not a folder" if probe == Path(folder) else f"cannot be created: {probe} is a file"
        raise LiifError(f"{what} {folder} {where}")
    try:
        fd, name = tempfile.mkstemp(prefix=".liif-write-test.", dir=probe)
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        where = "is not writable" if probe == Path(folder) else f"cannot be created: {probe} takes no new files"
        raise LiifError(f"{what} {folder} {where} ({e.strerror or e})") from None
