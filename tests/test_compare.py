import json

import pytest
from eqagent.agents.compare import CompareConfig, run_compare, summarize
from eqagent.agents.zoo import ZOO, zoo_hyperparams
from eqagent.apps.cli import main
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

TAGS = {"eval/mean_reward", "rollout/ep_rew_mean", "time/fps"}


def test_compare_end_to_end_writes_files_and_shared_tags(tmp_path, capsys):
    out, logdir = tmp_path / "out", tmp_path / "runs"
    argv = ["compare", "--env", "eqagent/LineWorld-v0", "--algos", "ep,ppo,dqn", "--seeds", "1",
            "--total-timesteps", "200", "--eval-every", "100", "--eval-episodes", "2", "--logdir", str(logdir),
            "--out", str(out), "--workers", "2", "--no-progress-bar", "--json"]  # fmt: skip
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result["algos"]) == {"ep", "ppo", "dqn"}
    rows = (out / "evaluations_eqagent_LineWorld-v0.csv").read_text().strip().splitlines()
    assert rows[0] == "env,algo,seed,step,eval_mean,eval_std" and len(rows) == 1 + 3 * 3  # steps 0, 100, 200
    md = (out / "summary_eqagent_LineWorld-v0.md").read_text()
    assert all(f"| {a} |" in md for a in ("ep", "ppo", "dqn"))
    assert (out / "curves_eqagent_LineWorld-v0.png").stat().st_size > 1000
    runs = sorted(logdir.iterdir())
    assert len(runs) == 3
    for run in runs:
        acc = EventAccumulator(str(run))
        acc.Reload()
        assert TAGS <= set(acc.Tags()["scalars"]), (run.name, acc.Tags()["scalars"])
        assert [e.step for e in acc.Scalars("eval/mean_reward")] == [0, 100, 200]
        assert "eval/mean_ep_length" in acc.Tags()["scalars"]


def test_summary_counts_unreached_seeds_above_the_budget():
    def run(algo, means, learned_from=1):
        from eqagent.agents.evaluation import summarize as summarize_evals

        evals = [
            {"step": 100 * i, "mean": m, "std": 0.0, "learned": i >= learned_from}
            for i, m in enumerate(means)
        ]
        return {"algo": algo, "evaluations": evals, "wall_seconds": 1.0, "env_steps_per_second": 1.0,
                "budget": 500, **summarize_evals(evals, 10.0)}  # fmt: skip

    runs = [
        run("a", [11, 0, 12, 5, 11, 11, 11]),  # 11 before learning: not counted; held from step 400
        run("a", [0, 12, 12, 12, 0, 0]),  # a peak that falls back: reached at 100, never held
        run("a", [0, 0, 0, 0, 0, 0]),
    ]
    s = summarize(runs, 10.0)["a"]
    assert s["steps_to_threshold"] == [200, 100, None]
    assert s["steps_to_threshold_median"] == 200
    assert s["steps_to_threshold_held"] == [400, None, None]
    assert s["steps_to_threshold_held_median"] is None
    assert s["pre_learning_mean"] == pytest.approx((11 + 0 + 0) / 3)
    assert s["table"]["steps_to_threshold"] == "200 (100–> 500)"
    assert s["final_mean"] == pytest.approx((11 + 0 + 0) / 3)


def test_zoo_data_and_config_errors():
    hp, tuned = zoo_hyperparams("ppo", "CartPole-v1")
    assert tuned and hp["n_envs"] == 8 and hp["learning_rate"] == "lin_0.001"
    hp["n_envs"] = 1  # a copy: the data stays intact
    assert ZOO["ppo"]["CartPole-v1"]["n_envs"] == 8
    assert zoo_hyperparams("sac", "eqagent/LineWorld-v0") == ({}, False)
    with pytest.raises(ValueError, match="unknown SB3 algorithm"):
        zoo_hyperparams("a2c", "CartPole-v1")
    assert CompareConfig(env="CartPole-v1").algo_list() == ["ep", "ppo", "dqn"]
    assert CompareConfig(env="Pendulum-v1").algo_list() == ["ep", "ppo", "sac"]
    assert CompareConfig(budgets="ep=3000, ppo=20000").budget("ep") == 3000
    with pytest.raises(ValueError, match="algo=N"):
        CompareConfig(budgets="ep:3000").budget("ep")
    with pytest.raises(ValueError, match="unknown algorithm"):
        CompareConfig(algos="ep,a2c").algo_list()
    with pytest.raises(ValueError, match="Discrete"):
        run_compare(CompareConfig(env="Pendulum-v1", algos="dqn", out="unused"))


