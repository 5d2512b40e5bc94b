"""The driver's batched lbfgs (rules.curvature.LBFGSRuns): the rows' two-loop recursion over
rings of pairs equals the single-run one, and a fit through the batch follows LBFGS.iterate
(the single-run specification) iterate for iterate and pass for pass, whatever the other runs
do."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest

import gradstep as gs
from conftest import make_data, oracle_loss_grad
from gradstep import driver
from gradstep.rules import curvature
from gradstep.rules.curvature import (
    LBFGS,
    WOLFE_C1,
    WOLFE_C2,
    Grad,
    LBFGSRuns,
    Stall,
    Step,
    _accept_rows,
    _accept_rows_numpy,
    _Pairs,
    _two_loop,
    _two_loop_rows,
    _two_loop_rows_numpy,
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


# the compiled recursion (where the core is built) and the NumPy one it must agree with
TWO_LOOPS = [_two_loop_rows, _two_loop_rows_numpy]


@pytest.mark.parametrize("two_loop_rows", TWO_LOOPS)
def test_rows_two_loop_equals_the_two_loop_recursion(two_loop_rows):
    rng = np.random.default_rng(0)
    D, m = 9, 5
    counts = [0, 1, 2, 5, 8, 13]  # empty, partial and full memories in one batch
    batch, kept = _memories(rng, counts, D, m)
    assert batch.n_pairs.tolist() == [min(c, m) for c in counts]
    G = rng.standard_normal((len(counts), D))
    got = two_loop_rows(G, batch.memory, batch._order(batch.head), batch.rho, batch.gamma,
                        batch.n_pairs)
    for i in range(len(counts)):
        want = _two_loop(G[i], kept[i])
        np.testing.assert_allclose(got[i], want, rtol=1e-12, atol=1e-12 * np.abs(want).max())
    assert not np.array_equal(got[3], G[3])  # the memory was used


def test_one_runs_ring_equals_the_two_loop_recursion():
    """LBFGS.iterate keeps its pairs in a _Pairs ring: after fewer, exactly m and more than m
    pairs (the oldest dropped), after a pair computed into the free slot and not kept, and after
    a clear, H g is the textbook recursion's."""
    rng = np.random.default_rng(3)
    D, m = 7, 4
    A = rng.standard_normal((D, D))
    H = A @ A.T + 0.1 * np.eye(D)
    ring, kept = _Pairs(m, D), deque(maxlen=m)
    g = rng.standard_normal(D)
    np.testing.assert_array_equal(ring.apply(g), g)  # no pairs: g itself
    for count in range(1, 11):
        s, y = ring.free()
        s[:] = rng.standard_normal(D)
        if count == 8:  # a rejected pair (never kept) leaves the memory as it was
            y[:] = -s
            want = _two_loop(g, kept)
            np.testing.assert_allclose(ring.apply(g), want, rtol=1e-12,
                                       atol=1e-12 * np.abs(want).max())
        y[:] = H @ s
        ring.keep(float(s @ y), float(y @ y))
        kept.append((s.copy(), y.copy(), 1.0 / (s @ y), y @ y))
        want = _two_loop(g, kept)
        np.testing.assert_allclose(ring.apply(g), want, rtol=1e-12,
                                   atol=1e-12 * np.abs(want).max())
        if count == 6:
            ring.clear()
            kept.clear()
            assert not ring
            np.testing.assert_array_equal(ring.apply(g), g)


@pytest.mark.parametrize("two_loop_rows", TWO_LOOPS)
def test_rings_out_of_step_give_the_same_directions(two_loop_rows):
    """Rows whose rings are at different slots (pairs skipped or memories cleared) take the
    gathering path; each row still equals its own two-loop recursion."""
    rng = np.random.default_rng(1)
    batch, kept = _memories(rng, [3, 7, 12], D=6, m=4)
    assert len(set(batch.head.tolist())) > 1
    G = rng.standard_normal((3, 6))
    got = two_loop_rows(G, batch.memory, batch._order(batch.head), batch.rho, batch.gamma,
                        batch.n_pairs)
    for i in range(3):
        np.testing.assert_allclose(got[i], _two_loop(G[i], kept[i]), rtol=1e-12, atol=1e-13)


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
    k = driver.MIN_BATCH  # this many runs of one rule run batched
    res = gs.fit(X, y, [rule] * k, alpha=[alpha] * k, tol=1e-300, max_iter=n_iter,
                 backend="numpy")
    assert (res.n_iter == n_iter).all()
    for run in range(k):
        np.testing.assert_array_equal(res.history.passes[run, 1:], passes)
        # the step lengths are interpolated in the searches: rounding grows there
        np.testing.assert_allclose(res.history.lr[run, 1:], steps, rtol=1e-6)
        np.testing.assert_allclose(res.coef[run], points[-1][:-1], rtol=1e-9, atol=1e-12)
        assert res.intercept[run] == pytest.approx(points[-1][-1], rel=1e-9, abs=1e-12)
    if lr == 8.0:
        assert passes[-1] > n_iter + 1 + n_iter // 2  # the line searches did shrink


