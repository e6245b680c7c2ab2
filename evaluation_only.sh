#!/usr/bin/env bash
# Evaluate models on the configured suites, one job per GPU (or --jobs N CPU slots):
#   ./evaluation_only.sh [--config pipeline.yaml] [--models a b c] [--suites ...] [--jobs N]
#                        [--retry-failed] [--do-harness|--no-harness] [--do-holmes|--no-holmes]
# Logs: logs/<run>/evaluate/<model-id>__<suite>.log. See docs/evaluation.md.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${here}/environments/main"
if [[ ! -x "${venv}/bin/mergepipe" ]]; then
  echo "error: ${venv} not found; run ./setup.sh first" >&2
  exit 2
fi
exec "${venv}/bin/mergepipe" evaluate "$@"
