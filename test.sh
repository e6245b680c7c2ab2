#!/usr/bin/env bash
# Run everything CI runs: setup (when needed), ruff, shellcheck over every *.sh, and pytest.
# Extra arguments go to pytest (e.g. ./test.sh -k merge -x).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"
./setup.sh
BIN="$ROOT/environments/main/bin"

# The report test renders in headless Chromium; install it when this machine allows.
if ! command -v chromium >/dev/null 2>&1 && [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "note: chromium could not be installed; the browser test will be skipped" >&2
fi

echo "== ruff"
LINT=()
for dir in src tests benchmarks Plotting; do [[ -d "$dir" ]] && LINT+=("$dir"); done
"$BIN/ruff" check "${LINT[@]}"
echo "== shellcheck"
mapfile -t SCRIPTS < <(git ls-files '*.sh' 2>/dev/null || find . -name '*.sh' -not -path './environments/*')
"$BIN/shellcheck" "${SCRIPTS[@]}"
echo "== pytest"
"$BIN/python" -m pytest "$@"
