#!/usr/bin/env bash
# The whole pipeline: merge -> publish (optional) -> evaluate -> organize -> plots and report.
#   ./script.sh                      the demo (pipeline.yaml: zoo models, CPU, no network)
#   ./script.sh --config my.yaml     your own run;  ./script.sh --dry-run   print the plan only
# Re-running resumes: finished merges and evaluation jobs are skipped. All options: --help
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
[[ -x "$ROOT/environments/main/bin/mergepipe" ]] || "$ROOT/setup.sh"
exec "$ROOT/environments/main/bin/mergepipe" run "$@"
