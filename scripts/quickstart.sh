#!/usr/bin/env bash
# First README command: set up .venv, fetch the official weights (verified), run the demo job.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/liif weights fetch edsr-baseline-liif
.venv/bin/liif demo -o "${1:-demo-out}"
echo "quickstart: outputs in ${1:-demo-out}/ (liif_x*.png, compare_bicubic_vs_liif.png)"
