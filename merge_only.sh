#!/usr/bin/env bash
# Merge only: validate the config and merge the experts with each method.
#   ./merge_only.sh [--config pipeline.yaml] [--model-1 A --model-2 B --base-model C --methods "linear ties"]
# All options: ./merge_only.sh --help
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
[[ -x "$ROOT/environments/main/bin/mergepipe" ]] || "$ROOT/setup.sh"
exec "$ROOT/environments/main/bin/mergepipe" merge "$@"
