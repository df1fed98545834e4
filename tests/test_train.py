"""Training: config validation, a short run whose checkpoint upscales, kill -9 + --resume, budgets."""
from __future__ import annotations

import csv
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from conftest import DATA, ROOT, data_root_set, make_images, tiny_config
from liif import checkpoints
from liif.cli import main as liif_main
from liif.errors import LiifError
from liif.train import config
from liif.train import run_state as ckpt
from liif.train.datasets import epoch_batches
from liif.train.loop import train

# -- config ----------------------------------------------------------------------------------------

def test_shipped_configs_parse_and_mirror_the_paper(tmp_path: Path) -> None:
    for name in ("train-edsr-baseline-liif.yaml", "train-rdn-liif.yaml"):
        raw = yaml.safe_load((ROOT / "configs" / name).read_text())
        cfg = config.from_dict(raw)
        t, d = cfg.train, cfg.data.train
        assert (t.batch_size, t.epochs, t.lr, t.milestones, t.gamma) == (16, 1000, 1e-4, [200, 400, 600, 800], 0.5)
        assert (d.inp_size, d.scale_min, d.scale_max, d.sample_q, d.repeat) == (48, 1.0, 4.0, 2304, 20)
        assert cfg.model_spec().hidden == [256, 256, 256, 256]
        assert t.precision == "auto"  # what the hardware runs natively (fp32: --set train.precision=fp32)
    root = fake_data_root(tmp_path / "data")
    cfg = config.load(ROOT / "configs" / "tiny-cpu.yaml", data_root=root)
    assert cfg.train.precision == "auto"
    assert cfg.data.train.roots == [str(root / "train" / "T91"), str(root / "train" / "SunHays80")]
    assert cfg.data.val.lr == str(root / "Set14" / "LR_bicubic" / "X4")
    assert (cfg.train.budget_minutes, cfg.train.epochs, cfg.train.milestones) == (12, 16, [10, 14])


def fake_data_root(root: Path) -> Path:
    """A data root laid out as `liif data fetch train` and `liif data fetch set14` leave it (generated
    training images; the repository's Set14)."""
    make_images(root / "train" / "T91", n=2)
    make_images(root / "train" / "SunHays80", n=2)
    (root / "Set14").symlink_to(DATA / "Set14", target_is_directory=True)
    return root


