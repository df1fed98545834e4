"""Two-process DDP on the CPU (gloo, via dist_train.sh -> torchrun) equals one process with the same global batch."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

from liif import checkpoints
from liif.models import build
from liif.train import config

from conftest import ROOT
from test_train import tiny_config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_equals_single_process(tmp_path: Path) -> None:
    # fp32, no validation; 3 iterations per epoch x 2 epochs of a global batch of 4 (2 per rank).
    path = tiny_config(tmp_path, **{"data.val.hr": "null", "train.epochs": 2})
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHON": sys.executable, "MASTER_PORT": str(_free_port())}
    ddp = subprocess.run(["bash", str(ROOT / "dist_train.sh"), str(path), "2", "--out", str(tmp_path / "ddp"),
                          "--no-progress"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    single = subprocess.run([sys.executable, str(ROOT / "train.py"), str(path), "--out", str(tmp_path / "one"),
                             "--no-progress"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    a = checkpoints.read(tmp_path / "ddp" / "checkpoints" / "last" / "model.safetensors")[1]
    b = checkpoints.read(tmp_path / "one" / "checkpoints" / "last" / "model.safetensors")[1]
    for k in b:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6)
    # The runs did train (the weights moved), and each rank saw its own half of every global batch:
    # equality with the single-process run is impossible if both ranks had drawn the same samples.
    torch.manual_seed(0)  # the loop's seed: the same initial weights
    init = build(config.load(path).model_spec()).state_dict()
    assert (a["imnet.layers.0.weight"] - init["imnet.layers.0.weight"]).abs().max() > 1e-3
    assert '"step": 6' in ddp.stdout and ddp.stdout.count('"step"') == 1  # one summary: rank 0 only
