#!/usr/bin/env bash
# Set up the benchmark: a venv with the pinned peers (bench/requirements.txt) plus wsrooms
# itself (editable), and the Node.js load generator's dependencies (bench/package-lock.json).
#
#   bash bench/setup.sh                       # venv at bench/.venv
#   BENCH_VENV=/work/bench-venv bash bench/setup.sh
set -euo pipefail
bench="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$bench")"
venv="${BENCH_VENV:-$bench/.venv}"
python="${PYTHON:-$(command -v python3.11 || command -v python3)}"

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$bench/requirements.txt"
"$venv/bin/python" -m pip install -q --disable-pip-version-check -e "$repo"
npm ci --prefix "$bench" --no-audit --no-fund --loglevel=error
echo "bench ready: $venv/bin/python $bench/run.py --quick"
