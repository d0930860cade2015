"""Packaging: one version source, and (slow) a built wheel in a fresh CPU-only venv without Triton."""

import importlib.metadata
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

import eqagent

ROOT = Path(__file__).resolve().parents[1]


def test_one_version_source():
    assert importlib.metadata.version("eqagent") == eqagent.__version__
    text = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in text and 'license = "MIT"' in text
    assert (ROOT / "eqagent" / "py.typed").exists()


def _run(*cmd, cwd=None, env=None) -> str:
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, f"{cmd}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


@pytest.mark.slow
def test_wheel_installs_without_triton_and_is_typed(tmp_path):
    """``python -m build --wheel``, ``twine check``, a fresh venv with the CPU torch and the wheel (no extras): no
    Triton, the agent imports and trains a step, and mypy sees ``EPAgent.learn``'s types (``py.typed``)."""
    dist = tmp_path / "dist"
    _run(sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(ROOT))
    wheel = next(dist.glob("eqagent-*.whl"))
    _run(sys.executable, "-m", "twine", "check", "--strict", str(wheel))
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = str(env_dir / "bin" / "python")
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    _run(py, "-m", "pip", "install", "-q", os.environ.get("EQAGENT_TORCH", "torch==2.13.0"), env=env)
    _run(py, "-m", "pip", "install", "-q", str(wheel), "mypy", env=env)
    probe = "import importlib.util as u; print(u.find_spec('triton') is None)"
    assert _run(py, "-c", probe, env=env).strip() == "True"
    _run(py, "-c", "from eqagent.agents import EPAgent; EPAgent('CartPole-v1', learning_starts=5).learn(10)",
         cwd=tmp_path, env=env)  # fmt: skip
    snippet = tmp_path / "snip.py"
    snippet.write_text("from eqagent.agents import EPAgent\n\nreveal_type(EPAgent.learn)\n")
    out = _run(py, "-m", "mypy", "--follow-imports=silent", "--ignore-missing-imports", str(snippet), cwd=tmp_path,
               env=env)  # fmt: skip
    assert "total_timesteps: int" in out and "eqagent.agents.ep_agent.EPAgent" in out, out
