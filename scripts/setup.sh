#!/usr/bin/env bash
# Creates .venv (if missing) and installs eqagent with its extras into it. Idempotent.
# torch: the CPU build 2.13.0 is installed first when the venv has no torch (an unpinned torch would pull a
# multi-GB CUDA build); set EQAGENT_TORCH to choose another requirement (e.g. "torch>=2.8" on a GPU machine).
# Extras: dev (tests, lint, packaging), mujoco (the suite's MuJoCo envs), ray (sweeps); triton only where an
# NVIDIA GPU is present (its kernels run on CUDA; the code runs without it). EQAGENT_EXTRAS overrides the list.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
VPY=.venv/bin/python
extras="${EQAGENT_EXTRAS:-dev,mujoco,ray}"
if [ -z "${EQAGENT_EXTRAS:-}" ] && command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    extras="$extras,triton"
fi
stamp=.venv/.eqagent-installed
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ] && [ "$(cat "$stamp")" = "$extras" ] \
    && "$VPY" -c "import eqagent, torch" 2>/dev/null; then
    exit 0
fi
"$VPY" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if ! "$VPY" -c "import torch" 2>/dev/null; then
    "$VPY" -m pip install -q "${EQAGENT_TORCH:-torch==2.13.0}"
fi
"$VPY" -m pip install -q -e ".[$extras]"
echo "$extras" > "$stamp"
