import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest

GAIT = Path(__file__).resolve().parents[1] / "scripts" / "halfcheetah_gait.py"


def test_gait_flip_detector_wraps_the_pitch():
    ns = runpy.run_path(str(GAIT))  # defines main without running it
    wrap, limit = ns["_wrap"], ns["FLIPPED"]
    pitch = np.array([0.0, 0.5, -1.0, 3.1, -3.1, 2 * np.pi + 0.2, 2 * np.pi + 3.0, -2 * np.pi - 3.0])
    assert (np.abs(wrap(pitch)) > limit).tolist() == [False, False, False, True, True, False, True, True]


def test_gait_script_prints_shares_and_an_evaluation(monkeypatch, capsys):
    pytest.importorskip("mujoco")
    argv = ["halfcheetah_gait.py", "--steps", "120", "--window", "40", "--eval", "--set"]
    argv += ["planner.candidates=8", "planner.iterations=1", "planner.elites=2", "planner.horizon=3"]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(GAIT), run_name="__main__")
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["steps"] == 120 and len(out["flipped_share"]) == len(out["mean_reward"]) == 3
    assert all(0.0 <= x <= 1.0 for x in out["flipped_share"])
    assert np.isfinite(out["eval"]["return"]) and 0.0 <= out["eval"]["flipped_share"] <= 1.0


def test_gait_script_rejects_bad_input(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["halfcheetah_gait.py", "--steps", "0"])
    with pytest.raises(SystemExit) as e:
        runpy.run_path(str(GAIT), run_name="__main__")
    assert e.value.code == 2
