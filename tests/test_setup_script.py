"""scripts/setup.sh, run against a stub virtualenv: which pip commands it runs to install torch and liif.

The stub ``VENV/bin/python`` records its arguments and answers as the case needs (torch importable or
not, a local +cpu wheel found by ``pip download`` or not); a stub ``nvidia-smi`` says whether a GPU is
there. Nothing is installed and nothing is fetched."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT

TORCH = "torch==2.13.0"
PIP = ["-m", "pip", "--disable-pip-version-check"]

STUB_PYTHON = r"""#!/usr/bin/env bash
# one line per call, its arguments separated by tabs
(IFS=$'\t'; printf '%s\n' "$*") >> "$STUB_LOG"
if [ "$1" = -c ]; then
  [ "$2" != "import torch" ] || [ "$STUB_TORCH" = 1 ]
  exit
fi
if [ "$4" = download ]; then
  [ "$STUB_LOCAL_WHEEL" = 1 ] || exit 1
  while [ "$#" -gt 0 ] && [ "$1" != -d ]; do shift; done
  touch "$2/torch-2.13.0+cpu-cp311-cp311-linux_x86_64.whl"
fi
exit 0
"""


def setup(tmp_path: Path, *, torch_installed: bool = False, local_wheel: bool = False, gpu: bool = False,
          **env: str) -> list[list[str]]:
    """Run setup.sh with the stubs; the argument lists of its calls of the virtualenv's python."""
    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "python").write_text(STUB_PYTHON)
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "nvidia-smi").write_text(f"#!/bin/sh\nexit {0 if gpu else 1}\n")
    for stub in (venv_bin / "python", tools / "nvidia-smi"):
        stub.chmod(0o755)
    log = tmp_path / "calls.log"
    base = {k: v for k, v in os.environ.items()
            if not k.startswith("PIP_") and k not in ("TORCH_CPU_INDEX", "LIIF_INSTALL")}
    run_env = {**base, "PATH": f"{tools}{os.pathsep}{base['PATH']}", "VENV": str(tmp_path / "venv"),
               "PYTHON": str(tmp_path / "no-such-python"),  # a venv would be created with it: must not happen
               "TMPDIR": str(tmp_path),  # where setup.sh's pip download folder goes
               "STUB_LOG": str(log), "STUB_TORCH": "1" if torch_installed else "0",
               "STUB_LOCAL_WHEEL": "1" if local_wheel else "0", **env}
    done = subprocess.run(["bash", str(ROOT / "scripts" / "setup.sh")], env=run_env, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return [line.split("\t") for line in log.read_text().splitlines()]


def pip_calls(calls: list[list[str]]) -> list[list[str]]:
    """The pip commands among ``calls``, without the common ``-m pip --disable-pip-version-check``."""
    return [c[len(PIP):] for c in calls if c[:len(PIP)] == PIP]


def assert_pip_keeps_its_index(calls: list[list[str]]) -> None:
    """No pip command replaces the package index that pip's own configuration names."""
    for c in pip_calls(calls):
        assert not any(a in ("-i", "--index-url") or a.startswith("--index-url=") or "pypi.org" in a for a in c), c


@pytest.mark.parametrize("index", [None, "https://mirror.example/whl/cpu"])
def test_cpu_torch_comes_from_the_cpu_index_added_to_pips_own(tmp_path: Path, index: str | None) -> None:
    calls = setup(tmp_path, **({"TORCH_CPU_INDEX": index} if index else {}))
    pip = pip_calls(calls)
    assert len(pip) == 3
    download, torch_install, liif_install = pip
    assert download[:-1] == ["download", "-q", "--no-index", "--no-deps", TORCH, "-d"]  # local wheels only
    assert torch_install == ["install", "-q", f"{TORCH}+cpu", "--extra-index-url",
                             index or "https://download.pytorch.org/whl/cpu"]
    assert liif_install == ["install", "-q", "-e", ".[dev]"]
    assert_pip_keeps_its_index(calls)
    assert calls[0] == ["-c", "import torch"] and calls[-1][0] == "-c" and "import torch, liif" in calls[-1][1]


def test_a_local_cpu_wheel_is_installed_without_any_extra_index(tmp_path: Path) -> None:
    pip = pip_calls(setup(tmp_path, local_wheel=True))
    assert [c[:2] for c in pip] == [["download", "-q"], ["install", "-q"], ["install", "-q"]]
    assert pip[1] == ["install", "-q", TORCH]


def test_with_a_gpu_the_cuda_build_comes_from_pips_index(tmp_path: Path) -> None:
    calls = setup(tmp_path, gpu=True, TORCH_CPU_INDEX="https://mirror.example/whl/cpu")
    assert pip_calls(calls) == [["install", "-q", TORCH], ["install", "-q", "-e", ".[dev]"]]


def test_installed_torch_is_left_alone_and_liif_install_is_passed_through(tmp_path: Path) -> None:
    calls = setup(tmp_path, torch_installed=True, LIIF_INSTALL="dist/liif-1.0-py3-none-any.whl[serve] httpx")
    assert pip_calls(calls) == [["install", "-q", "dist/liif-1.0-py3-none-any.whl[serve]", "httpx"]]
