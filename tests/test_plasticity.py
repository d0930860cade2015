import json

import numpy as np
import pytest
import torch
from eqagent.apps.bench.plasticity import (
    PlasticityBenchConfig,
    autograd_bytes,
    evaluate,
    run_plasticity_bench,
    train_pattern_net,
)

from eqagent.plasticity import PatternTask, PlasticRNN, bit_error, pattern_episode_batch

SMALL = PatternTask(n=16, k=2, show_steps=4, gap_steps=2, rounds=2, query_steps=4)


def test_hebbian_step_matches_the_rule():
    torch.manual_seed(0)
    net = PlasticRNN(5, eta=0.2)
    x, hebb = torch.rand(2, 5), torch.rand(2, 5, 5)
    u = torch.rand(2, 5)
    x_new, hebb_new = net.step(u, x, hebb)
    w_eff = net.w + net.alpha * hebb
    expected_x = torch.tanh(torch.einsum("bi,bij->bj", x, w_eff) + net.bias + u)
    torch.testing.assert_close(x_new, expected_x)
    expected_h = 0.8 * hebb + 0.2 * torch.einsum("bi,bj->bij", x, expected_x)
    torch.testing.assert_close(hebb_new, expected_h)


def test_neuron_plasticity_is_the_same_rule_without_the_trace_tensor():
    torch.manual_seed(0)
    neuron = PlasticRNN(6, eta=0.2, alpha="neuron")
    with torch.no_grad():
        neuron.alpha_pre.copy_(torch.randn(6))
        neuron.alpha_post.copy_(torch.randn(6))
    conn = PlasticRNN(6, eta=0.2, alpha="connection")
    conn.load_state_dict(
        {"w": neuron.w, "bias": neuron.bias, "alpha": neuron.alpha_matrix, "eta_logit": neuron.eta_logit}
    )
    u = torch.randn(9, 3, 6)
    torch.testing.assert_close(neuron(u), conn(u))
    (x, tr), (x2, tr2) = neuron.initial_state(3), conn.initial_state(3)
    for t in range(9):
        x, tr = neuron.step(u[t], x, tr)
        x2, tr2 = conn.step(u[t], x2, tr2)
    torch.testing.assert_close(neuron.hebb(tr), tr2)
    # the gradients agree too (p, q receive the chain rule through alpha = p q^T)
    neuron(u)[-1].sum().backward()
    conn(u)[-1].sum().backward()
    torch.testing.assert_close(neuron.w.grad, conn.w.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(
        neuron.alpha_pre.grad, conn.alpha.grad @ neuron.alpha_post.detach(), rtol=1e-4, atol=1e-5
    )


def test_episode_batch_layout():
    x, y = pattern_episode_batch(SMALL, 3, np.random.default_rng(0))
    assert x.shape == (SMALL.length, 3, 16) and y.shape == (3, 16)
    assert set(np.unique(y)) <= {-1.0, 1.0}
    query = x[-1]
    assert np.all((query == 0) | (query == y)) and np.all((query == 0).sum(1) == 8)


def test_plastic_net_learns_and_beats_plain_rnn():
    kw = dict(task=SMALL, episodes=800, batch=10, lr=3e-3, eta=0.01, seed=0)
    untrained = evaluate(PlasticRNN(16), SMALL, 200)
    plastic = evaluate(train_pattern_net(True, **kw), SMALL, 200)
    rnn = evaluate(train_pattern_net(False, **kw), SMALL, 200)
    assert plastic < 0.5 * untrained
    assert plastic < rnn


def test_memory_grows_as_n_squared():
    a, b = autograd_bytes(16, SMALL), autograd_bytes(32, SMALL)
    assert 3.3 < b / a < 4.3


def test_neuron_plasticity_memory_is_linear_in_n_beyond_the_weights():
    task = PatternTask(n=400, k=5)
    small, large = (autograd_bytes(n, task, alpha="neuron") for n in (200, 400))
    weights = 4 * 400 * 400
    assert large < 0.1 * autograd_bytes(400, task, alpha="connection")  # no (N, N) trace per step
    assert large - weights < 2.2 * (small - 4 * 200 * 200)


def test_bench_runs_at_tiny_size():
    out = run_plasticity_bench(
        PlasticityBenchConfig(n=12, k=2, episodes=40, seeds=1, eval_episodes=20, memory_sizes=(8, 16))
    )
    for key in ("bit_error_plastic", "bit_error_rnn", "episodes", "seconds", "peak_memory_bytes"):
        assert key in out


def test_neuron_plasticity_learns_the_task():
    cfg = PlasticityBenchConfig(n=16, k=2, alpha="neuron", lr=3e-3)  # mean-zero alpha: recall is learned
    kw = dict(task=SMALL, episodes=800, batch=5, lr=cfg.lr, eta=0.01, seed=0)  # ~6% vs ~24% (seeds 0-3)
    untrained = evaluate(cfg.make_net(True), SMALL, 200)
    plastic = evaluate(train_pattern_net(True, net=cfg.make_net(True), **kw), SMALL, 200)
    rnn = evaluate(train_pattern_net(False, net=cfg.make_net(False), **kw), SMALL, 200)
    assert plastic < 0.5 * untrained
    assert plastic < rnn


def test_bench_cli_takes_bits_and_patterns(capsys):
    from eqagent.apps.cli import main

    argv = "bench plasticity --bits 12 --patterns 2 --episodes 20 --seeds 1 --eval-episodes 10 --curve-every 10 --json"
    assert main(argv.split()) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["bits"] == 12 and out["patterns"] == 2 and out["alpha"] == "neuron"
    assert [e for e, _ in out["curve_plastic_per_seed"][0]] == [10, 20]
    assert out["memory_per_episode_bytes"] > 0 and out["memory_per_episode_bytes_rnn"] > 0


def test_bad_arguments():
    with pytest.raises(ValueError, match="eta"):
        PlasticRNN(4, eta=1.5)
    with pytest.raises(ValueError, match=r"\(T, B, 4\)"):
        PlasticRNN(4)(torch.zeros(3, 4))
    assert float(bit_error(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 1.0]))) == 0.5
    with pytest.raises(ValueError, match="alpha"):
        PlasticRNN(4, alpha="synapse")
    with pytest.raises(ValueError, match="alpha"):
        PlasticityBenchConfig(alpha="all")
    with pytest.raises(ValueError, match="lr"):
        PlasticityBenchConfig(lr=float("nan"))
    with pytest.raises(ValueError, match="n must be"):
        PlasticityBenchConfig(n=1)
