"""Shared fixtures: the repository's test data (tests/data: goldens of the official code, Set5, Set14),
the optional bigger data under the data root, and the official weights (fetched once, cached)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"  # Set5 and Set14 (EDSR benchmark layout); see tests/data/README.md
GOLDEN = DATA / "golden"  # the official LIIF and LTE codes' outputs on small inputs

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
