#!/usr/bin/env bash
# Create .venv with liif and its dependencies. On machines without an NVIDIA GPU the CPU build of
# torch 2.13.0 is pinned first (an unpinned torch would pull several GB of CUDA wheels): from a local
# +cpu wheel if pip's configuration finds one, else from TORCH_CPU_INDEX (default PyTorch's CPU index).
# Idempotent: re-running only installs what is missing. PYTHON=python3.11 to choose the interpreter.
# VENV=DIR sets up another environment and LIIF_INSTALL what goes into it after torch (default: this
# checkout, editable, with the dev extras); scripts/wheel-check.sh installs the built wheel that way.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
case $VENV in /*) ;; *) VENV=$PWD/$VENV ;; esac
TORCH_VERSION=2.13.0

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV (first run: installs torch and the dependencies, a few minutes)"
  "$PY" -m venv "$VENV"
fi
pip=("$VENV/bin/python" -m pip --disable-pip-version-check)

if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "setup: NVIDIA GPU found: installing torch==$TORCH_VERSION (CUDA build)"
    "${pip[@]}" install -q "torch==$TORCH_VERSION"
  elif tmp=$(mktemp -d) && "${pip[@]}" download -q --no-index --no-deps "torch==$TORCH_VERSION" -d "$tmp" 2>/dev/null \
       && ls "$tmp" | grep -q '+cpu'; then
    rm -rf "$tmp"
    echo "setup: no GPU: installing torch==$TORCH_VERSION from the local CPU wheel (pip find-links)"
    "${pip[@]}" install -q "torch==$TORCH_VERSION"
  else
    # The CPU wheel (version +cpu) comes from PyTorch's CPU index, added to pip's own configuration
    # (index-url, mirrors, pip.conf, PIP_INDEX_URL), which still serves torch's dependencies.
    echo "setup: no GPU: installing the CPU build of torch==$TORCH_VERSION"
    "${pip[@]}" install -q "torch==$TORCH_VERSION+cpu" \
      --extra-index-url "${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}"
  fi
fi

echo "setup: installing liif and its dependencies into $VENV (pip, quiet; a minute or more the first time)"
# shellcheck disable=SC2086  # LIIF_INSTALL may hold several pip arguments
"${pip[@]}" install -q ${LIIF_INSTALL:--e .[dev]}
# Imported from / so that an installed wheel is what answers, not this checkout's folder.
(cd / && "$VENV/bin/python" -c "import torch, liif; print(f'setup: liif {liif.__version__} ({liif.__file__}), torch {torch.__version__}, cuda={torch.cuda.is_available()}')")