def test_data_paths_resolve_under_the_data_root_and_name_the_fetch(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """`data:` paths: --data-root first, else $LIIF_DATA_DIR; a missing folder names its key and the fetch."""
    root = fake_data_root(tmp_path / "data")
    monkeypatch.setenv("LIIF_DATA_DIR", str(root))
    assert config.load(ROOT / "configs" / "tiny-cpu-lte.yaml").data.val.hr == str(root / "Set14" / "HR")
    empty = tmp_path / "empty"
    with pytest.raises(LiifError, match=r"^config key data\.train\.roots\[0\]: dataset folder not found: "
                       + re.escape(str(empty / "train" / "T91")) + r"; run `liif data fetch train`"):
        config.load(ROOT / "configs" / "tiny-cpu.yaml", data_root=empty)
    (empty / "train").mkdir(parents=True)
    (empty / "train" / "T91").symlink_to(root / "train" / "T91")
    (empty / "train" / "SunHays80").symlink_to(root / "train" / "SunHays80")
    with pytest.raises(LiifError, match=r"^config key data\.val\.hr: .*; run `liif data fetch set14`"):
        config.load(ROOT / "configs" / "tiny-cpu.yaml", data_root=empty)
    assert liif_main(["train", "configs/tiny-cpu.yaml", "--data-root", str(empty), "--out", str(tmp_path / "r")]) == 1
    with pytest.raises(LiifError, match="train.budget_minutes must be a finite number >= 0"):
        config.load(ROOT / "configs" / "tiny-cpu.yaml", ["train.budget_minutes=-1"], data_root=root)


def test_lte_configs_mirror_liif_recipes() -> None:
    """train-edsr-baseline-lte.yaml is the official LTE config (LIIF's recipe, LTE's decoder); tiny-cpu-lte.yaml
    is tiny-cpu.yaml with only the decoder changed, so the two tiny runs have the same budget."""
    liif = yaml.safe_load((ROOT / "configs" / "train-edsr-baseline-liif.yaml").read_text())
    lte = yaml.safe_load((ROOT / "configs" / "train-edsr-baseline-lte.yaml").read_text())
    assert {k: v for k, v in lte.items() if k != "model"} == {k: v for k, v in liif.items() if k != "model"}
    spec = config.from_dict(lte).model_spec()
    assert (spec.method, spec.encoder, spec.hidden, spec.hidden_dim, spec.cell_clip_scale) == (
        "lte", "edsr-baseline", [256, 256, 256], 256, 4.0)
    tiny = yaml.safe_load((ROOT / "configs" / "tiny-cpu.yaml").read_text())
    tiny_lte = yaml.safe_load((ROOT / "configs" / "tiny-cpu-lte.yaml").read_text())
    assert {k: v for k, v in tiny_lte.items() if k != "model"} == {k: v for k, v in tiny.items() if k != "model"}
    assert tiny_lte["model"]["encoder_args"] == tiny["model"]["encoder_args"]
    assert tiny_lte["model"]["method"] == "lte"


def test_lmliif_configs_mirror_liif_recipes() -> None:
    """train-edsr-baseline-lmliif.yaml is LMF's official recipe: LIIF's, with 1,200 epochs halving at every
    200; tiny-cpu-lmliif.yaml is tiny-cpu.yaml with only the decoder changed (LMF's official sizes)."""
    liif = yaml.safe_load((ROOT / "configs" / "train-edsr-baseline-liif.yaml").read_text())
    lm = yaml.safe_load((ROOT / "configs" / "train-edsr-baseline-lmliif.yaml").read_text())
    assert {k: v for k, v in lm.items() if k not in ("model", "train")} == {
        k: v for k, v in liif.items() if k not in ("model", "train")}
    assert lm["train"] == {**liif["train"], "epochs": 1200, "milestones": [200, 400, 600, 800, 1000]}
    spec = config.from_dict(lm).model_spec()
    assert (spec.method, spec.encoder, spec.hidden, spec.hypernet_hidden, spec.cell_clip_scale) == (
        "lmliif", "edsr-baseline", [16] * 6, [208], 4.0)
    tiny = yaml.safe_load((ROOT / "configs" / "tiny-cpu.yaml").read_text())
    tiny_lm = yaml.safe_load((ROOT / "configs" / "tiny-cpu-lmliif.yaml").read_text())
    assert {k: v for k, v in tiny_lm.items() if k != "model"} == {k: v for k, v in tiny.items() if k != "model"}
    assert tiny_lm["model"]["encoder_args"] == tiny["model"]["encoder_args"]
    assert config.from_dict(tiny_lm).model_spec().method == "lmliif"


def test_lte_trains_through_the_seam(tmp_path: Path) -> None:
    """An LTE run: the fold (fast_query) and the reference query give the same losses; the checkpoint is LTE."""
    from liif.models import LTE

    extra = {"model.method": "lte", "model.hidden_dim": 8, "train.epochs": 1}
    fold = train(config.load(tiny_config(tmp_path / "a", **extra)), tmp_path / "fold", progress=False)
    ref = train(config.load(tiny_config(tmp_path / "b", **{**extra, "train.fold": "false"})), tmp_path / "ref",
                progress=False)
    a = [float(r["loss"]) for r in _rows(tmp_path / "fold") if r["loss"]]
    b = [float(r["loss"]) for r in _rows(tmp_path / "ref") if r["loss"]]
    assert len(a) == len(b) == fold["step"] == ref["step"] > 0
    assert max(abs(x - y) for x, y in zip(a, b, strict=True)) < 1e-4
    model, spec = checkpoints.load(tmp_path / "fold" / "checkpoints" / "last" / "model.safetensors")
    assert isinstance(model, LTE) and spec.method == "lte" and spec.hidden_dim == 8


def test_overrides_are_typed(tmp_path: Path) -> None:
    cfg = config.load(tiny_config(tmp_path), ["train.lr=2e-4", "train.milestones=[3, 5]", "data.train.augment=false"])
    assert cfg.train.lr == 2e-4 and cfg.train.milestones == [3, 5] and cfg.data.train.augment is False


@pytest.mark.parametrize("override,message", [
    ("train.lrr=1", r"unknown config key train\.lrr"),
    ("train.batch_size=abc", r"train\.batch_size must be an integer"),
    ("train.fold=maybe", r"train\.fold must be true or false"),
    ("data.train.roots=[/no/such/folder]", r"data\.train\.roots\[0\].*not found: /no/such/folder"),
    ("train.precision=fp8", r"train\.precision must be one of"),
    ("model.encoder=vgg", r"config key model: unknown encoder"),
    ("train.lr=-1", r"train\.lr must be a finite number > 0, got -1\.0"),
])
def test_config_errors_name_the_key_before_training(tmp_path: Path, override: str, message: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = tiny_config(tmp_path)
    with pytest.raises(LiifError, match=message):
        config.load(path, [override])
    out = tmp_path / "run"
    assert liif_main(["train", str(path), "--out", str(out), "--set", override]) == 1
    assert "liif: error: " in capsys.readouterr().err
    assert not out.exists()  # nothing started


def test_train_options_are_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tiny_config(tmp_path)
    out = tmp_path / "run"
    for args, message in [(["--resume", "--restart"], "--resume and --restart exclude each other"),
                          (["--dist-timeout", "0"], "--dist-timeout (or LIIF_DIST_TIMEOUT) must be positive")]:
        assert liif_main(["train", str(path), "--out", str(out), *args]) == 1
        assert f"liif: error: {message}" in capsys.readouterr().err
    assert not out.exists()


def test_empty_dataset_folder_is_reported(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(LiifError, match=r"data\.val\.hr: .*empty holds no images \(\.bmp, \.jpeg"):
        config.load(tiny_config(tmp_path), [f"data.val.hr={tmp_path / 'empty'}"])


# -- the loop ----------------------------------------------------------------------------------------

def test_epoch_batches_split_each_global_batch_across_ranks() -> None:
    single = epoch_batches(50, 8, epoch=3, seed=1)
    r0 = epoch_batches(50, 8, epoch=3, seed=1, rank=0, world=2)
    r1 = epoch_batches(50, 8, epoch=3, seed=1, rank=1, world=2)
    assert len(single) == len(r0) == len(r1) == 6
    for s, a, b in zip(single, r0, r1, strict=True):
        assert len(a) == len(b) == 4 and not set(a) & set(b) and sorted(a + b) == sorted(s)
    assert epoch_batches(50, 8, epoch=4, seed=1) != single
    assert epoch_batches(50, 8, epoch=4, seed=1) != epoch_batches(50, 8, epoch=3, seed=2)  # seeds do not alias


def test_short_run_writes_checkpoints_that_upscale(tmp_path: Path) -> None:
    cfg = config.load(tiny_config(tmp_path))
    out = tmp_path / "run"
    summary = train(cfg, out, progress=False)
    assert summary["step"] == 6 and summary["epoch"] == 2 and np.isfinite(summary["loss"])
    with open(out / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows if r["loss"]] == [1, 2, 3, 4, 5, 6]
    assert [r["val_psnr"] != "" for r in rows].count(True) == 2
    assert float(rows[-1]["lr"]) == pytest.approx(5e-4)  # MultiStepLR milestone 1, gamma 0.5
    for name in ("last", "best", "epoch-1", "epoch-2"):
        assert ckpt.complete(out / "checkpoints" / name)
    model, spec = checkpoints.load(out / "checkpoints" / "last" / "model.safetensors")
    assert spec.encoder_args == {"n_resblocks": 1, "n_feats": 8} and spec.hidden == [16]
    state = torch.load(out / "checkpoints" / "last" / "state.pt", weights_only=True)
    assert state["epoch"] == 2 and state["step"] == 6 and state["config"]["train"]["batch_size"] == 4
    png = tmp_path / "up.png"
    assert liif_main(["upscale", str(tmp_path / "images" / "00.png"), "-o", str(png), "--scale", "2",
                      "--weights", str(out / "checkpoints" / "last" / "model.safetensors")]) == 0
    assert Image.open(png).size == (80, 80)
    with pytest.raises(LiifError, match="already holds a run"):
        train(cfg, out, progress=False)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return checkpoints.read(run / "checkpoints" / "last" / "model.safetensors")[1]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "liif.cli", "train", *args, "--no-progress"]


def test_kill_9_then_resume_continues_the_run(tmp_path: Path) -> None:
    """'last' refreshed by time only (every 1e-9 s: after every step here; 60 s by default), killed mid-run."""
    path = tiny_config(tmp_path, **{"train.epochs": 4, "data.train.repeat": 8, "checkpoint.last_every_s": 1e-9})
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    whole = tmp_path / "whole"
    subprocess.run(_cli(str(path), "--out", str(whole)), check=True, env=env, cwd=ROOT, capture_output=True,
                   timeout=300)
    run = tmp_path / "killed"
    proc = subprocess.Popen(_cli(str(path), "--out", str(run)), env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state_file = run / "checkpoints" / "last" / "state.pt"
    deadline = time.monotonic() + 120
    step = 0
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            step = torch.load(state_file, weights_only=True)["step"]
        except Exception:  # noqa: BLE001 - not there yet, or being replaced
            step = 0
        if step >= 4:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "training ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    found = ckpt.find(run / "checkpoints" / "last")
    assert found is not None
    saved = torch.load(found / "state.pt", weights_only=True)
    killed_at = saved["step"]
    assert 4 <= killed_at < 48 and killed_at == 12 * saved["epoch"] + saved["iter"]
    done = subprocess.run(_cli(str(path), "--out", str(run), "--resume"), env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    e, i = (saved["epoch"] + 1, saved["iter"]) if saved["iter"] else (saved["epoch"], 12)
    assert f"after step {killed_at} (epoch {e}, iteration {i} of 12)" in done.stderr
    with open(run / "log.csv") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f) if r["loss"]]
    assert steps == list(range(1, 49))  # the loss curve continues, no gap, no repeat
    with open(whole / "log.csv") as f:
        whole_loss = [float(r["loss"]) for r in csv.DictReader(f) if r["loss"]]
    with open(run / "log.csv") as f:
        run_loss = [float(r["loss"]) for r in csv.DictReader(f) if r["loss"]]
    np.testing.assert_allclose(run_loss, whole_loss, rtol=1e-4, atol=1e-6)
    a, b = _weights(whole), _weights(run)
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-6)


def test_last_is_refreshed_every_n_iterations_and_by_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    saved: list[tuple[str, int, int]] = []
    real_save = ckpt.save

    def recording_save(folder: Path, model, spec, state):  # noqa: ANN001, ANN202 - records, then saves
        saved.append((Path(folder).name, state["epoch"], state["iter"]))
        return real_save(folder, model, spec, state)

    monkeypatch.setattr(ckpt, "save", recording_save)
    extra = {"train.epochs": 1, "data.train.repeat": 8, "data.val.hr": "null"}  # 12 iterations
    train(config.load(tiny_config(tmp_path, **extra), ["checkpoint.last_every_iters=5", "checkpoint.last_every_s=0"]),
          tmp_path / "iters", progress=False)
    assert [s for s in saved if s[0] == "last"] == [("last", 0, 5), ("last", 0, 10), ("last", 1, 0)]
    saved.clear()
    train(config.load(tiny_config(tmp_path, **extra), ["checkpoint.last_every_s=1e-9"]), tmp_path / "time",
          progress=False)
    assert [s for s in saved if s[0] == "last"] == [("last", 0, i) for i in range(1, 12)] + [("last", 1, 0)]
    assert config.load(ROOT / "configs" / "tiny-cpu.yaml", data_root=fake_data_root(tmp_path / "data")
                       ).checkpoint.last_every_s <= 60  # a kill -9 after 90 s leaves a checkpoint


def test_interrupted_checkpoint_swap_keeps_the_previous_one(tmp_path: Path) -> None:
    cfg = config.load(tiny_config(tmp_path, **{"train.epochs": 1}))
    out = tmp_path / "run"
    train(cfg, out, progress=False)
    last = out / "checkpoints" / "last"
    before = _weights(out)
    # A kill between "move the old one aside" and "rename the new one in", with a half-written new one.
    os.replace(last, last.parent / ".last.old")
    (last.parent / ".last.new").mkdir()
    (last.parent / ".last.new" / "model.safetensors").write_bytes(b"partial")
    found = ckpt.find(last)
    assert found == last.parent / ".last.old"
    assert torch.equal(checkpoints.read(found / "model.safetensors")[1]["imnet.layers.0.weight"],
                       before["imnet.layers.0.weight"])
    summary = train(config.load(tiny_config(tmp_path, **{"train.epochs": 2})), out, resume=True, progress=False)
    assert summary["epoch"] == 2 and ckpt.complete(last)
    assert not (last.parent / ".last.old").exists() and not (last.parent / ".last.new").exists()


def test_max_minutes_stops_cleanly_and_resumes(tmp_path: Path) -> None:
    cfg = config.load(tiny_config(tmp_path, **{"train.epochs": 3}))
    out = tmp_path / "run"
    first = train(cfg, out, max_minutes=1e-6, progress=False)
    assert first["stopped_early"] and first["step"] == 1
    state = torch.load(out / "checkpoints" / "last" / "state.pt", weights_only=True)
    assert (state["epoch"], state["iter"], state["step"]) == (0, 1, 1)
    rest = train(cfg, out, resume=True, progress=False)
    assert rest["step"] == 9 and rest["epoch"] == 3 and not rest["stopped_early"]


def test_budget_mode_trains_for_the_clock_with_the_schedule_on_the_clock(tmp_path: Path) -> None:
    """train.budget_minutes: the epochs go on until the budget is spent (not stopped early), the learning
    rate drops at milestone / epochs of the budget, the last row carries the validation PSNR, and a
    resumed run continues the clock of the first instead of starting a new budget."""
    budget_s = 2.4
    cfg = config.load(tiny_config(tmp_path, **{"train.epochs": 2, "train.budget_minutes": budget_s / 60}))
    out = tmp_path / "run"
    first = train(cfg, out, max_minutes=0.5 / 60, progress=False)  # cut after ~0.5 s of the 2.4 s
    assert first["stopped_early"] and not first["budget_spent"] and first["train_s"] < budget_s
    rest = train(cfg, out, resume=True, progress=False)
    assert rest["budget_spent"] and not rest["stopped_early"]
    assert budget_s <= rest["train_s"] <= budget_s + 2.0  # one clock across both processes
    assert rest["epoch"] > 2  # more epochs than the config's 2: the clock, not the epochs, ended it
    rows = _rows(out)
    lrs = [float(r["lr"]) for r in rows]
    assert lrs[0] == 1e-3 and lrs[-1] == 5e-4 and lrs == sorted(lrs, reverse=True)  # one drop, at 1/2
    assert rows[-1]["val_psnr"] != "" and int(rows[-1]["step"]) == rest["step"]
    assert [int(r["step"]) for r in rows] == sorted({int(r["step"]) for r in rows})  # no step logged twice
    again = train(cfg, out, resume=True, progress=False)  # a finished budget stays finished
    assert again["budget_spent"] and again["step"] == rest["step"] and len(_rows(out)) == len(rows)
    fixed = config.load(tiny_config(tmp_path / "f", **{"train.epochs": 2}), ["train.budget_minutes=0"])
    assert train(fixed, tmp_path / "fixed", progress=False)["step"] == 6  # 0: exactly the epochs


# -- bench and the real tiny run ---------------------------------------------------------------------

def test_bench_train_prints_both_loops_and_the_ratio(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    assert liif_main(["bench", "train", "--data", str(make_images(tmp_path / "img", side=64)), "--batch", "2",
                      "--iters", "1", "--set", "model.encoder_args={n_resblocks: 1}", "--set", "model.hidden=[32]",
                      "--variants", "fp32,tf32,bf16:nofold", "--device", "cpu", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "reference (LIIF.query, full unfold, fp32)" in text and "ours [fp32]" in text and " = " in text
    assert "skipped: tf32: TF32 exists on CUDA only" in text
    from liif import compute as precision
    bf16_native = precision.native(torch.device("cpu")) == "bf16"
    assert ("ours [bf16:nofold]" in text) == bf16_native  # emulated bf16 is not timed, and says why
    assert ("bf16:nofold: bf16 is not native on this CPU" in text) != bf16_native
    fig = yaml.safe_load(out.read_text())
    loops = {r["loop"]: r for r in fig["loops"]}
    assert loops["reference"]["ratio_vs_reference"] == pytest.approx(1.0)
    assert loops["fp32"]["ratio_vs_reference"] == pytest.approx(
        loops["fp32"]["samples_per_s"] / loops["reference"]["samples_per_s"])
    assert fig["batch"] == 2 and len(loops["fp32"]["step_s"]) == 1 and fig["device"] == "cpu"


def test_bench_train_compares_decoders_on_the_same_batches(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--compare CONFIG: the model of another config (LM-LIIF) timed beside the first, steps alternating."""
    out = tmp_path / "bench.json"
    assert liif_main(["bench", "train", "--config", "configs/tiny-cpu.yaml", "--compare",
                      "configs/tiny-cpu-lmliif.yaml", "--data", str(make_images(tmp_path / "img", side=64)),
                      "--batch", "2", "--iters", "2", "--set", "model.encoder_args={n_resblocks: 1}",
                      "--variants", "fp32", "--no-reference", "--device", "cpu", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "ours [tiny-cpu: fp32]" in text and "ours [tiny-cpu-lmliif: fp32]" in text
    loops = {r["loop"]: r for r in yaml.safe_load(out.read_text())["loops"]}
    assert set(loops) == {"fp32", "tiny-cpu-lmliif: fp32"}
    for r in loops.values():
        assert len(r["step_s"]) == 2
        assert r["samples_per_s"] == pytest.approx(2 / (sum(r["step_s"]) / 2))  # batch / median of two


def test_bench_train_loops_compute_the_same_training_step(tmp_path: Path) -> None:
    """`liif bench train` times two loops on the EDSR-baseline-LIIF config (its default): the reference
    (LIIF.query on the full unfold, NCHW) and ours (layer 0 folded, channels-last encoder). In fp32 they are
    the same training step: the same loss and gradients, the same weights after Adam's update, and the same
    loss on the next batch. (Their speed ratio is what the bench prints; it is not a unit test's to assert.)"""
    import copy
    import json

    from liif.compute import Compute
    from liif.models import build
    from liif.train.cli import DEFAULT_BENCH_CONFIG
    from liif.train.loop import Step, build_data, train_step

    images = make_images(tmp_path / "img", side=64)
    # the bench's own overrides, then LR patches of 16 px (the paper's 48 px would need 192 px crops at x4)
    cfg = config.load(DEFAULT_BENCH_CONFIG, [f"data.train.roots={json.dumps([str(images)])}", "data.train.div2k=null",
                                             "data.val.hr=null", "data.val.lr=null", "train.batch_size=2",
                                             "data.train.inp_size=16", "data.train.sample_q=128"])
    assert cfg.model_spec().hidden == [256, 256, 256, 256] and not cfg.model_spec().encoder_args
    train_set, _ = build_data(cfg)
    plan = epoch_batches(len(train_set), 2, 0, cfg.train.seed)[:2]
    batches = [torch.utils.data.default_collate([train_set[i] for i in idx]) for idx in plan]
    torch.manual_seed(cfg.train.seed)
    base = build(cfg.model_spec())
    loops = []
    for fold, channels_last in ((False, False), (True, True)):  # reference, ours
        model = copy.deepcopy(base)
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.train.lr)
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        loops.append((model, Step(model, fold=fold, channels_last=channels_last), opt, scaler))
    fp32 = Compute.resolve(torch.device("cpu"), "fp32")
    # the first step starts from the same weights: the same gradients up to summation order; the second from
    # weights that differ by ~1e-3 of the first update (see below), which the gradients then reflect
    for i, grad_rtol in enumerate((1e-4, 1e-2)):
        batch = batches[i]
        (ref, ref_fwd, ref_opt, ref_sc), (ours, fwd, opt, sc) = loops
        ref_loss = train_step(ref_fwd, ref, ref_opt, ref_sc, batch, fp32)
        loss = train_step(fwd, ours, opt, sc, batch, fp32)
        assert math.isfinite(ref_loss) and loss == pytest.approx(ref_loss, rel=1e-5), i
        named = dict(ours.named_parameters())
        for name, p in ref.named_parameters():
            g, want = named[name].grad, p.grad
            if not p.requires_grad:  # the encoder's fixed mean shift
                assert g is None and want is None, name
                continue
            assert g is not None and want is not None, name
            assert (g - want).norm() <= grad_rtol * want.norm() + 1e-9, (i, name)  # the same gradients
        # the same update of the weights (Adam's first steps, about lr * sign(gradient), magnify the
        # differences of near-zero gradients, so the update is compared as a whole)
        start = dict(base.named_parameters())
        update = torch.cat([(p - start[n]).detach().flatten() for n, p in ours.named_parameters()])
        ref_update = torch.cat([(p - start[n]).detach().flatten() for n, p in ref.named_parameters()])
        assert ref_update.abs().max() >= 0.5 * cfg.train.lr  # a step was taken
        assert (update - ref_update).norm() <= 1e-2 * ref_update.norm(), i


@pytest.mark.slow
@pytest.mark.parametrize("config_name", ["tiny-cpu.yaml", "tiny-cpu-lte.yaml"])
def test_tiny_cpu_config_beats_bicubic_on_set14(tmp_path: Path, config_name: str) -> None:
    """The documented runs: the tiny configs spend their 12-minute budget (whatever the CPU class: more
    steps where bf16 is native), finish their schedule, and beat bicubic on Set14 by >= 0.5 dB at x2-x4
    (paper protocol; trained on the T91 + Sun-Hays crops of `liif data fetch train` only)."""
    import json

    from liif.data.folders import PairedFolders
    from liif.data.sampling import FixedScale
    from liif.train.step import validate

    data_root_set("train", "T91")
    out = tmp_path / "tiny"
    done = subprocess.run([sys.executable, "-m", "liif.cli", "train", f"configs/{config_name}", "--out", str(out),
                           "--no-progress"], check=True, cwd=ROOT, capture_output=True, text=True, timeout=20 * 60)
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["budget_spent"] and not summary["stopped_early"]
    assert 11.5 * 60 <= summary["train_s"] <= 13 * 60
    rows = _rows(out)
    assert float(rows[-1]["lr"]) == pytest.approx(1e-3 * 0.3 ** 2)  # the schedule ran to its end
    model, _ = checkpoints.load(out / "checkpoints" / "last" / "model.safetensors")
    bicubic = json.loads((DATA / "golden" / "reference-metrics.json").read_text())
    for s in (2, 3, 4):
        pairs = FixedScale(PairedFolders(DATA / "Set14" / "LR_bicubic" / f"X{s}", DATA / "Set14" / "HR"), s)
        got = validate(model, pairs, y_channel=True, device=torch.device("cpu"))
        assert got >= bicubic["bicubic_pil_upsampling_of_the_LR_files"][f"Set14-x{s}"] + 0.5, (s, got)


# -- resume never loses a run's history ------------------------------------------------------------------

def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "log.csv") as f:
        return list(csv.DictReader(f))


def test_resume_falls_back_to_the_newest_complete_checkpoint(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    train(config.load(tiny_config(tmp_path, **{"train.epochs": 2})), out, progress=False)
    cks = out / "checkpoints"
    (cks / "last" / "state.pt").unlink()  # an incomplete 'last' (e.g. a disk that filled up)
    epoch1 = (cks / "epoch-1" / "model.safetensors").read_bytes()
    summary = train(config.load(tiny_config(tmp_path, **{"train.epochs": 3})), out, resume=True, progress=False)
    err = capsys.readouterr().err
    assert f"resumed from {cks / 'epoch-2'} after step 6 (epoch 2, iteration 3 of 3)" in err
    assert summary["step"] == 9 and summary["epoch"] == 3
    assert [int(r["step"]) for r in _rows(out) if r["loss"]] == list(range(1, 10))  # the old rows are kept
    assert (cks / "epoch-1" / "model.safetensors").read_bytes() == epoch1  # not overwritten
    assert (cks / "last.damaged" / "model.safetensors").is_file()  # the damaged one is kept aside
    assert ckpt.complete(cks / "last") and ckpt.complete(cks / "epoch-3")


def test_resume_without_a_complete_checkpoint_refuses_and_changes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "run"
    path = tiny_config(tmp_path, **{"train.epochs": 1})
    train(config.load(path), out, progress=False)
    for name in ("last", "epoch-1"):
        (out / "checkpoints" / name / "model.json").unlink()
    before = sorted((p.relative_to(out), p.stat().st_mtime_ns) for p in out.rglob("*"))
    log = (out / "log.csv").read_text()
    assert liif_main(["train", str(path), "--out", str(out), "--resume", "--no-progress"]) == 1
    with pytest.raises(LiifError, match=r"--resume: no complete checkpoint .*last.*incomplete.*--restart"):
        train(config.load(path), out, resume=True, progress=False)
    assert sorted((p.relative_to(out), p.stat().st_mtime_ns) for p in out.rglob("*")) == before
    assert (out / "log.csv").read_text() == log


def test_checkpoints_that_hold_the_rng_state_still_resume(tmp_path: Path) -> None:
    """state.pt no longer holds the torch RNG state (resuming re-seeds from the step, so it was never used);
    a checkpoint of an earlier version that holds one resumes all the same, to the same weights."""
    path = tiny_config(tmp_path, **{"data.val.hr": "null", "train.epochs": 1})
    out = tmp_path / "run"
    train(config.load(path), out, progress=False)
    state_file = out / "checkpoints" / "last" / "state.pt"
    state = torch.load(state_file, weights_only=True)
    assert "rng" not in state
    torch.manual_seed(12345)  # an RNG state the resumed run must not depend on
    torch.save({**state, "rng": {"torch": torch.get_rng_state()}}, state_file)  # as earlier versions wrote it
    summary = train(config.load(path, ["train.epochs=2"]), out, resume=True, progress=False)
    assert summary["step"] == 6 and summary["epoch"] == 2
    train(config.load(path, ["train.epochs=2"]), tmp_path / "one", progress=False)
    a, b = _weights(out), _weights(tmp_path / "one")
    for k in b:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6)


def test_starting_over_in_a_used_folder_needs_restart_and_keeps_the_old_run(tmp_path: Path) -> None:
    path = tiny_config(tmp_path, **{"train.epochs": 1})
    out = tmp_path / "run"
    (out / "checkpoints" / "last").mkdir(parents=True)  # an incomplete checkpoint only
    with pytest.raises(LiifError, match=r"already holds a run .*--resume .*--restart"):
        train(config.load(path), out, progress=False)
    log_only = tmp_path / "log-only"
    log_only.mkdir()
    (log_only / "log.csv").write_text("step,epoch,loss,lr,samples_per_s,val_psnr\n1,1,0.5,0.001,1.0,\n")
    with pytest.raises(LiifError, match="already holds a run"):
        train(config.load(path), log_only, progress=False)
    train(config.load(path), log_only, restart=True, progress=False)
    assert (log_only / "previous-1" / "log.csv").read_text().endswith("1,1,0.5,0.001,1.0,\n")
    assert [int(r["step"]) for r in _rows(log_only)] == [1, 2, 3]


def test_summary_is_strict_json_and_agrees_with_the_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    def run(*args: str) -> tuple[dict, str]:
        assert liif_main(["train", str(path), *args, "--no-progress"]) == 0
        got = capsys.readouterr()
        return json.loads(got.out, parse_constant=lambda c: pytest.fail(f"not JSON: {c}")), got.err

    path = tiny_config(tmp_path, **{"data.val.hr": "null", "train.epochs": 2, "log.every": 2})
    summary, _ = run("--out", str(tmp_path / "run"))
    rows = _rows(tmp_path / "run")
    assert summary["best_psnr"] is None  # no validation: null, not -Infinity
    assert all(r["loss"] != "" for r in rows)  # no loss-less epoch rows
    assert [int(r["step"]) for r in rows] == [2, 3, 4, 6]  # every log.every steps and each epoch's end
    last = rows[-1]
    assert (summary["step"], summary["epoch"], summary["iteration"]) == (int(last["step"]), int(last["epoch"]), 3)
    assert float(last["loss"]) == pytest.approx(summary["loss"], abs=1e-6)
    # Stopped by the time limit after one step, then resumed: the message speaks of the same epoch.
    stopped = tmp_path / "stopped"
    s, _ = run("--out", str(stopped), "--max-minutes", "1e-9")
    assert (s["step"], s["epoch"], s["iteration"], s["stopped_early"]) == (1, 1, 1, True)
    assert [(r["step"], r["epoch"]) for r in _rows(stopped)] == [("1", "1")] and _rows(stopped)[0]["loss"]
    s, err = run("--out", str(stopped), "--resume")
    assert "after step 1 (epoch 1, iteration 1 of 3)" in err and s["step"] == 6


# -- one decoded copy of the training set per node ---------------------------------------------------------

def test_mmap_cache_is_built_once_shared_and_rebuilt_when_the_source_changes(tmp_path: Path) -> None:
    import pickle

    from liif.data.folders import ImageFolder

    images = make_images(tmp_path / "images", n=3, side=24)
    cache = tmp_path / "cache"
    memory = ImageFolder(images, cache="memory")
    mapped = ImageFolder(images, cache="mmap", cache_dir=cache)
    assert len(mapped) == 3 and all(np.array_equal(mapped[i], memory[i]) for i in range(3))
    [data] = cache.glob("images-*.u8")
    assert data.stat().st_size == 3 * 24 * 24 * 3
    built = data.stat().st_mtime_ns
    again = pickle.loads(pickle.dumps(ImageFolder(images, cache="mmap", cache_dir=cache)))  # a spawned worker
    assert isinstance(again[0].base, np.memmap) and data.stat().st_mtime_ns == built  # mapped, not rebuilt
    assert len(pickle.dumps(again)) < 3 * 24 * 24 * 3  # travels as a path, not as pixels
    Image.fromarray(np.zeros((24, 24, 3), np.uint8)).save(images / "01.png")  # the source changes
    changed = ImageFolder(images, cache="mmap", cache_dir=cache)
    assert len(list(cache.glob("images-*.u8"))) == 2 and not changed[1].any() and np.array_equal(changed[0], memory[0])


def test_training_from_the_mmap_cache_equals_the_memory_cache(tmp_path: Path) -> None:
    path = tiny_config(tmp_path, **{"data.val.hr": "null", "train.epochs": 1})
    train(config.load(path), tmp_path / "memory", progress=False)
    train(config.load(path, ["data.train.cache=mmap"]), tmp_path / "mmap", progress=False)
    assert list((tmp_path / "mmap" / "cache").glob("images-*.u8"))
    a, b = _weights(tmp_path / "memory"), _weights(tmp_path / "mmap")
    for k in a:
        assert torch.equal(a[k], b[k])