def test_speed_bench_reports_its_figures(capsys):
    argv = ["bench", "speed", "--env", "eqagent/LineWorld-v0", "--seeds", "1", "--ep-budget", "60", "--ppo-budget",
            "128", "--eval-freq", "30", "--n-eval-episodes", "1", "--vec-steps", "16", "--vec-warmup", "2", "--json"]  # fmt: skip
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("ep_ms_per_step", "ep_plan_ms", "ppo_ms_per_step", "ep_steps_to_threshold", "ppo_steps_to_threshold",
                "ep_wall_to_threshold_s", "ppo_wall_to_threshold_s", "wall_ratio", "vec_speedup_8"):  # fmt: skip
        assert key in out
    assert out["ep_ms_per_step"] > 0 and out["vec_speedup_8"] > 0
    assert out["wall_ratio"] is None  # LineWorld has no threshold: nothing to time, and nothing guessed


def test_train_seconds_exclude_evaluations():
    from eqagent.agents import EPAgent
    from eqagent.agents.evaluation import EvalHistoryCallback
    from eqagent.agents.run import make_eval_env

    agent = EPAgent("eqagent/LineWorld-v0", seed=0, learning_starts=10)
    cb = EvalHistoryCallback(make_eval_env("eqagent/LineWorld-v0", 0), 20, 1)
    agent.learn(40, callback=cb)
    seconds = [e["train_seconds"] for e in cb.history]
    assert seconds[0] == pytest.approx(0.0, abs=0.05) and 0 < seconds[1] < seconds[2] <= cb.train_seconds()


def test_suite_runs_ep_and_sb3_with_held_steps_and_reuses_the_sb3_cache(tmp_path, capsys):
    from eqagent.agents.suite import SUITE, sb3_algos, sb3_budget

    assert sb3_algos("CartPole-v1") == ["ppo", "dqn"] and sb3_algos("Pendulum-v1") == ["ppo", "sac"]
    assert sb3_budget("ppo", "CartPole-v1") == 50_000 and sb3_budget("sac", "Pendulum-v1") == 20_000
    assert sb3_budget("sac", "InvertedPendulum-v5") == 50_000  # not tuned by the zoo: the cap
    assert SUITE["HalfCheetah-v5"].threshold is None
    out, cache = tmp_path / "out", tmp_path / "cache"
    argv = ["suite", "--envs", "CartPole-v1", "--seeds", "1", "--budget-scale", "0.001", "--eval-episodes", "1",
            "--sb3-cache", str(cache), "--out", str(out), "--workers", "2", "--json"]  # fmt: skip
    # --no-ep fills the cache with the SB3 runs alone, each written as it finishes
    assert main([*argv[:-1], "--no-ep", "--json"]) == 0
    sb3_only = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["envs"]["CartPole-v1"]
    assert set(sb3_only["algos"]) == {"ppo", "dqn"} and sb3_only["ep_steps"] is None
    assert not any(a["cached"] for a in sb3_only["algos"].values())
    assert len(list(cache.glob("*.json"))) == 2 and not list(cache.glob("*.tmp"))
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    row = result["envs"]["CartPole-v1"]
    assert set(row["algos"]) == {"ep", "ppo", "dqn"} and row["sb3_algo"] in ("ppo", "dqn")
    assert (
        all(row["algos"][a]["cached"] for a in ("ppo", "dqn")) and row["sb3_final"] == sb3_only["sb3_final"]
    )
    assert row["threshold"] == 475 and all(a["budget"] == 500 for a in row["algos"].values())
    # 500 steps hold 475 nowhere: SB3 counts as holding it at its budget, EP's figure is null
    assert row["sb3_steps"] == 500 and row["sb3_reached"] is False and row["ep_steps"] is None
    assert len(list(cache.glob("*.json"))) == 2 and (out / "suite_curves.png").stat().st_size > 1000
    assert "| CartPole-v1 | 475 |" in (out / "suite.md").read_text()
    assert not row["algos"]["ep"]["cached"]  # the EP agent is never cached
    curves = row["algos"]["ep"]["curves"]  # per seed: [step, mean] from the evaluation before training on
    assert (
        len(curves) == 1
        and curves[0][0][0] == 0
        and [c[0] for c in curves[0]] == sorted(c[0] for c in curves[0])
    )
    assert main(["suite", "--envs", "Nope-v0", "--out", str(out)]) == 2
    assert main(["suite", "--no-ep", "--no-sb3", "--out", str(out)]) == 2
