"""The driver's batched lbfgs (rules.curvature.LBFGSRuns): the compact-form direction equals the
two-loop recursion, R^-1 follows R, and a fit through the batch follows LBFGS.iterate (the
single-run specification) iterate for iterate and pass for pass, whatever the other runs do."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest

import gradstep as gs
from conftest import make_data, oracle_loss_grad
from gradstep.rules.curvature import (
    LBFGS,
    Grad,
    LBFGSRuns,
    Stall,
    Step,
    _compact_direction,
    _two_loop,
)


def _memories(rng, counts, D, m):
    """An LBFGSRuns whose row i holds counts[i] pairs (s, Hs) of a random SPD H (more than m:
    the oldest dropped), and each row's pairs as LBFGS.iterate keeps them."""
    batch = LBFGSRuns(LBFGS(m=m), range(len(counts)), np.zeros((len(counts), D)),
                      np.zeros(len(counts)), np.zeros((len(counts), D)))
    kept = [deque(maxlen=m) for _ in counts]
    for i, count in enumerate(counts):
        A = rng.standard_normal((D, D))
        H = A @ A.T + 0.1 * np.eye(D)
        for _ in range(count):
            s = rng.standard_normal(D)
            y = H @ s
            kept[i].append((s, y, 1.0 / (s @ y), y @ y))
            row = np.array([i])
            batch._finish(row, batch.p[row] + s, np.zeros(1), batch.g[row] + y, np.ones(1))
    return batch, kept


def test_compact_direction_equals_the_two_loop_recursion():
    rng = np.random.default_rng(0)
    D, m = 9, 5
    counts = [0, 1, 2, 5, 8, 13]  # empty, partial and full memories in one batch
    batch, kept = _memories(rng, counts, D, m)
    assert batch.n_pairs.tolist() == [min(c, m) for c in counts]
    G = rng.standard_normal((len(counts), D))
    got = _compact_direction(G, batch.memory, batch._order(batch.head), batch.tri, batch.gamma)
    for i in range(len(counts)):
        want = _two_loop(G[i], kept[i])
        np.testing.assert_allclose(got[i], want, rtol=1e-12, atol=1e-12 * np.abs(want).max())
    assert not np.array_equal(got[3], G[3])  # the memory was used


def test_inverse_of_r_follows_r():
    rng = np.random.default_rng(1)
    batch, _ = _memories(rng, [3, 7, 12], D=6, m=4)
    for i in range(3):
        R, R_inv, YY = batch.tri[i]
        np.testing.assert_array_equal(R, np.triu(R))
        np.testing.assert_allclose(R_inv, np.linalg.inv(R), rtol=1e-10, atol=1e-12)
        order = batch._order(batch.head[i:i + 1])[0]  # the ring's slots, oldest first
        S, Y = batch.memory[i, order], batch.memory[i, 4 + order]
        np.testing.assert_allclose(R, np.triu(S @ Y.T) + np.diag(~S.any(axis=1)), rtol=1e-13)
        np.testing.assert_allclose(YY, Y @ Y.T, rtol=1e-13)


def _drive_spec(rule, X, y, alpha, n_iter):
    """LBFGS.iterate run by hand: the iterates and the passes after each iteration."""
    d = X.shape[1]

    def f(p):
        loss, gw, gb, _ = oracle_loss_grad(X, y, p[:d], p[d], alpha=alpha)
        return loss, np.append(gw, gb)

    p = np.zeros(d + 1)
    loss, g = f(p)
    gen = rule.iterate(p, loss, g)
    points, passes, steps, n_pass = [], [], [], 1
    event = next(gen)
    while len(points) < n_iter:
        if isinstance(event, Grad):
            n_pass += 1
            event = gen.send(f(event.p))
        elif isinstance(event, Step):
            points.append(event.p)
            passes.append(n_pass)
            steps.append(event.t)
            event = next(gen)
        else:
            assert isinstance(event, Stall)
            break
    return np.array(points), np.array(passes), np.array(steps)


@pytest.mark.parametrize("lr", [1.0, 8.0])  # 8: most first trials fail (the searches' path)
def test_batched_fit_follows_the_single_run_generator(lr):
    X, y = make_data(n=400, d=6, seed=3)
    alpha, n_iter = 1e-3, 12
    rule = LBFGS(lr=lr)
    points, passes, steps = _drive_spec(rule, X, y, alpha, n_iter)
    res = gs.fit(X, y, rule, alpha=alpha, tol=1e-300, max_iter=n_iter, backend="numpy")
    assert res.n_iter == n_iter
    np.testing.assert_array_equal(res.history.passes[1:], passes)
    np.testing.assert_allclose(res.history.lr[1:], steps, rtol=1e-6)  # interpolated: rounding grows
    np.testing.assert_allclose(res.coef, points[-1][:-1], rtol=1e-9, atol=1e-12)
    assert res.intercept == pytest.approx(points[-1][-1], rel=1e-9, abs=1e-12)
    if lr == 8.0:
        assert passes[-1] > n_iter + 1 + n_iter // 2  # the line searches did shrink


def test_batched_runs_equal_separate_runs_while_others_stop(backend):
    """Runs of different alphas and lrs in one call (two LBFGSRuns), some stopping early by
    convergence or by the monitor: each equals its own fit."""
    X, y = make_data(n=300, d=5, seed=4)
    alphas = [1e-1, 1e-4, 1e-2, 0.0]
    rules = [LBFGS(), LBFGS(), LBFGS(lr=4.0), LBFGS(lr=4.0)]
    kw = dict(tol=1e-8, max_iter=60, backend=backend)
    stop_at = {1: 5}  # run 1 stopped by the monitor after 5 iterations

    def monitor(progress):
        return [not (k in stop_at and progress.iteration[k] >= stop_at[k]) for k in range(4)]

    together = gs.fit(X, y, rules, alpha=alphas, monitor=monitor, **kw)
    for k in range(4):
        alone = gs.fit(X, y, rules[k], alpha=alphas[k],
                       **(dict(kw, max_iter=stop_at[k]) if k in stop_at else kw))
        assert together.n_iter[k] == alone.n_iter
        np.testing.assert_allclose(together.coef[k], alone.coef, rtol=1e-12, atol=1e-14)
        n = alone.n_iter + 1
        np.testing.assert_array_equal(together.history.passes[k, :n], alone.history.passes)
        np.testing.assert_allclose(together.history.lr[k, 1:n], alone.history.lr[1:],
                                   rtol=1e-12)
        assert together.status[k] == alone.status or k in stop_at
    assert together.status[1] == "stopped"
    assert together.status[0] == "converged"
