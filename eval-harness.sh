#!/usr/bin/env bash
# Evaluate one model on lm-eval tasks:
#   ./eval-harness.sh MODEL TASKS [--gpu N] [--batch-size B] [--num-fewshot K] [--apply-chat-template]
#                     [--limit L] [--backend hf|vllm]
# Results: harness_results/<model-id>/<suite>/ in lm-eval's file layout. See docs/evaluation.md.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${here}/environments/main"
if [[ ! -x "${venv}/bin/mergepipe" ]]; then
  echo "error: ${venv} not found; run ./setup.sh first" >&2
  exit 2
fi
exec "${venv}/bin/mergepipe" eval-harness "$@"
