#!/usr/bin/env bash
# The GPU checks of the Triton kernels, as one script for a lent CUDA machine (torch + Triton installed there):
# the kernel tests on CUDA (the same tests that run through the interpreter in CI), then `eqagent bench imagine`,
# `eqagent bench relax` and the agent's planning time on CUDA, each printing one JSON line. Usage:
#   bash scripts/device_bench.sh > device.jsonl
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
"$PY" -m pip install -q --no-deps -e . >/dev/null 2>&1 || true
# CUDA: the tests dispatch to the GPU when TRITON_INTERPRET is 0
TRITON_INTERPRET=0 "$PY" -m pytest -q tests/test_kernels.py 2>&1 | tail -3 >&2
"$PY" -m eqagent.apps.cli bench imagine --device cuda --candidates 128,1024,4096 --json | tail -1
"$PY" -m eqagent.apps.cli bench relax --device cuda --json | tail -1
"$PY" - <<'PY'
import json, time, torch
from eqagent.agents import EPAgent
agent = EPAgent("CartPole-v1", seed=0, device="cuda")
agent.learn(300)
obs = agent.env.reset()
for _ in range(5):
    agent.predict(obs, deterministic=True)
torch.cuda.synchronize()
t0 = time.perf_counter()
for _ in range(50):
    agent.predict(obs, deterministic=True)
torch.cuda.synchronize()
print(json.dumps({"agent_plan_ms_cuda": 1e3 * (time.perf_counter() - t0) / 50}))
PY
