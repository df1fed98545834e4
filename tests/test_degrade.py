"""The training degradation (pipeline, settings, sampler, config, train.init) and `liif data degrade` +
`liif eval --lr-dir` on generated images."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import make_images, one_error_line, random_image, run_cli, tiny_config
from liif import checkpoints
from liif.data.degrade import camera, pipeline
from liif.data.degrade.settings import CameraMix, Degradation, problems
from liif.data.folders import ImageFolder
from liif.data.resize import resize_uint8
from liif.data.sampling import ImplicitDownsampled
from liif.errors import LiifError
from liif.models import build
from liif.train import config
from liif.train.loop import train

HR = random_image(160, 160, 7)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(4, 48), s=st.floats(1.0, 4.0), seed=st.integers(0, 2**32 - 1))
def test_the_lr_has_the_size_of_the_sampled_scale(n: int, s: float, seed: int) -> None:
    side = min(160, round(n * s))
    out = pipeline.degrade(HR[:side, :side], (n, n), Degradation(), np.random.default_rng(seed))
    assert out.shape == (n, n, 3) and out.dtype == np.uint8


def test_seeds_reproduce_bit_for_bit_and_differ() -> None:
    crop = HR[:128, :128]
    a = [pipeline.degrade(crop, (32, 32), Degradation(), np.random.default_rng([0, 5, i])) for i in range(6)]
    b = [pipeline.degrade(crop, (32, 32), Degradation(), np.random.default_rng([0, 5, i])) for i in range(6)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert all(not np.array_equal(a[0], x) for x in a[1:])
    clean = resize_uint8(np.ascontiguousarray(crop), (32, 32))
    assert all(np.abs(x.astype(int) - clean).mean() > 1.0 for x in a)  # degraded, not bicubic
    always_clean = Degradation(clean_prob=1.0)
    assert np.array_equal(pipeline.degrade(crop, (32, 32), always_clean, np.random.default_rng(3)), clean)


def test_random_kernels_follow_the_settings() -> None:
    d = Degradation()
    d.first.sinc_prob, d.first.kernel_size = 0.0, [5, 5]
    d.first.kernel_probs = {"iso": 1.0}
    rng = np.random.default_rng(0)
    for _ in range(10):
        k = pipeline.random_kernel(rng, d.first)
        assert k.shape == (5, 5) and k.sum() == pytest.approx(1.0)
        np.testing.assert_allclose(k, k.T, atol=1e-15)  # iso only
    d.first.sinc_prob = 1.0
    assert pipeline.random_kernel(rng, d.first).min() < 0  # sinc: rings


def test_the_sampler_degrades_the_lr_and_keeps_everything_else(tmp_path: Path) -> None:
    images = ImageFolder(make_images(tmp_path / "img", n=3, side=64))
    clean = ImplicitDownsampled(images, 16, 1.0, 4.0, sample_q=64, seed=3)
    real = ImplicitDownsampled(images, 16, 1.0, 4.0, sample_q=64, seed=3, degradation=Degradation())
    epoch0 = real[0]["inp"]
    for i in range(3):
        a, b = clean[i], real[i]
        for key in ("coord", "cell", "gt"):
            assert torch.equal(a[key], b[key])  # same crop, scale, flips and queries
        assert b["inp"].shape == (3, 16, 16) and not torch.equal(a["inp"], b["inp"])
        assert torch.equal(real[i]["inp"], b["inp"])  # an item depends on (seed, epoch, index) alone
    real.set_epoch(1)
    assert not torch.equal(real[0]["inp"], epoch0)  # a new epoch, new draws


def test_config_block_defaults_overrides_and_errors(tmp_path: Path) -> None:
    assert config.load(tiny_config(tmp_path)).data.train.degradation is None  # off by default
    cfg = config.load(tiny_config(tmp_path, **{"data.train.degradation": "{}"}))
    assert cfg.data.train.degradation == Degradation()
    cfg = config.load(tiny_config(tmp_path, **{"data.train.degradation.second.noise_sigma": "[1, 10]"}))
    second = cfg.data.train.degradation.second
    assert second.noise_sigma == [1, 10] and second.blur_prob == 0.8  # the second round's own defaults kept
    for key, value, message in (("first.blur_sigma", "[3, 1]", "first.blur_sigma must be"),
                                ("second.kernel_size", "[4, 21]", "second.kernel_size must be"),
                                ("first.kernel_probs", "{disc: 1}", "unknown 'disc'"),
                                ("clean_prob", "1.5", "clean_prob must be a probability"),
                                ("first.jpeg_quality", "[30, 101]", "first.jpeg_quality"),
                                ("second.resize_range", "[1.2, 2]", "must hold 1"),
                                ("camera.prob", "2", "camera.prob must be a probability"),
                                ("camera.noise_sigma", "[5, 2]", "camera.noise_sigma must be"),
                                ("camera.jpeg_quality", "[0, 80]", "camera.jpeg_quality must be"),
                                ("first.colour", "1", "unknown config key data.train.degradation.first.colour")):
        with pytest.raises(LiifError, match=message.replace(".", r"\.").replace("[", r"\[")):
            config.load(tiny_config(tmp_path, **{f"data.train.degradation.{key}": value}))
    assert problems(Degradation()) == []


def test_the_camera_branch_is_the_evaluation_degradation_at_any_scale() -> None:
    """``camera.prob``: a sample degraded like ``liif data degrade`` degrades an image (either order), to the
    LR size of a continuous scale; the branch off (prob 0) draws nothing, so older configs keep their LRs."""
    crop = random_image(93, 93, 3)  # n = 31 at s = 3.0; and 40 at s = 2.33
    for order in ("classic", "hr-first"):
        d = Degradation(camera=CameraMix(prob=0.5, blur_sigma=[0.5, 1.0], noise_sigma=[3, 5],
                                         jpeg_quality=[50, 60], hr_first_prob=0.5))
        for seed in range(40):
            draws = np.random.default_rng(seed).random(3)
            if draws[0] >= d.clean_prob and draws[1] < 0.5 and (draws[2] < 0.5) == (order == "hr-first"):
                break
        for n in (31, 40):
            got = pipeline.degrade(crop, (n, n), d, np.random.default_rng(seed))
            rng = np.random.default_rng(seed)
            rng.random(3)
            want = camera.degrade_to(crop, (n, n), camera.Camera((0.5, 1.0), (3, 5), (50, 60), order), rng)
            assert got.shape == (n, n, 3) and got.dtype == np.uint8 and np.array_equal(got, want), (order, n)
        assert np.abs(got.astype(float) - resize_uint8(crop, (40, 40))).mean() > 1  # degraded, not clean
    off = Degradation(camera=CameraMix(prob=0.0, hr_first_prob=1.0))
    assert np.array_equal(pipeline.degrade(crop, (31, 31), off, np.random.default_rng(5)),
                          pipeline.degrade(crop, (31, 31), Degradation(), np.random.default_rng(5)))


def test_shipped_realworld_config(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    raw = yaml.safe_load((root / "configs" / "finetune-realworld.yaml").read_text())
    cfg = config.from_dict(raw)
    assert cfg.train.init == "edsr-baseline-liif" and cfg.model_spec().hidden == [256, 256, 256, 256]
    d = cfg.data.train
    assert d.degradation is not None and problems(d.degradation) == []
    assert (d.scale_min, d.scale_max, cfg.train.budget_minutes) == (1.0, 4.0, 50)


def test_train_init_starts_from_the_given_weights(tmp_path: Path) -> None:
    cfg = config.load(tiny_config(tmp_path))
    torch.manual_seed(123)
    start = build(cfg.model_spec())
    path = checkpoints.save(start, cfg.model_spec(), tmp_path / "start.safetensors")
    tuned = config.load(tiny_config(tmp_path, **{"train.init": str(path), "train.lr": "1e-12", "train.epochs": 1,
                                                  "data.train.degradation": "{}"}))
    train(tuned, tmp_path / "run", progress=False)
    _, after = checkpoints.read(tmp_path / "run" / "checkpoints" / "last" / "model.safetensors")
    for name, t in start.state_dict().items():
        torch.testing.assert_close(after[name], t, atol=1e-8, rtol=0)  # lr 1e-12: still the initial weights
    with pytest.raises(LiifError, match="train.init: 'nope.pth' is neither a pretrained name"):
        config.load(tiny_config(tmp_path, **{"train.init": "nope.pth"}))
    other = config.load(tiny_config(tmp_path, **{"train.init": str(path), "model.hidden": "[8]"}))
    with pytest.raises(LiifError, match="train.init: .* holds a different model .*hidden"):
        train(other, tmp_path / "run2", progress=False)


def test_camera_degradation_sizes_seeds_and_limits() -> None:
    hr = random_image(61, 50, 1)
    cam = camera.Camera()
    a = camera.degrade(hr, 3, cam, np.random.default_rng(4))
    assert a.shape == (20, 16, 3) and a.dtype == np.uint8
    assert np.array_equal(a, camera.degrade(hr, 3, cam, np.random.default_rng(4)))
    assert not np.array_equal(a, camera.degrade(hr, 3, cam, np.random.default_rng(5)))
    # zero ranges leave bicubic down-sampling (on gray: JPEG 4:2:0 subsamples the colours of a colour image)
    gray = np.repeat(hr.mean(axis=2, keepdims=True), 3, axis=2).astype(np.uint8)
    bicubic = resize_uint8(np.ascontiguousarray(gray[:60, :48]), (20, 16)).astype(int)
    none = camera.Camera((0.0, 0.0), (0.0, 0.0), (100, 100))
    assert np.abs(camera.degrade(gray, 3, none, np.random.default_rng(0)) - bicubic).max() <= 1
    assert np.abs(camera.degrade(gray, 3, cam, np.random.default_rng(0)) - bicubic).mean() > 2
    first = camera.degrade(hr, 3, camera.Camera(order="hr-first"), np.random.default_rng(4))
    assert first.shape == a.shape and not np.array_equal(first, a)
    with pytest.raises(LiifError, match="JPEG quality range"):
        camera.Camera(jpeg_quality=(80, 40)).check()


def _eval_set(root: Path) -> Path:
    (root / "HR").mkdir(parents=True)
    for i, (h, w) in enumerate([(48, 40), (36, 52)]):
        Image.fromarray(random_image(h, w, i)).save(root / "HR" / f"im{i}.png")
    return root


def test_data_degrade_then_eval_on_the_pair(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ds = _eval_set(tmp_path / "Mini")
    out = tmp_path / "mini-x2"
    rc, text, _ = run_cli(["data", "degrade", str(ds / "HR"), str(out), "--scale", "2", "--seed", "3"], capsys)
    assert rc == 0 and "wrote 2 LR images" in text
    assert sorted(p.name for p in out.iterdir()) == ["im0.png", "im1.png"]
    assert Image.open(out / "im1.png").size == (26, 18)
    first = (out / "im0.png").read_bytes()
    run_cli(["data", "degrade", str(ds / "HR"), str(out), "--scale", "2", "--seed", "3"], capsys)
    assert (out / "im0.png").read_bytes() == first  # the same command, the same files
    run_cli(["data", "degrade", str(ds / "HR"), str(tmp_path / "other"), "--scale", "2", "--seed", "4",
             "--noise-sigma", "5,5", "--jpeg-quality", "60"], capsys)
    assert (tmp_path / "other" / "im0.png").read_bytes() != first
    # liif eval reads the degraded LR at that scale
    cfg = config.load(tiny_config(tmp_path))
    weights = checkpoints.save(build(cfg.model_spec()), cfg.model_spec(), tmp_path / "w.safetensors")
    rc, text, _ = run_cli(["eval", "--weights", str(weights), "--dataset", str(ds), "--scales", "2", "--lr-dir",
                           str(out), "--device", "cpu", "--json", str(tmp_path / "s.json")], capsys)
    assert rc == 0 and "Mini-mini-x2" in text
    [row] = json.loads((tmp_path / "s.json").read_text())
    assert (row["dataset"], row["scale"], row["lr_source"], row["n_images"]) == ("Mini-mini-x2", 2, "files", 2)
    assert row["published"] == []  # degraded inputs: never compared with the clean set's published figures


@pytest.mark.parametrize("args,message", [
    (["--scale", "2", "--noise-sigma", "7,2"], "noise sigma range must be LOW,HIGH"),
    (["--scale", "2", "--jpeg-quality", "x"], "--jpeg-quality expects LOW,HIGH"),
    (["--scale", "0"], "--scale must be an integer >= 1"),
    (["--scale", "64"], "is smaller than the scale x64"),
])
def test_data_degrade_errors_are_one_line_and_write_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           args: list[str], message: str) -> None:
    ds = _eval_set(tmp_path / "Mini")
    rc, _, err = run_cli(["data", "degrade", str(ds / "HR"), str(tmp_path / "out"), *args], capsys)
    assert rc != 0 and message in one_error_line(err)
    assert not (tmp_path / "out").exists()


def test_data_degrade_refuses_a_broken_image_and_its_own_input(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    ds = _eval_set(tmp_path / "Mini")
    rc, _, err = run_cli(["data", "degrade", str(ds / "HR"), str(ds / "HR"), "--scale", "2"], capsys)
    assert rc != 0 and "would replace the HR ones" in one_error_line(err)
    (ds / "HR" / "zz.png").write_bytes(b"not a png")
    rc, _, err = run_cli(["data", "degrade", str(ds / "HR"), str(tmp_path / "out"), "--scale", "2"], capsys)
    assert rc != 0 and "cannot read image" in one_error_line(err) and not (tmp_path / "out").exists()
    rc, _, err = run_cli(["eval", "--dataset", str(ds), "--scales", "2,3", "--lr-dir", str(ds / "HR")], capsys)
    assert rc != 0 and "exactly one --scales value" in one_error_line(err)
