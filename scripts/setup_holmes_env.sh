#!/usr/bin/env bash
# Build environments/holmes: a separate venv for a user's upstream Holmes checkout.
#
# Usage: scripts/setup_holmes_env.sh HOLMES_CHECKOUT [ENV_DIR]
#
# The checkout's requirements.txt is installed with its known conflicts worked around:
#   - a package pinned twice (upstream lists ray twice): the first pin is kept;
#   - sentence-transformers 2.2.2 imports cached_download, removed in huggingface_hub 0.26,
#     so huggingface_hub<0.26 is added as a constraint.
# Idempotent: a second run with the same requirements changes nothing.
# HOLMES_PYTHON picks the interpreter (upstream wants python 3.10; default: python3.10, else python3).
set -euo pipefail

if [[ $# -lt 1 || $# -gt 2 || "$1" == "-h" || "$1" == "--help" ]]; then
    echo "usage: $0 HOLMES_CHECKOUT [ENV_DIR]" >&2
    exit 2
fi

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
checkout="$(cd "$1" 2>/dev/null && pwd)" || { echo "error: Holmes checkout not found: $1" >&2; exit 2; }
env_dir="${2:-$repo_root/environments/holmes}"
requirements="$checkout/requirements.txt"

if [[ ! -f "$checkout/src/investigate.py" ]]; then
    echo "error: $checkout has no src/investigate.py (not an upstream Holmes checkout?)" >&2
    exit 2
fi
if [[ ! -f "$requirements" ]]; then
    echo "error: $requirements not found" >&2
    exit 2
fi

python_bin="${HOLMES_PYTHON:-}"
if [[ -z "$python_bin" ]]; then
    if command -v python3.10 >/dev/null 2>&1; then python_bin="python3.10"; else python_bin="python3"; fi
fi

mkdir -p "$env_dir"
filtered="$env_dir/requirements.filtered.txt"
constraints="$env_dir/constraints.txt"

# One pin per package (first wins); names compared case- and -/_-insensitively.
awk '
    /^[[:space:]]*(#|$)/ { next }
    {
        line = $0; sub(/[[:space:]]+#.*/, "", line)
        name = tolower(line); sub(/[[:space:]]*[<>=!~;[ @].*/, "", name); gsub(/_/, "-", name)
        if (name in seen) { print "note: dropping duplicate pin: " line > "/dev/stderr"; next }
        seen[name] = 1; print line
    }
' "$requirements" >"$filtered.tmp"
mv "$filtered.tmp" "$filtered"

: >"$constraints.tmp"
if grep -qiE '^sentence[-_]transformers[[:space:]]*==[[:space:]]*2\.2\.2' "$filtered"; then
    echo "huggingface_hub<0.26" >>"$constraints.tmp"
fi
mv "$constraints.tmp" "$constraints"

stamp="$env_dir/.mergepipe-holmes-stamp"
want="$(cat "$filtered" "$constraints" | sha256sum | cut -d' ' -f1)"
if [[ -x "$env_dir/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    echo "environments/holmes is up to date ($env_dir)"
    exit 0
fi

if [[ ! -x "$env_dir/bin/python" ]]; then
    "$python_bin" -m venv "$env_dir"
fi
"$env_dir/bin/python" -m pip install --quiet --upgrade pip
"$env_dir/bin/python" -m pip install --quiet -r "$filtered" -c "$constraints"
echo "$want" >"$stamp"
echo "Holmes environment ready: $env_dir (checkout $checkout)"
