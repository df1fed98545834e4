"""Training values: a bad value is one config error before anything starts or is written; a run whose loss
or weights become non-finite stops and keeps its last finite checkpoint; a checkpoint write that fails
leaves the previous checkpoint and no partial folder; --resume names the settings that changed and
applies them."""
from __future__ import annotations

import csv
import errno
import re
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from conftest import make_images, one_error_line, run_cli, tiny_config
from liif import checkpoints
from liif.errors import LiifError
from liif.models import ModelSpec
from liif.train import config, loop
from liif.train import run_state as ckpt
from liif.train.config import Optim
from liif.train.processes import Procs


def _train_cli(path: Path, out: Path, *args: str) -> list[str]:
    return ["train", str(path), "--out", str(out), "--no-progress", *args]


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "log.csv") as f:
        return list(csv.DictReader(f))


# -- values checked by config.load, before anything -------------------------------------------------------

@pytest.mark.parametrize("override,message", [
    ("train.lr=.nan", r"config key train\.lr must be a finite number > 0, got nan"),
    ("train.lr=.inf", r"config key train\.lr must be a finite number > 0, got inf"),
    ("train.gamma=.nan", r"config key train\.gamma must be a finite number > 0, got nan"),
    ("train.gamma=0", r"config key train\.gamma must be a finite number > 0, got 0\.0"),
    ("train.milestones=[0]", r"config key train\.milestones\[0\] must be positive, got 0"),
    ("data.train.scale_max=.inf", r"config keys data\.train\.scale_min/scale_max need 1 <= min <= max, both "
                                  r"finite, got 1\.0, inf"),
    ("train.seed=-1", r"config key train\.seed must be between 0 and 4294967295, got -1"),
    ("data.val.first_k=0", r"config key data\.val\.first_k must be positive, got 0"),
    ("data.val.scale=20", r"config key data\.val\.scale: .*/images/00\.png \(40x40\) is too small for validation "
                          r"at x20: 40 px across after cropping to a multiple of 20, no more than the 20 px "
                          r"shaved off each border"),
    ("data.train.repeat=10000000", r"config key data\.train\.repeat: 6 images x 10000000 = 60,000,000 samples "
                                   r"per epoch, more than 10,000,000; lower the repeat"),
    ("model.encoder_args.bogus=1", r"config key model\.encoder_args: edsr-baseline takes no argument 'bogus' "
                                   r"\(it takes n_resblocks, n_feats, res_scale, scale, no_upsampling, rgb_range, "
                                   r"n_colors\)"),
    ("model.encoder_args=[1]", r"config key model\.encoder_args must be a mapping, got \[1\]"),
    ("model.encoder_args.n_feats=0", r"config key model\.encoder_args\.n_feats must be an integer from 1 to 1024, "
                                     r"got 0"),
    ("model.encoder_args.n_resblocks=100000", r"config key model\.encoder_args\.n_resblocks must be an integer "
                                              r"from 1 to 1024, got 100000"),
    ("model.encoder_args.res_scale=.nan", r"config key model\.encoder_args\.res_scale must be a finite number > 0, "
                                          r"got nan"),
    ("model.hidden=[100000000,100000000]", r"config key model\.hidden\[0\] must be an integer from 1 to 4096, "
                                           r"got 100000000"),
    ("model.hidden=abc", r"config key model\.hidden must be a list of at most 64 layer widths \(or null\), "
                         r"got 'abc'"),
    ("model.hidden=[256.5]", r"config key model\.hidden\[0\] must be an integer from 1 to 4096, got 256\.5"),
    ("model.hidden=[-5]", r"config key model\.hidden\[0\] must be an integer from 1 to 4096, got -5"),
    ("model.inp_std=[0,0,0]", r"config key model\.inp_std must be positive \(it divides\), got \[0, 0, 0\]"),
    ("model.inp_mean=[1]", r"config key model\.inp_mean must be 3 finite numbers \(R, G, B\), got \[1\]"),
    ("model.out_mean=abc", r"config key model\.out_mean must be 3 finite numbers \(R, G, B\), got 'abc'"),
])
def test_bad_training_values_are_one_config_error_before_anything(tmp_path: Path, override: str, message: str,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    path = tiny_config(tmp_path)
    with pytest.raises(LiifError, match=f"^{message}$"):
        config.load(path, [override])
    out = tmp_path / "run"
    rc, _, err = run_cli(_train_cli(path, out, "--set", override), capsys)
    assert rc == 1 and re.fullmatch(f"liif: error: {message}", one_error_line(err))
    assert not out.exists()


def test_family_fields_take_every_value_their_class_declares(tmp_path: Path) -> None:
    # LTE's cell_clip_scale is ``float | None`` (None: no clipping); the check once took the type of the
    # default (float) and refused a valid null
    path = tiny_config(tmp_path, **{"model.method": "lte", "model.hidden_dim": 8})
    spec = config.load(path, ["model.cell_clip_scale=null"]).model_spec()
    assert spec.own["cell_clip_scale"] is None
    assert config.load(path, ["model.cell_clip_scale=2"]).model_spec().own["cell_clip_scale"] == 2
    with pytest.raises(LiifError, match=r"^config key model: cell_clip_scale must be from 1e-06 to inf, got 0$"):
        config.load(path, ["model.cell_clip_scale=0"])
    with pytest.raises(LiifError, match=r"^config key model: global_term must be true or false, got 'yes'$"):
        config.load(path, ["model.global_term='yes'"])


@pytest.mark.parametrize("override,message", [
    ("model.hidden=null", "config key model: the model does not run: this LIIF model has no MLP decoder "
                          "(nearest sampling only)"),
    # (the model spec's own checks, liif.models.validate, refuse these two before anything is built)
    ("model.encoder_args.n_colors=5", "config key model: encoder_args.n_colors must be one of 3, got 5"),
    ("model.method=lte", "config key model: LTE's hidden_dim must be even, got 7"),
])
def test_a_model_that_cannot_build_or_run_stops_before_anything(tmp_path: Path, override: str, message: str,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    path = tiny_config(tmp_path, **{"model.hidden_dim": 7} if "lte" in override else {})
    out = tmp_path / "run"
    rc, _, err = run_cli(_train_cli(path, out, "--set", override), capsys)
    assert rc == 1 and one_error_line(err).startswith(f"liif: error: {message}")
    assert not out.exists()


def test_a_model_over_the_parameter_cap_is_refused_before_it_is_allocated(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The size is counted on the meta device; then the cap is lowered so that the tiny model exceeds it."""
    from liif.train import checks

    spec = ModelSpec.from_dict({"encoder": "edsr", "encoder_args": {"n_resblocks": 64, "n_feats": 1024}})
    with pytest.raises(LiifError, match=r"^config key model: 1,220,116,251 parameters, more than the 1,000,000,000 "
                                        r"a training run takes \(encoder_args \{'n_resblocks': 64, 'n_feats': 1024\}, "
                                        r"hidden \[256, 256, 256, 256\]\)$"):
        checks.check_model_size(spec)  # 4.9 GB of fp32 weights if it were built for real
    monkeypatch.setattr(checks, "MAX_PARAMS", 3000)
    out = tmp_path / "run"
    rc, _, err = run_cli(_train_cli(tiny_config(tmp_path), out), capsys)
    assert rc == 1 and one_error_line(err) == (
        "liif: error: config key model: 3,283 parameters, more than the 3,000 a training run takes "
        "(encoder_args {'n_feats': 8, 'n_resblocks': 1}, hidden [16])")
    assert not out.exists()


# -- files: the run folder and the images ----------------------------------------------------------------

def test_the_run_folder_must_be_creatable_and_writable_before_anything(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    path = tiny_config(tmp_path)
    a_file = tmp_path / "a-file"
    a_file.write_text("keep me")
    for out, message in [
        (a_file, f"--out {a_file} is a file, not a folder"),
        (a_file / "run", f"--out {a_file}/run cannot be created: {a_file} is a file"),
        (Path("/proc/liif-run"), "--out /proc/liif-run cannot be created: /proc takes no new files "
                                 "(No such file or directory)"),
    ]:
        rc, _, err = run_cli(_train_cli(path, out), capsys)
        assert rc == 1 and one_error_line(err) == f"liif: error: {message}"
    assert a_file.read_text() == "keep me"
    with pytest.raises(LiifError, match=f"^config key data.train.cache_dir {a_file} is a file, not a folder$"):
        config.load(path, ["data.train.cache=mmap", f"data.train.cache_dir={a_file}"])
    from liif.train.checks import check_folder

    check_folder(tmp_path / "new" / "deeper", "--out")  # creatable: fine, and nothing is created
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("cache", ["none", "memory", "mmap"])
def test_an_unreadable_image_is_named_before_anything_whatever_the_cache(
        tmp_path: Path, cache: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = tiny_config(tmp_path, **{"data.train.cache": cache})
    bad = tmp_path / "images" / "03.png"
    bad.write_bytes(b"not a png at all" * 10)
    out = tmp_path / "run"
    rc, _, err = run_cli(_train_cli(path, out), capsys)
    assert rc == 1
    assert one_error_line(err) == f"liif: error: config key data.train.roots[0]: {bad} is not an image Pillow can read"
    assert not out.exists()
    # the validation folder too (here the same folder, read beyond first_k), not after the first epoch
    with pytest.raises(LiifError, match=f"^config key data.val.hr: {bad} is not an image Pillow can read$"):
        config.load(path, ["data.val.first_k=null", f"data.train.roots=[{make_images(tmp_path / 'good')}]"])


def test_an_uncached_image_folder_names_an_unreadable_file(tmp_path: Path) -> None:
    """Without the config's check (the Python API), the sampler's size survey names the file too."""
    from liif.data.folders import ImageFolder
    from liif.data.sampling import ImplicitDownsampled

    bad = make_images(tmp_path / "images", n=2) / "01.png"
    bad.write_bytes(b"garbage")
    with pytest.raises(LiifError, match=f"^cannot read image {bad}: cannot identify image file"):
        ImplicitDownsampled(ImageFolder(tmp_path / "images", cache="none"), inp_size=12, sample_q=64)


def test_an_image_that_fails_to_decode_in_a_loader_worker_is_one_line(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """A truncated PNG passes the header check; with cache none it fails in the DataLoader worker, which
    wraps the error in its traceback: the run still ends with the one line."""
    path = tiny_config(tmp_path, **{"data.train.cache": "none", "data.workers": 1, "data.val.hr": "null"})
    bad = tmp_path / "images" / "03.png"
    bad.write_bytes(bad.read_bytes()[:200])
    rc, _, err = run_cli(_train_cli(path, tmp_path / "run"), capsys)
    assert rc == 1
    assert one_error_line(err.split("\n", 1)[1]) == f"liif: error: cannot decode image {bad}: image file is truncated"


# -- a run that diverges ---------------------------------------------------------------------------------

def test_an_lr_that_blows_up_stops_the_run_at_the_first_non_finite_loss(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    path = tiny_config(tmp_path)
    out = tmp_path / "run"
    rc, out_text, err = run_cli(_train_cli(path, out, "--set", "train.lr=1e10"), capsys)
    assert rc == 1 and out_text == ""  # no summary
    assert one_error_line(err.split("\n", 1)[1]) == (
        "liif: error: the loss became nan at step 2 (epoch 1, iteration 2): training stopped; no checkpoint had "
        "been saved yet; lower train.lr or check the data and the model's normalisation")
    assert not (out / "checkpoints").exists()


def _poison_at(monkeypatch: pytest.MonkeyPatch, step: int, loss: float) -> None:
    """From step ``step`` on, the step leaves NaN weights and returns ``loss``."""
    real, done = loop.train_step, [0]

    def step_then_poison(forward: Any, model: torch.nn.Module, *args: Any) -> float:
        value = real(forward, model, *args)
        done[0] += 1
        if done[0] < step:
            return value
        with torch.no_grad():
            next(model.imnet.parameters()).fill_(float("nan"))
        return loss

    monkeypatch.setattr(loop, "train_step", step_then_poison)


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_finite_checkpoint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    path = tiny_config(tmp_path, **{"train.epochs": 3})  # 3 steps per epoch; checkpoints after step 3
    _poison_at(monkeypatch, 5, float("nan"))
    out = tmp_path / "run"
    rc, out_text, err = run_cli(_train_cli(path, out), capsys)
    assert rc == 1 and out_text == ""
    last = out / "checkpoints" / "last"
    assert one_error_line(err.split("\n", 1)[1]) == (
        f"liif: error: the loss became nan at step 5 (epoch 2, iteration 2): training stopped; the last checkpoint, "
        f"{last} (step 3), holds finite weights (nothing later was saved); lower train.lr or check the data and "
        f"the model's normalisation")
    weights = checkpoints.read(last / "model.safetensors")[1]
    assert all(bool(torch.isfinite(w).all()) for w in weights.values())
    assert torch.load(last / "state.pt", weights_only=True)["step"] == 3
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["best", "epoch-1", "last"]


def test_non_finite_weights_are_never_saved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """The last step of the epoch leaves NaN weights behind a finite loss: neither the validation nor any
    checkpoint sees them."""
    _poison_at(monkeypatch, 3, 0.5)
    out = tmp_path / "run"
    rc, _, err = run_cli(_train_cli(tiny_config(tmp_path), out), capsys)
    assert rc == 1 and one_error_line(err.split("\n", 1)[1]) == (
        "liif: error: the weights became non-finite at step 3 (epoch 1, iteration 3): training stopped; no "
        "checkpoint had been saved yet; lower train.lr or check the data and the model's normalisation")
    assert not (out / "checkpoints").exists()
    assert [r["val_psnr"] for r in _rows(out)] == ["", ""]  # steps 1 and 2; no row (and no PSNR) for step 3


class _TwoRanks(Procs):
    """Rank 1 of 2, with rank 0's contribution to the sum given."""

    def __init__(self, rank0: list[int]) -> None:
        super().__init__(rank=1, world=2)
        object.__setattr__(self, "rank0", rank0)

    def all_sum(self, t: torch.Tensor) -> torch.Tensor:
        return t + torch.tensor(self.rank0, dtype=t.dtype)


def test_every_rank_learns_of_a_non_finite_loss_and_follows_rank_0s_clock() -> None:
    now = time.monotonic()
    run = SimpleNamespace(clock=now - 10, last_saved=now - 1e6)

    def setup(rank0: list[int]) -> Any:
        cfg = SimpleNamespace(checkpoint=SimpleNamespace(last_every_s=60.0), train=Optim())
        return SimpleNamespace(budget_s=None, deadline=now - 1, cfg=cfg, procs=_TwoRanks(rank0))

    # rank 1's own clock says stop and save; rank 0's does not: rank 0 decides. Rank 1's NaN stops both.
    assert loop.decide(setup([0, 0, 0, 0, 0]), run, now, float("nan")) == (False, False, False, 0, True)
    assert loop.decide(setup([1, 0, 0, 0, 0]), run, now, 0.25) == (True, False, False, 0, False)
    assert loop.decide(setup([0, 0, 0, 0, 1]), run, now, 0.25) == (False, False, False, 0, True)  # rank 0's NaN


# -- a full disk while saving ------------------------------------------------------------------------------

class SafetensorError(Exception):
    """What safetensors raises for a failed write (its class lives in a Rust extension)."""


@pytest.mark.parametrize("writer,error,why", [
    ("weights", OSError(errno.ENOSPC, "No space left on device"), "No space left on device"),
    ("safetensors", SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)"),
     r"Error while serializing: I/O error: No space left on device \(os error 28\) \([0-9.]+ \w+ free on its disk\)"),
    # torch.save's zip writer on a full disk says only this: the free space of the disk is added
    ("state", RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"),
     r"\[enforce fail at inline_container\.cc:672\] \. unexpected pos 576 vs 534 \([0-9.]+ \w+ free on its disk\)"),
])
def test_a_full_disk_during_a_checkpoint_save_is_one_line_and_leaves_no_partial_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        writer: str, error: Exception, why: str) -> None:
    """The first epoch's 'last' is written; the second's write fails half-way (a partial file in .last.new)."""
    path = tiny_config(tmp_path, **{"data.val.hr": "null", "checkpoint.save_every": 100})
    calls = [0]

    def fail_on_the_second(real: Any) -> Any:
        def write(obj: Any, target: Any, *args: Any, **kw: Any) -> Any:
            calls[0] += 1
            if calls[0] < 2:
                return real(obj, target, *args, **kw)
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            Path(target).write_bytes(b"partial")
            raise error
        return write

    if writer == "state":
        monkeypatch.setattr(ckpt.torch, "save", fail_on_the_second(torch.save))
    else:
        real_save = ckpt.checkpoints.save
        monkeypatch.setattr(ckpt.checkpoints, "save", lambda m, spec, p: fail_on_the_second(
            lambda mm, pp: real_save(mm, spec, pp))(m, p))
    out = tmp_path / "run"
    rc, out_text, err = run_cli(_train_cli(path, out), capsys)
    last = out / "checkpoints" / "last"
    assert rc == 1 and out_text == ""
    assert re.fullmatch(f"liif: error: cannot save checkpoint {re.escape(str(last))}: {why}; the previous last is kept",
                        one_error_line(err.split("\n", 1)[1]))
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["last"]  # no .last.new
    assert ckpt.complete(last) and torch.load(last / "state.pt", weights_only=True)["step"] == 3


# -- resume with a changed config ----------------------------------------------------------------------------

def test_resume_names_the_settings_that_changed_and_applies_them(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """lr 1e-3, milestone 1, gamma 0.5: resumed after 2 epochs with lr 2e-4 and 3 epochs, step 7 runs at
    2e-4 x 0.5 (the checkpoint's schedule would have kept 5e-4)."""
    path = tiny_config(tmp_path, **{"data.val.hr": "null"})
    out = tmp_path / "run"
    assert run_cli(_train_cli(path, out), capsys)[0] == 0
    rc, _, err = run_cli(_train_cli(path, out, "--resume", "--set", "train.epochs=3", "--set", "train.lr=2e-4"),
                         capsys)
    assert rc == 0
    note = [line for line in err.splitlines() if "differs" in line]
    assert note == ["--resume: the config differs from the run's saved one in train.epochs 2 -> 3; train.lr 0.001 "
                    "-> 0.0002; the new values apply from step 7 (only the model section must not change)"]
    lrs = {int(r["step"]): float(r["lr"]) for r in _rows(out)}
    assert (lrs[6], lrs[7], lrs[9]) == (pytest.approx(5e-4), pytest.approx(1e-4), pytest.approx(1e-4))
    # unchanged, nothing is said
    rc, _, err = run_cli(_train_cli(path, out, "--resume", "--set", "train.epochs=3", "--set", "train.lr=2e-4"),
                         capsys)
    assert rc == 0 and "differs" not in err


def test_under_fp16_a_few_overflowing_steps_are_the_scalers_and_a_streak_stops(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """With the fp16 gradient scaler on, a step whose loss overflows is skipped by the scaler (the weights
    stay finite): three such steps do not stop the run; FP16_SKIPS of them in a row do."""
    monkeypatch.setattr(torch.amp.GradScaler, "is_enabled", lambda self: True)  # as under fp16 on CUDA
    real, done = loop.train_step, [0]

    def overflow_at_2_to_4(*args: Any) -> float:
        value = real(*args)
        done[0] += 1
        return float("inf") if 2 <= done[0] <= 4 else value

    monkeypatch.setattr(loop, "train_step", overflow_at_2_to_4)
    path = tiny_config(tmp_path, **{"train.epochs": 2})
    rc, _, err = run_cli(_train_cli(path, tmp_path / "run"), capsys)
    assert rc == 0 and done[0] == 6, err
    done[0] = 0
    monkeypatch.setattr(loop, "FP16_SKIPS", 3)
    rc, _, err = run_cli(_train_cli(path, tmp_path / "run2"), capsys)
    assert rc == 1 and done[0] == 4
    assert "liif: error: the loss became inf (3 steps in a row) at step 4 (epoch 2, iteration 1)" in err
