#!/usr/bin/env bash
# Second README command: run the test suite (sets up .venv first if needed). Extra args go to pytest,
# e.g. `bash scripts/test.sh -m slow` for the long runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "test.sh: pytest collected no tests: failing on purpose" >&2
  exit 1
fi
exit "$rc"
