#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh) and runs the main job with TensorBoard logs under runs/.
# Arguments are passed on to the command, e.g. `bash scripts/run.sh --epochs 1`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/eqagent mnist --tensorboard-log runs "$@"
