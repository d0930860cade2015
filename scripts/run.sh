#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh) and runs the main job: the EP agent on CartPole-v1, TensorBoard logs in runs/.
# Arguments are passed on to `eqagent run`, e.g. `bash scripts/run.sh --env Pendulum-v1 --total-timesteps 2000`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/eqagent run --tensorboard-log runs --progress-bar "$@"