# the share of a batch's rows starting an iteration from which requests() runs the two-loop
# recursion over every row: 0 always, 2 never (the rows' memories gathered first)
@pytest.mark.parametrize("recurse_all_share", [0.0, 2.0])
def test_batched_runs_equal_separate_runs_while_others_stop(backend, recurse_all_share,
                                                           monkeypatch):
    """Runs of different alphas and lrs in one call (two LBFGSRuns), some stopping early by
    convergence or by the monitor: each is the same run batched alone (the other runs, their
    stops and searches, change nothing), and reaches a single fit's minimizer."""
    monkeypatch.setattr(curvature, "RECURSE_ALL_SHARE", recurse_all_share)
    # this X is small enough for the C++ backend to run the runs one after another
    # (driver.SplitDriver): keep them in LBFGSRuns, the subject here
    monkeypatch.setattr(driver, "_split", lambda *args: False)
    X, y = make_data(n=300, d=5, seed=4)
    alphas = [1e-1, 1e-4, 1e-2, 1e-3, 1e-3, 1e-1, 3e-4, 1e-2]
    rules = [LBFGS()] * 4 + [LBFGS(lr=4.0)] * 4
    assert driver.MIN_BATCH <= 4
    kw = dict(tol=1e-8, max_iter=60, backend=backend)
    stop_at = {1: 5, 6: 3}  # runs stopped by the monitor after that many iterations

    def monitor(progress):
        return [not (k in stop_at and progress.iteration[k] >= stop_at[k])
                for k in range(len(rules))]

    together = gs.fit(X, y, rules, alpha=alphas, monitor=monitor, **kw)
    k_min = driver.MIN_BATCH
    for k in range(len(rules)):
        # the same run alone in a batch (MIN_BATCH copies of it): the same iterations and
        # passes; the weights to rounding, which the line searches' interpolation amplifies
        # where the rings of a batch are out of step (a gather instead of a view: sums in
        # another order)
        alone = gs.fit(X, y, [rules[k]] * k_min, alpha=[alphas[k]] * k_min,
                       **(dict(kw, max_iter=stop_at[k]) if k in stop_at else kw))
        assert together.n_iter[k] == alone.n_iter[0]
        np.testing.assert_allclose(together.coef[k], alone.coef[0], rtol=1e-6, atol=1e-9)
        n = alone.n_iter[0] + 1
        np.testing.assert_array_equal(together.history.passes[k, :n], alone.history.passes[0])
        assert together.status[k] == alone.status[0] or k in stop_at
        # and a single fit (LBFGS.iterate): the same minimizer, to tol
        single = gs.fit(X, y, rules[k], alpha=alphas[k], **kw)
        if k not in stop_at:
            np.testing.assert_allclose(together.coef[k], single.coef, atol=1e-6)
    assert together.status[1] == "stopped"
    assert together.status[0] == "converged"


def test_compiled_two_loop_refuses_slots_outside_the_ring():
    core = pytest.importorskip("gradstep._core")
    g, memory = np.zeros((2, 3)), np.zeros((2, 4, 3))
    rho, gamma = np.zeros((2, 2)), np.ones(2)
    with pytest.raises(ValueError, match="order's slots"):
        core.two_loop_rows(g, memory, np.array([[0, 1], [1, 2]]), rho, gamma, 0)
    with pytest.raises(ValueError, match="memory must have shape"):
        core.two_loop_rows(g, np.zeros((2, 3, 3)), np.zeros((2, 1), np.int64), rho, gamma, 0)


