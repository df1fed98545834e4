#!/usr/bin/env bash
# Build the wheel and use it as a user who installed it would: a fresh virtualenv outside the source
# tree, an empty weights cache, a working folder elsewhere. Checks that the installed package imports,
# fetches the official weights (verified), runs `liif demo` and serves the viewer with its static files.
# Usage: bash scripts/wheel-check.sh [WORKDIR]   (default: a new temp folder, removed at the end)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
work=${1:-$(mktemp -d)}
[ -n "${1:-}" ] || trap 'rm -rf "$work"' EXIT
mkdir -p "$work"
echo "wheel-check: building the wheel into $work/dist"
python3 -m pip wheel --disable-pip-version-check -q --no-deps -w "$work/dist" "$repo"
wheel=$(ls "$work"/dist/liif-*.whl)
python3 - "$wheel" <<'PY'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
need = ["liif/serve/static/index.html", "liif/serve/static/viewer.js", "liif/serve/static/style.css", "liif/py.typed",
        "liif/weights/files/edsr-baseline-liif-realworld.safetensors"]
missing = [n for n in need if n not in names]
assert not missing, f"wheel lacks {missing}"
assert not [n for n in names if n.startswith(("tests/", "configs/", "scripts/"))], "wheel carries repository files"
print(f"wheel-check: {sys.argv[1].rsplit('/', 1)[-1]}: {len(names)} files, static files present")
PY
echo "wheel-check: installing it into a fresh virtualenv ($work/venv) with the serve extra"
VENV="$work/venv" LIIF_INSTALL="$wheel[serve]" bash scripts/setup.sh
cd "$work"
export LIIF_CACHE_DIR="$work/cache"  # empty: the weights are really fetched and verified
liif=("$work/venv/bin/liif")
"${liif[@]}" weights fetch edsr-baseline-liif
"${liif[@]}" weights fetch edsr-baseline-liif-realworld   # installed with the wheel: checked, not downloaded
"${liif[@]}" demo -o "$work/demo"
ls "$work"/demo/liif_x*.png "$work/demo/compare_bicubic_vs_liif.png" >/dev/null
port=$("$work/venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"${liif[@]}" serve --port "$port" >"$work/serve.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; [ -n "${1:-}" ] || rm -rf "$work"' EXIT
"$work/venv/bin/python" - "$port" <<'PY'
import sys, time, urllib.request
base = f"http://127.0.0.1:{sys.argv[1]}"
for _ in range(120):
    try:
        page = urllib.request.urlopen(base + "/", timeout=5).read().decode()
        break
    except OSError:
        time.sleep(0.5)
else:
    sys.exit("wheel-check: the viewer did not answer on " + base)
script = urllib.request.urlopen(base + "/static/viewer.js", timeout=5).read()
assert "<html" in page.lower() and len(script) > 1000, "viewer page or script missing"
print(f"wheel-check: viewer served from the wheel ({len(page)} B page, {len(script)} B script)")
PY
echo "wheel-check: OK (the installed wheel imports, fetches weights, runs the demo and serves the viewer)"
