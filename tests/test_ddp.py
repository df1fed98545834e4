"""Two-process DDP on the CPU (gloo, via dist_train.sh -> torchrun) equals one process with the same global batch."""
from __future__ import annotations

import contextlib
import csv
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import ROOT, tiny_config
from liif import checkpoints
from liif.models import build
from liif.train import config
from liif.train.loop import train


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


# -- multi-node: one resume state, no hangs, restarts ------------------------------------------------------

def _env(port: int, **extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHON": sys.executable, "MASTER_PORT": str(port), **extra}


def _finish(procs: list[subprocess.Popen], timeout: float) -> list[tuple[int, str, str]]:
    """Wait for every process (each in its own session) up to ``timeout`` s in all; kill the rest on expiry."""
    deadline = time.monotonic() + timeout
    results = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            results.append((p.returncode, out, err))
    except subprocess.TimeoutExpired:
        for p in procs:
            if p.poll() is None:
                workers = _descendants(p.pid)  # torchrun puts its workers in sessions of their own
                os.killpg(p.pid, signal.SIGKILL)
                for pid in workers:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                p.wait()
        pytest.fail(f"training did not finish within {timeout} s (a hang)")
    return results


def _two_nodes(path: Path, tmp_path: Path, *args: str) -> list[tuple[int, str, str]]:
    """Two 'nodes' on this machine, one process each, each with its own --out (runs/n0, runs/n1)."""
    port = _free_port()
    procs = [subprocess.Popen(["bash", str(ROOT / "dist_train.sh"), str(path), "1", "--out", str(tmp_path / f"n{n}"),
                               "--no-progress", *args],
                              env=_env(port, NNODES="2", NODE_RANK=str(n), LIIF_DIST_TIMEOUT="60"), cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
             for n in (0, 1)]
    return _finish(procs, 240)


def test_two_nodes_with_their_own_folders_resume_from_node_0(tmp_path: Path) -> None:
    """The reported hang: node 0's folder holds the run, node 1's is empty; both pass --resume."""
    path = tiny_config(tmp_path, **{"data.val.hr": "null", "train.epochs": 1})
    train(config.load(path), tmp_path / "n0", progress=False)  # the first epoch (as rank 0 of a run writes it)
    (n0, out0, err0), (n1, _, err1) = _two_nodes(path, tmp_path, "--resume", "--set", "train.epochs=2")
    assert n0 == 0 and n1 == 0, (err0[-3000:], err1[-3000:])
    assert f"resumed from {tmp_path / 'n0' / 'checkpoints' / 'last'} after step 3 (epoch 1, iteration 3 of 3)" in err0
    assert '"step": 6' in out0
    assert not (tmp_path / "n1" / "checkpoints").exists()  # only rank 0 (node 0) writes
    with open(tmp_path / "n0" / "log.csv") as f:
        assert [r["step"] for r in csv.DictReader(f)] == ["1", "2", "3", "4", "5", "6"]
    # the same weights as one process trained for 2 epochs in one go
    train(config.load(path, ["train.epochs=2"]), tmp_path / "one", progress=False)
    a = checkpoints.read(tmp_path / "n0" / "checkpoints" / "last" / "model.safetensors")[1]
    b = checkpoints.read(tmp_path / "one" / "checkpoints" / "last" / "model.safetensors")[1]
    for k in b:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6)


def _descendants(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            kids += [int(child), *_descendants(int(child))]
    return kids


def _worker(root: int, rank: int) -> int:
    for pid in _descendants(root):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env and b"TORCHELASTIC_RUN_ID=" in b"\0".join(env):
            return pid
    raise AssertionError(f"no worker with RANK={rank} under {root}")


def _wait_for_rows(log: Path, n: int, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if log.exists() and len(log.read_text().splitlines()) > n:
            return
        time.sleep(0.05)
    raise AssertionError(f"{log} did not reach {n} rows (exit code {proc.poll()})")


def test_a_stalled_rank_stops_the_job_with_a_message_instead_of_a_hang(tmp_path: Path) -> None:
    path = tiny_config(tmp_path, **{"data.val.hr": "null", "train.epochs": 100, "data.train.repeat": 8})
    err_file = tmp_path / "stderr.txt"
    with open(err_file, "w") as err:
        proc = subprocess.Popen(["bash", str(ROOT / "dist_train.sh"), str(path), "2", "--out", str(tmp_path / "run"),
                                 "--no-progress"], env=_env(_free_port(), LIIF_DIST_TIMEOUT="3"), cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    stalled = None
    try:
        _wait_for_rows(tmp_path / "run" / "log.csv", 2, proc)
        stalled = _worker(proc.pid, 1)
        os.kill(stalled, signal.SIGSTOP)  # rank 1 stops answering; rank 0 must not wait for ever
        deadline = time.monotonic() + 60
        while "liif: error" not in err_file.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        os.kill(stalled, signal.SIGCONT)
        _finish([proc], 60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = err_file.read_text()
    assert proc.returncode != 0
    assert re.search(r"liif: error: rank 0 of 2: training epoch \d+ at step \d+ failed: .*--dist-timeout", text), \
        text[-3000:]


@pytest.mark.slow
def test_a_killed_worker_is_restarted_and_the_run_ends_as_if_uninterrupted(tmp_path: Path) -> None:
    """torchrun --max-restarts 1: SIGKILL one of two workers mid-epoch; the restarted workers resume from
    the newest checkpoint. Same step count exactly; weights within rtol 1e-4 / atol 1e-6 of an uninterrupted run
    (the tolerance of the other equivalence tests: gloo's reduction order against one process)."""
    path = tiny_config(tmp_path, **{"data.val.hr": "null", "train.epochs": 4, "data.train.repeat": 8,
                                    "checkpoint.last_every_iters": 1})  # 12 iterations per epoch, 48 steps
    run = tmp_path / "run"
    proc = subprocess.Popen(["bash", str(ROOT / "dist_train.sh"), str(path), "2", "--out", str(run),
                             "--no-progress"], env=_env(_free_port(), MAX_RESTARTS="1", LIIF_DIST_TIMEOUT="60"),
                            cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        _wait_for_rows(run / "log.csv", 5, proc)
        os.kill(_worker(proc.pid, 1), signal.SIGKILL)
    except BaseException:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        raise
    [(rc, out, err)] = _finish([proc], 300)
    assert rc == 0, err[-3000:]
    assert re.search(r"resumed from .*after step \d+", err) and '"step": 48' in out
    with open(run / "log.csv") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == list(range(1, 49))
    train(config.load(path), tmp_path / "one", progress=False)
    a = checkpoints.read(run / "checkpoints" / "last" / "model.safetensors")[1]
    b = checkpoints.read(tmp_path / "one" / "checkpoints" / "last" / "model.safetensors")[1]
    for k in b:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6)