def test_compiled_first_trial_test_equals_the_numpy_one():
    """gradstep._core.accept_rows decides as _accept_rows_numpy on trials of every kind: plain
    accepts, each condition failing, the rounding fallback (f above f0 by less than 1e-10
    relative), NaN and infinite losses."""
    core = pytest.importorskip("gradstep._core")
    rng = np.random.default_rng(5)
    r, D = 400, 7
    G, d = rng.standard_normal((r, D)), rng.standard_normal((r, D))
    s = np.einsum("ij,ij->i", G, d)
    slope0 = -np.abs(rng.standard_normal(r)) - 0.1
    slope0[:100] = -np.abs(s[:100]) / rng.uniform(0.5, 1.5, 100)  # |s| on both sides of c2
    f0, t0 = rng.uniform(-1.0, 1.0, r), rng.uniform(0.1, 2.0, r)
    f = f0 + t0 * slope0 * rng.uniform(-0.5, 1.0, r)  # decrease met, or not
    f[100:150] = f0[100:150] * (1.0 + np.sign(f0[100:150]) * 1e-12)  # only the fallback's
    f[150], f[151], f[152] = np.nan, np.inf, -np.inf
    want = _accept_rows_numpy(f, G, d, f0, t0, slope0)
    got = core.accept_rows(f, G, d, f0, t0, slope0, WOLFE_C1, WOLFE_C2)
    # s near the c2 boundary could round either way: no row here is within 1e-12 of it
    assert np.abs(np.abs(s) + 0.9 * slope0).min() > 1e-12
    np.testing.assert_array_equal(got, want)
    assert 0 < want.sum() < r and want[100:150].any() and not want[150:153].any()
    np.testing.assert_array_equal(_accept_rows(f, G, d, f0, t0, slope0), want)
    with pytest.raises(ValueError, match="f0"):
        core.accept_rows(f, G, d, f0[:-1], t0, slope0, WOLFE_C1, WOLFE_C2)


def test_compiled_pair_push_equals_the_numpy_finish(monkeypatch):
    """LBFGSRuns._finish through gradstep._core.push_pairs_rows leaves the same rings, heads,
    rho, gamma, counts and points as its NumPy code, over rounds of whole and partial steps with
    pairs kept and rejected (s'y <= 0) and rings wrapping around."""
    core = pytest.importorskip("gradstep._core")
    rng = np.random.default_rng(6)
    r, D, m = 6, 5, 3
    start = (rng.standard_normal((r, D)), rng.standard_normal(r), rng.standard_normal((r, D)))
    compiled = LBFGSRuns(LBFGS(m=m), range(r), *start)
    spec = LBFGSRuns(LBFGS(m=m), range(r), *start)
    from gradstep.rules import curvature
    for step in range(12):
        rows = np.arange(r) if step % 3 == 0 else np.sort(rng.choice(r, 3, replace=False))
        S = rng.standard_normal((rows.size, D))
        Y = S @ np.diag(rng.uniform(0.5, 2.0, D))  # positive curvature ...
        Y[rng.random(rows.size) < 0.3] *= -1.0  # ... or not: the pair is dropped
        f = rng.standard_normal(rows.size)
        for batch, name in ((compiled, "push_pairs_rows"), (spec, None)):
            with monkeypatch.context() as mp:
                if name is None:
                    mp.setattr(curvature, "_compiled", lambda _: None)
                batch._finish(rows, batch.p[rows] + S, f, batch.g[rows] + Y, np.ones(rows.size),
                              whole=rows.size == r)
        for name in ("head", "n_pairs"):
            np.testing.assert_array_equal(getattr(compiled, name), getattr(spec, name))
        for name in ("memory", "rho", "gamma", "p", "g", "loss"):
            np.testing.assert_allclose(getattr(compiled, name), getattr(spec, name),
                                       rtol=1e-14, atol=0)
    assert spec.n_pairs.min() > 0 and (spec.head != 0).any()
    with pytest.raises(ValueError, match="distinct"):
        core.push_pairs_rows(np.array([1, 1]), np.zeros((2, D)), np.zeros((2, D)), compiled.p,
                             compiled.g, compiled.memory, compiled.head, compiled.rho,
                             compiled.gamma, compiled.n_pairs, 1e-16)
