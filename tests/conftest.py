"""Shared fixtures: the ../shared data and goldens, and the official weights (fetched once, cached)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
GOLDEN = SHARED / "golden"
DATA = SHARED / "data"

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


def golden_cases() -> list[dict]:
    index = GOLDEN / "index.json"
    assert index.is_file(), f"golden index missing: {index} (../shared must sit beside the repo)"
    return json.loads(index.read_text())["cases"]


def lte_golden() -> dict:
    """The LTE goldens' index (``../shared/golden/lte``): checkpoint, cases, chunk size."""
    index = GOLDEN / "lte" / "index.json"
    assert index.is_file(), f"LTE golden index missing: {index}"
    return json.loads(index.read_text())


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
