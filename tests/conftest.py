"""Shared fixtures and helpers: the repository's test data (tests/data: goldens of the official code, Set5,
Set14), the optional bigger data under the data root, the official weights (fetched once, cached), and what
several test modules build or run: CLI calls, a tiny training config, a small evaluation set, a server."""
from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"  # Set5 and Set14 (EDSR benchmark layout); see tests/data/README.md
GOLDEN = DATA / "golden"  # the official LIIF, LTE and LMF codes' outputs on small inputs
COMIC = GOLDEN / "set14_comic_in.png"  # 40x32 (WxH)

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


def golden_cases() -> list[dict]:
    index = GOLDEN / "index.json"
    assert index.is_file(), f"golden index missing: {index}"
    return json.loads(index.read_text())["cases"]


def lte_golden() -> dict:
    """The LTE goldens' index (``tests/data/golden/lte``): checkpoint, cases, chunk size."""
    index = GOLDEN / "lte" / "index.json"
    assert index.is_file(), f"LTE golden index missing: {index}"
    return json.loads(index.read_text())


def lmf_golden() -> dict:
    """The LMF goldens' index (``tests/data/golden/lmf``): per model (lm-liif, lm-lte) checkpoint and cases."""
    index = GOLDEN / "lmf" / "index.json"
    assert index.is_file(), f"LMF golden index missing: {index}"
    return json.loads(index.read_text())


def data_root_set(*parts: str) -> Path:
    """A folder under the data root (``$LIIF_DATA_DIR`` or the cache), for the slow tests that train on
    or score more data than the repository carries; skips the test, naming the fetch, when it is absent."""
    from liif.data.eval_sets import data_root

    path = data_root().joinpath(*parts)
    if not path.is_dir():
        fetch = "train" if parts[0] == "train" else parts[0].lower()
        pytest.skip(f"{path} is absent: run `liif data fetch {fetch}` or set LIIF_DATA_DIR")
    return path


def load_rgb(path: Path) -> torch.Tensor:
    return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1).float() / 255


@pytest.fixture(scope="session")
def official_path() -> Path:
    from liif import weights

    return weights.path("edsr-baseline-liif")


@pytest.fixture()
def weights_arg(official_path: Path) -> list[str]:
    """``--weights PATH`` of the official checkpoint, for CLI runs."""
    return ["--weights", str(official_path)]


@pytest.fixture(scope="session")
def official(official_path: Path):
    from liif import checkpoints

    model, spec = checkpoints.load(official_path)
    return model, spec


@pytest.fixture(scope="session")
def lte_path() -> Path:
    """The official-format LTE checkpoint with seeded random weights that the LTE goldens were made with."""
    return GOLDEN / "lte" / lte_golden()["checkpoint"]


@pytest.fixture(scope="session")
def lte(lte_path: Path):
    from liif import checkpoints

    return checkpoints.load(lte_path)


@pytest.fixture(scope="session")
def upscaler(official):
    from liif.api import Upscaler

    model, spec = official
    return Upscaler(model, spec, precision="fp32")  # parity and metric tests are fp32 on any machine


@pytest.fixture(scope="session")
def comic() -> Image.Image:
    """``COMIC`` as an RGB image (40x32)."""
    return Image.open(COMIC).convert("RGB")


# -- the CLI ---------------------------------------------------------------------------------------------------

def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``liif ARGS`` in this process: (exit code, stdout, stderr)."""
    from liif.cli import main

    rc = main(args)
    out, err = capsys.readouterr()
    return rc, out, err


def one_error_line(err: str) -> str:
    """The one line of ``err``, which must be a ``liif: error:`` line."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("liif: error: "), err
    return lines[0]


# -- training --------------------------------------------------------------------------------------------------

def make_images(folder: Path, n: int = 6, side: int = 40) -> Path:
    """``n`` smooth ``side`` x ``side`` PNGs (sines of seeded frequencies) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:side, 0:side] / side
    for i in range(n):
        f = rng.uniform(1, 4, 3)
        img = np.stack([np.sin(2 * np.pi * (f[c] * yy + (c + 1) * xx) + i) for c in range(3)], -1)
        Image.fromarray(((img * 0.5 + 0.5) * 255).astype(np.uint8)).save(folder / f"{i:02d}.png")
    return folder


def tiny_config(tmp_path: Path, **extra: object) -> Path:
    """A model and data small enough for a few seconds per run on one core."""
    import yaml

    from liif.train import config

    images = make_images(tmp_path / "images")
    raw = {
        "model": {"encoder": "edsr-baseline", "encoder_args": {"n_resblocks": 1, "n_feats": 8}, "hidden": [16]},
        "data": {"train": {"roots": [str(images)], "repeat": 2, "inp_size": 12, "scale_max": 3.0,
                           "sample_q": 64},
                 "val": {"hr": str(images), "scale": 2, "first_k": 2, "every": 1}},
        # CPU and fp32 whatever the machine has (CUDA, native bf16): the tests compare runs number for number
        "train": {"batch_size": 4, "epochs": 2, "lr": 1e-3, "milestones": [1], "gamma": 0.5, "threads": 1,
                  "device": "cpu", "precision": "fp32"},
        "checkpoint": {"save_every": 1},
        "log": {"every": 1},
    }
    for key, value in extra.items():
        config.apply_override(raw, f"{key}={value}")
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


# -- evaluation sets -------------------------------------------------------------------------------------------

def random_image(h: int, w: int, seed: int) -> np.ndarray:
    """A seeded h x w RGB uint8 image with smooth-ish content (bicubic upsampling of random pixels)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (h // 4 + 1, w // 4 + 1, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(base).resize((w, h), Image.Resampling.BICUBIC))


def make_eval_set(root: Path, sizes: list[tuple[int, int]], lr_scales: tuple[int, ...] = (2, 3, 4)) -> Path:
    """An evaluation set in the EDSR benchmark layout (HR/, LR_bicubic/X{s}/) of random images of ``sizes``."""
    from liif.data.resize import resize_uint8

    (root / "HR").mkdir(parents=True)
    for i, (h, w) in enumerate(sizes):
        hr = random_image(h, w, i)
        Image.fromarray(hr).save(root / "HR" / f"im{i}.png")
        for s in lr_scales:
            (root / "LR_bicubic" / f"X{s}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(resize_uint8(hr, (h // s, w // s))).save(root / "LR_bicubic" / f"X{s}" / f"im{i}.png")
    return root


# -- the viewer server -----------------------------------------------------------------------------------------

@contextlib.contextmanager
def serve_in_thread(app: Any) -> Iterator[str]:
    """Run ``app`` with uvicorn on a free 127.0.0.1 port in a thread; yields the base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
