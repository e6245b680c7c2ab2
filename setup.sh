#!/usr/bin/env bash
# Create (or update) environments/main: torch first (CPU build unless --cuda), then mergekit,
# lm-eval[hf], this package (editable) and its dev tools. Idempotent: when nothing changed
# since the last successful run it returns in about a second.
#
#   ./setup.sh              CPU torch (default)
#   ./setup.sh --cuda       CUDA torch (set TORCH_INDEX_URL for a specific CUDA wheel index)
#   ./setup.sh --holmes DIR also build environments/holmes for an upstream Holmes checkout
#   ./setup.sh --tinybenchmarks[=SRC]
#                           also install the tinyBenchmarks package (IRT estimates for lm-eval's
#                           tinyBenchmarks tasks) and its parameters file from SRC: a local checkout
#                           or a git URL (default $TINYBENCHMARKS_SOURCE, else its GitHub repository);
#                           without it those tasks are scored as plain means, labelled '_mean'
#   ./setup.sh --force      reinstall even when up to date
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$ROOT/environments/main"
STAMP="$VENV/.mergepipe-setup"
TORCH_VERSION="2.13.0"
CUDA=0
FORCE=0
HOLMES_DIR=""
TINYBENCHMARKS=""
TINYBENCHMARKS_DEFAULT="${TINYBENCHMARKS_SOURCE:-https://github.com/felipemaiapolo/tinyBenchmarks}"

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; }

while (($#)); do
  case "$1" in
    --cuda) CUDA=1 ;;
    --force) FORCE=1 ;;
    --holmes)
      [[ $# -ge 2 ]] || { echo "error: --holmes needs the path of an upstream Holmes checkout" >&2; exit 2; }
      HOLMES_DIR="$2"; shift ;;
    --tinybenchmarks) TINYBENCHMARKS="$TINYBENCHMARKS_DEFAULT" ;;
    --tinybenchmarks=*)
      TINYBENCHMARKS="${1#--tinybenchmarks=}"
      [[ -n "$TINYBENCHMARKS" ]] || { echo "error: --tinybenchmarks= needs a checkout folder or a git URL" >&2; exit 2; } ;;
    -h|--help) usage; exit 0 ;;
    *) echo "error: unknown option '$1' (see ./setup.sh --help)" >&2; exit 2 ;;
  esac
  shift
done

find_python() {
  local candidate
  # 3.11 first: the local torch wheel is built for it.
  for candidate in "${PYTHON:-}" python3.11 python3.12 python3.10 python3; do
    [[ -n "$candidate" ]] || continue
    command -v "$candidate" >/dev/null 2>&1 || continue
    if "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' 2>/dev/null; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

PY="$(find_python)" || {
  echo "error: Python 3.10 or newer is required (none found; set PYTHON=/path/to/python3.11)" >&2
  exit 2
}

# What the environment depends on: when none of it changed, there is nothing to do.
fingerprint() {
  cat "$ROOT/pyproject.toml" "$ROOT/requirements/constraints.txt" "$ROOT/setup.sh"
  echo "cuda=$CUDA torch=$TORCH_VERSION python=$("$PY" -c 'import sys; print(sys.version)')"
}
WANT="$(fingerprint | sha256sum | cut -d' ' -f1)"

if [[ $FORCE -eq 0 && -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" && -x "$VENV/bin/mergepipe" ]]; then
  echo "environments/main is up to date"
else
  if [[ ! -x "$VENV/bin/python" ]]; then
    echo "creating environments/main with $PY"
    "$PY" -m venv "$VENV"
  fi
  PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
  TORCH_ARGS=("torch==$TORCH_VERSION")
  if [[ -n "${TORCH_INDEX_URL:-}" ]]; then
    TORCH_ARGS+=(--index-url "$TORCH_INDEX_URL")
  fi
  if [[ $CUDA -eq 1 ]]; then
    echo "installing torch $TORCH_VERSION (CUDA build)"
  else
    echo "installing torch $TORCH_VERSION (CPU build)"
  fi
  # torch first: a later bare 'torch' requirement would otherwise pull a multi-GB CUDA build.
  "${PIP[@]}" "${TORCH_ARGS[@]}"
  if [[ $CUDA -eq 0 ]] && "$VENV/bin/python" -c 'import torch, sys; sys.exit(0 if torch.version.cuda else 1)' 2>/dev/null; then
    echo "note: the installed torch is a CUDA build; set TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu for a CPU-only build" >&2
  fi
  echo "installing mergekit, lm-eval[hf], mergepipe and dev tools"
  "${PIP[@]}" -c "$ROOT/requirements/constraints.txt" -e "${ROOT}[dev]"
  # Notebooks run on this environment's interpreter.
  "$VENV/bin/python" -m ipykernel install --sys-prefix --name python3 --display-name "mergepipe" >/dev/null
  echo "$WANT" > "$STAMP"
  echo "environments/main is ready"
fi

# tinyBenchmarks is not on the package index: installed from a checkout (cloned first when SRC is a
# URL), with its IRT parameters file put beside the installed package, where mergepipe looks for it.
install_tinybenchmarks() {
  local src="$1" dir work="" target
  if [[ -d "$src" ]]; then
    dir="$(cd "$src" && pwd)"
  else
    command -v git >/dev/null 2>&1 || { echo "error: --tinybenchmarks: git is needed to fetch $src" >&2; exit 2; }
    work="$(mktemp -d)"
    # shellcheck disable=SC2064  # expand now: the folder to remove is known here
    trap "rm -rf '$work'" EXIT
    echo "fetching tinyBenchmarks from $src"
    if ! git clone --depth 1 -q "$src" "$work/tinyBenchmarks"; then
      echo "error: cannot fetch tinyBenchmarks from $src (no network?); its tasks are scored as plain means" \
           "(labelled '_mean') until it is installed (./setup.sh --tinybenchmarks=/path/to/a/checkout)" >&2
      exit 1
    fi
    dir="$work/tinyBenchmarks"
  fi
  if [[ ! -f "$dir/setup.py" && ! -f "$dir/pyproject.toml" ]]; then
    echo "error: --tinybenchmarks: $dir is not a Python package (no setup.py or pyproject.toml)" >&2
    exit 2
  fi
  echo "installing tinyBenchmarks from $dir"
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q "$dir"
  target="$("$VENV/bin/python" -c 'import os, tinyBenchmarks; print(os.path.dirname(tinyBenchmarks.__file__))')"
  if [[ -s "$dir/tinyBenchmarks/tinyBenchmarks.pkl" ]]; then
    cp "$dir/tinyBenchmarks/tinyBenchmarks.pkl" "$target/"
    echo "tinyBenchmarks is ready (IRT parameters in $target)"
  else
    echo "note: $dir has no tinyBenchmarks/tinyBenchmarks.pkl; the package downloads it from GitHub when" \
         "an evaluation ends (where GitHub is unreachable, the tasks are scored as plain means)" >&2
  fi
}

if [[ -n "$TINYBENCHMARKS" ]]; then
  install_tinybenchmarks "$TINYBENCHMARKS"
fi

if [[ -n "$HOLMES_DIR" ]]; then
  exec "$ROOT/scripts/setup_holmes_env.sh" "$HOLMES_DIR"
fi
