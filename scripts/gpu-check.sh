#!/usr/bin/env bash
# The GPU checks, prepared on the CPU and run on a lent GPU machine in one go:
#   bash scripts/gpu-check.sh infer   # rendering: benchmarks, parity, PSNR per precision, the test suite
#   bash scripts/gpu-check.sh train   # training: samples/s per loop variant, data loader, short real runs
# Figures go to $OUT (default ./gpu-out): machine.txt, steps.txt, one log per mode, and JSON files. The machine is offline, so what it needs travels in .gpu/
# (ignored by git): .gpu/data (the training set of `liif data fetch train`; goldens, Set5 and Set14 are in
# tests/data), .gpu/cache/weights (the
# official checkpoint, as `liif weights fetch` caches it) and .gpu/whl (wheels of the viewer's
# dependencies for the machine's Python). Each step has its own time limit and the script goes on
# after a failing step, so one problem costs one figure, not the run. To fill .gpu on the CPU side:
#   mkdir -p .gpu/data/train .gpu/cache/weights .gpu/whl
#   cp -r "$(python3 -c 'from liif.data.roots import data_root; print(data_root())')/train/T91" .gpu/data/train/
#   cp "$(liif weights fetch edsr-baseline-liif)" .gpu/cache/weights/
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_17_x86_64 -d .gpu/whl \
#     fastapi starlette uvicorn python-multipart pydantic pydantic-core typing-inspection annotated-types \
#     annotated-doc opentelemetry-api   # (pin the versions the venv has)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
what=${1:-infer}
export PYTHONUNBUFFERED=1 LIIF_CACHE_DIR=$PWD/.gpu/cache
if [ -d .gpu/whl ] && ls .gpu/whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl
  export PYTHONPATH=$PWD:/tmp/site
else
  export PYTHONPATH=$PWD
fi
export LIIF_DATA_DIR=$PWD/.gpu/data
liif() { python3 -m liif.cli "$@"; }
step() {  # step NAME SECONDS COMMAND...: run with a limit, log to $OUT/NAME.log, report the exit status
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" >/tmp/step.log 2>&1
  local rc=$?
  echo "== $name: exit $rc in $((SECONDS - t0)) s" | tee -a "$OUT/steps.txt"
  { echo "== $name: $*"; cat /tmp/step.log; echo "== $name: exit $rc in $((SECONDS - t0)) s"; } >>"$OUT/$what.log"
  tail -n 25 /tmp/step.log
}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda)"
  nproc; } | tee "$OUT/machine.txt"

if [ "$what" = infer ]; then
  step bench-infer 150 python3 -m liif.cli bench infer --device cuda --size 512 --scales 2,4,12 --repeat 3 \
    --max-window-px 1048576 --big --huge --json "$OUT/bench-infer.json"
  step gpu-check 100 python3 scripts/gpu_check.py "$OUT/gpu-check.json"
  python3 -m pip install -q --no-deps --no-build-isolation --no-compile -e . >/dev/null 2>&1  # the `liif` script
  step pytest 200 python3 -m pytest -q -n 8 -p no:cacheprovider --durations=10 tests
elif [ "$what" = train ]; then
  step standin 60 python3 scripts/make_standin.py /tmp/standin --n 200
  step bench-train 150 python3 -m liif.cli bench train --device cuda --data /tmp/standin --iters 6 \
    --variants fp32,tf32,bf16,bf16:nofold,fp16,bf16:compile --loader-workers 0 4 8 16 \
    --json "$OUT/bench-train.json"
  for b in 64 128; do
    step "bench-train-b$b" 45 python3 -m liif.cli bench train --device cuda --data /tmp/standin --iters 5 \
      --batch "$b" --no-reference --variants fp32,bf16 --json "$OUT/bench-train-b$b.json"
  done
  cfg=configs/train-edsr-baseline-liif.yaml
  data=(--set "data.train.roots=[/tmp/standin]" --set data.train.div2k=null --set data.val.hr=null
        --set data.val.lr=null --set data.workers=8 --no-progress)
  step train-fp32 50 python3 -m liif.cli train $cfg --out /tmp/run-fp32 "${data[@]}" --set train.precision=fp32 --max-minutes 0.6
  step train-fp32-resume 40 python3 -m liif.cli train $cfg --out /tmp/run-fp32 "${data[@]}" --set train.precision=fp32 --max-minutes 0.3 --resume
  step train-bf16 50 python3 -m liif.cli train $cfg --out /tmp/run-bf16 "${data[@]}" --set train.precision=bf16 --max-minutes 0.6
  step dist-train 50 bash dist_train.sh $cfg 1 --out /tmp/run-ddp "${data[@]}" --max-minutes 0.4
  step e2e 45 python3 scripts/gpu_e2e.py "$OUT/gpu-e2e.json"  # the API end to end, and a profile
  # after the fixes of the first GPU run: the whole suite again
  python3 -m pip install -q --no-deps --no-build-isolation --no-compile -e . >/dev/null 2>&1  # the `liif` script
  step pytest 100 python3 -m pytest -q -n 8 -p no:cacheprovider tests
  for r in fp32 bf16 ddp; do
    { echo "== /tmp/run-$r/log.csv"; cat /tmp/run-$r/log.csv; ls -R /tmp/run-$r/checkpoints; } >>"$OUT/$what.log" 2>&1
  done
elif [ "$what" = quick ]; then  # a re-check after fixes: the suite and the whole-render timings
  python3 -m pip install -q --no-deps --no-build-isolation --no-compile -e . >/dev/null 2>&1  # the `liif` script
  step pytest 110 python3 -m pytest -q -n 8 -p no:cacheprovider tests
  step bench-big 90 python3 -m liif.cli bench infer --device cuda --size 256 --scales 4 --repeat 3 --big --huge \
    --json "$OUT/bench-big.json"
else
  echo "usage: bash scripts/gpu-check.sh infer|train|quick" >&2
  exit 2
fi
cat "$OUT/steps.txt"
