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


def test_bench_runs_at_tiny_size():
    out = run_plasticity_bench(
        PlasticityBenchConfig(n=12, k=2, episodes=40, seeds=1, eval_episodes=20, memory_sizes=(8, 16))
    )
    for key in ("bit_error_plastic", "bit_error_rnn", "episodes", "seconds", "peak_memory_bytes"):
        assert key in out


def test_bad_arguments():
    with pytest.raises(ValueError, match="eta"):
        PlasticRNN(4, eta=1.5)
    with pytest.raises(ValueError, match=r"\(T, B, 4\)"):
        PlasticRNN(4)(torch.zeros(3, 4))
    assert float(bit_error(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 1.0]))) == 0.5
