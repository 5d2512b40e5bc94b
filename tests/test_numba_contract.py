"""The Numba backend against the kernel contract (``_backends/state.py``) and its specification
(``_backends/reference.py``): loss_grad and hessp with per-run L2 strengths, per-run weight
columns, row subsets, inactive runs and denominators; thread-count independence; the compiled
step rules against the Python registry; and the compiled fit loops against hand-written loops."""

from __future__ import annotations

import copy

import numpy as np
import pytest

pytest.importorskip("numba")

from gradstep._backends import numba as nb
from gradstep._backends import numba_rules
from gradstep._backends import reference as ref
from gradstep._backends.state import (
    H_DISTANCE,
    H_GRAD_NORM,
    H_LOSS,
    H_LR,
    H_PASSES,
    H_STEP_NORM,
    MAX_ITER,
    RUNNING,
    FitState,
    RunSpec,
)

RTOL = 1e-12
NO_ROWS = np.empty(0, dtype=np.int64)


def _problem(n, d, K, ks, dtype=np.float64, seed=0):
    """X (n, d), Y (n, K), SW (n, Ks) with exact zeros (cross-validation folds), P (K, D)."""
    rng = np.random.default_rng(seed)
    X = np.ascontiguousarray(rng.standard_normal((n, d)), dtype=dtype)
    Y = (rng.random((n, K)) < 0.5).astype(np.float64)
    ncol = {"0": 0, "1": 1, "K": K}[ks]
    SW = rng.uniform(0.2, 2.0, (n, ncol))
    SW[rng.random((n, ncol)) < 0.2] = 0.0
    P = 0.3 * rng.standard_normal((K, d + 1))
    return X, Y, SW, P


def _alpha(K):
    """Per-run L2 strengths, with zeros (no penalty computed) among them."""
    return np.array([0.0, 0.1, 0.0, 2.5, 1e-3][:K])


def _close(actual, desired):
    """Agreement to RTOL relative to the largest entry (sums that cancel are compared at the
    scale of their terms)."""
    scale = max(np.max(np.abs(desired)), 1e-300)
    np.testing.assert_allclose(actual, desired, rtol=RTOL, atol=RTOL * scale)


# ---- loss_grad and hessp against the NumPy specification ---------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("K", [1, 3, 5])
@pytest.mark.parametrize("ks", ["0", "1", "K"])
@pytest.mark.parametrize("case", ["all", "rows", "inactive", "denominator"])
def test_loss_grad_matches_reference(dtype, K, ks, case):
    n, d = 301, 7
    X, Y, SW, P = _problem(n, d, K, ks, dtype)
    rng = np.random.default_rng(1)
    alpha = _alpha(K)
    rows, active, den = NO_ROWS, np.ones(K, np.uint8), None
    if case == "rows":
        rows = rng.permutation(n)[:97].astype(np.int64)
    elif case == "inactive":
        active[::2] = 0
    elif case == "denominator":
        rows = rng.permutation(n)[:64].astype(np.int64)
        den = rng.uniform(10.0, 100.0, K)
        den[K // 2] = 0.0  # a divisor of 0: that run comes back as zeros
    got = nb.loss_grad(X, Y, SW, P, alpha, rows, active, denominator=den)
    want = ref.loss_grad(X, Y, SW, P, alpha, rows, active, denominator=den)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == np.float64
        _close(g, w)
    skipped = active == 0
    if den is not None:
        skipped |= den == 0.0
    assert np.all(got[0][skipped] == 0.0) and np.all(got[1][skipped] == 0.0)
    if case != "all" and K > 1:
        assert np.any(~skipped)


def test_loss_grad_single_target_column_and_empty_denominator():
    X, Y, SW, P = _problem(200, 4, 3, "K")
    alpha, active = _alpha(3), np.ones(3, np.uint8)
    got = nb.loss_grad(X, Y[:, :1], SW, P, alpha, NO_ROWS, active, denominator=np.empty(0))
    want = ref.loss_grad(X, Y[:, :1], SW, P, alpha, NO_ROWS, active)
    for g, w in zip(got, want):
        _close(g, w)


def test_run_whose_weights_are_zero_over_the_rows_comes_back_as_zeros():
    X, Y, SW, P = _problem(100, 3, 3, "K")
    SW[:50, 1] = 0.0  # run 1 has no weight on the first 50 rows: no loss, no penalty
    rows = np.arange(50, dtype=np.int64)
    loss, grad = nb.loss_grad(X, Y, SW, P, np.full(3, 0.5), rows, np.ones(3, np.uint8))
    assert loss[1] == 0.0 and np.all(grad[1] == 0.0)
    assert loss[0] != 0.0 and loss[2] != 0.0


def test_weight_layouts_give_the_same_bits():
    """Unit weights as no column or a column of ones; a shared column or the same column per
    run: the same sums in the same order."""
    X, Y, SW, P = _problem(3000, 6, 3, "1")
    alpha, active = _alpha(3), np.ones(3, np.uint8)
    pairs = [(np.empty((3000, 0)), np.ones((3000, 1))), (SW, np.repeat(SW, 3, axis=1))]
    for a, b in pairs:
        for got, want in zip(nb.loss_grad(X, Y, a, P, alpha, NO_ROWS, active),
                             nb.loss_grad(X, Y, b, P, alpha, NO_ROWS, active)):
            np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(nb.hessp(X, a, P, P[::-1].copy(), alpha, active),
                                      nb.hessp(X, b, P, P[::-1].copy(), alpha, active))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("K", [1, 3, 5])
@pytest.mark.parametrize("ks", ["0", "1", "K"])
def test_hessp_matches_reference(dtype, K, ks):
    X, _, SW, P = _problem(301, 7, K, ks, dtype)
    V = np.random.default_rng(2).standard_normal(P.shape)
    alpha = _alpha(K)
    for active in (np.ones(K, np.uint8), (np.arange(K) % 2).astype(np.uint8)):
        got = nb.hessp(X, SW, P, V, alpha, active)
        want = ref.hessp(X, SW, P, V, alpha, active)
        assert got.shape == P.shape
        _close(got, want)
        assert np.all(got[active == 0] == 0.0)


@pytest.mark.parametrize("ks", ["0", "1", "K"])
def test_hessp_is_the_derivative_of_the_gradient(ks):
    """H v = (g(p + h v) - g(p - h v)) / 2h, g from the NumPy specification."""
    K = 3
    X, Y, SW, P = _problem(400, 5, K, ks)
    V = np.random.default_rng(3).standard_normal(P.shape)
    alpha, active, h = _alpha(K), np.ones(K, np.uint8), 1e-5
    _, g_plus = ref.loss_grad(X, Y, SW, P + h * V, alpha, NO_ROWS, active)
    _, g_minus = ref.loss_grad(X, Y, SW, P - h * V, alpha, NO_ROWS, active)
    fd = (g_plus - g_minus) / (2 * h)
    hv = nb.hessp(X, SW, P, V, alpha, active)
    np.testing.assert_allclose(hv, fd, rtol=1e-7, atol=1e-8 * np.max(np.abs(fd)))


def test_bad_shapes_are_refused():
    X, Y, SW, P = _problem(50, 3, 3, "K")
    alpha, active = _alpha(3), np.ones(3, np.uint8)
    with pytest.raises(ValueError, match="SW"):
        nb.loss_grad(X, Y, SW[:, :2], P, alpha, NO_ROWS, active)
    with pytest.raises(ValueError, match="alpha"):
        nb.loss_grad(X, Y, SW, P, alpha[:2], NO_ROWS, active)
    with pytest.raises(ValueError, match="denominator"):
        nb.loss_grad(X, Y, SW, P, alpha, NO_ROWS, active, denominator=np.ones(2))
    with pytest.raises(ValueError, match="V"):
        nb.hessp(X, SW, P, P[:, :-1], alpha, active)


# ---- the same bits with any number of threads --------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("ks", ["0", "1", "K"])
def test_bits_do_not_depend_on_the_thread_count(dtype, ks):
    if nb.numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba has one thread here")
    K = 3
    X, Y, SW, P = _problem(20_000, 20, K, ks, dtype)
    V = np.random.default_rng(4).standard_normal(P.shape)
    alpha, active = _alpha(K), np.ones(K, np.uint8)
    rows = np.random.default_rng(5).permutation(20_000)[:15_000].astype(np.int64)
    for r in (NO_ROWS, rows):
        one = nb.loss_grad(X, Y, SW, P, alpha, r, active, n_threads=1)
        two = nb.loss_grad(X, Y, SW, P, alpha, r, active, n_threads=2)
        for a, b in zip(one, two):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(nb.hessp(X, SW, P, V, alpha, active, n_threads=1),
                                  nb.hessp(X, SW, P, V, alpha, active, n_threads=2))


# ---- the step rules -----------------------------------------------------------------------


def _rule(name):
    from gradstep import rules

    params = {"momentum": {"mu": 0.7}, "nesterov": {"mu": 0.7}, "rmsprop": {"rho": 0.8},
              "adadelta": {"rho": 0.8}, "adam": {"beta1": 0.8, "beta2": 0.95}}
    return rules.make_rule(name, 0.3, rules.Constant(), params.get(name, {}))


def test_rule_codes_are_the_registry_codes():
    from gradstep.rules import compiled_codes

    assert numba_rules.RULE_CODES == compiled_codes()
    assert nb.RULE_CODES is numba_rules.RULE_CODES


@pytest.mark.parametrize("name", sorted(numba_rules.RULE_CODES))
def test_each_compiled_step_is_the_rules_update(name):
    """_step dispatches the code to _step_<name>, which gives the bits of the rule's NumPy
    update (same operations, same order) over three steps."""
    from gradstep.rules import encode_runs

    rule = _rule(name)
    code, _, hyper = encode_runs([rule])
    assert code[0] == numba_rules.RULE_CODES[name]
    own = getattr(numba_rules, f"_step_{name}")
    rng = np.random.default_rng(6)
    p0, slots0 = rng.standard_normal(5), np.abs(rng.standard_normal((2, 5)))
    runs = [(p0.copy(), slots0.copy()) for _ in range(3)]
    for t in (1, 2, 3):
        g = rng.standard_normal(5)
        (p1, s1), (p2, s2), (p3, s3) = runs
        numba_rules._step(code[0], hyper[0], 0.3, t, g, p1, s1)
        own(hyper[0], 0.3, t, g, p2, s2)
        rule.update(p3, g, s3, 0.3, t)
    for p, s in runs[:2]:
        np.testing.assert_array_equal(p, runs[2][0])
        np.testing.assert_array_equal(s, runs[2][1])


def test_unknown_rule_code_is_refused_before_any_step():
    X, Y, SW, P = _problem(50, 3, 2, "0")
    spec, state = _start(X, Y, SW, P, np.zeros(2), rule_code=[0, 99], lr=[0.1, 0.1])
    before = copy.deepcopy(state)
    with pytest.raises(ValueError, match="99"):
        nb.run(X, Y, SW, spec, state, 2)
    np.testing.assert_array_equal(state.P, before.P)


# ---- the compiled fit loops against hand-written loops ------------------------------------


def _start(X, Y, SW, P, alpha, rule_code, lr, batch_size=0, max_iter=2):
    """RunSpec and FitState at P as driver.init_state leaves them (history entry 0)."""
    K, D = P.shape
    hyper = np.zeros((K, 5))
    hyper[:, 0] = lr
    spec = RunSpec(rule_code=np.asarray(rule_code, np.int64), sched_code=np.zeros(K, np.int64),
                   hyper=hyper, alpha=np.asarray(alpha, np.float64), fit_intercept=True, tol=0.0,
                   batch_size=batch_size, seed=11, max_iter=max_iter, total_updates=max_iter,
                   record_history=True, has_reference=True)
    state = FitState.empty(K, D, max_iter + 1)
    state.P[:] = P
    state.reference[:] = 0.25
    loss, grad = nb.loss_grad(X, Y, SW, P, spec.alpha, NO_ROWS, np.ones(K, np.uint8))
    state.loss[:], state.grad[:] = loss, grad
    state.history[H_LOSS, :, 0] = loss
    state.history[H_GRAD_NORM, :, 0] = np.linalg.norm(grad, axis=1)
    return spec, state


@pytest.mark.parametrize("ks", ["0", "1", "K"])
def test_two_sgd_steps_with_per_run_alpha_are_the_hand_loop(ks):
    K = 3
    X, Y, SW, P = _problem(500, 4, K, ks)
    alpha, lr = np.array([0.0, 0.3, 1.5]), np.array([0.5, 0.2, 0.1])
    spec, state = _start(X, Y, SW, P, alpha, np.zeros(K), lr)
    nb.run(X, Y, SW, spec, state, 5, n_threads=1)  # max_iter = 2 stops it after two

    p = P.copy()  # the hand loop, on the specification
    _, g = ref.loss_grad(X, Y, SW, p, alpha, NO_ROWS, np.ones(K, np.uint8))
    for it in (1, 2):
        p_old = p.copy()
        p = p - lr[:, None] * g
        loss, g = ref.loss_grad(X, Y, SW, p, alpha, NO_ROWS, np.ones(K, np.uint8))
        _close(state.history[H_LOSS, :, it], loss)
        _close(state.history[H_GRAD_NORM, :, it], np.linalg.norm(g, axis=1))
        _close(state.history[H_STEP_NORM, :, it], np.linalg.norm(p - p_old, axis=1))
        np.testing.assert_array_equal(state.history[H_LR, :, it], lr)
        _close(state.history[H_DISTANCE, :, it], np.linalg.norm(p - 0.25, axis=1))
    _close(state.P, p)
    _close(state.loss, loss)
    _close(state.grad, g)
    assert list(state.status) == [MAX_ITER] * K and list(state.n_iter) == [2] * K
    assert list(state.t) == [2] * K
    assert np.all(np.isnan(state.history[H_PASSES]))  # the Python layer's row

    # the same loop on the numba kernel gives the same bits as the compiled driver
    p = P.copy()
    _, g = nb.loss_grad(X, Y, SW, p, alpha, NO_ROWS, np.ones(K, np.uint8))
    for _ in (1, 2):
        p = p - lr[:, None] * g
        loss, g = nb.loss_grad(X, Y, SW, p, alpha, NO_ROWS, np.ones(K, np.uint8))
    np.testing.assert_array_equal(state.P, p)
    np.testing.assert_array_equal(state.grad, g)


@pytest.mark.parametrize("ks", ["0", "1", "K"])
@pytest.mark.parametrize("batch", [64, 2])
def test_minibatch_epoch_divides_by_each_runs_expected_weight(ks, batch):
    """One epoch of mini-batch SGD: batch b of run k is divided by |b| * mean of run k's
    weights (the contract's denominator), in the shared shuffle order. With batch 2 some
    batches weigh 0 for a run (20% zero weights): their gradient is the L2 term alone."""
    from gradstep._backends.state import shuffle_order

    K, n = 3, 300
    X, Y, SW, P = _problem(n, 4, K, ks)
    alpha, lr = np.array([0.0, 0.3, 1.5]), np.array([0.5, 0.2, 0.1])
    spec, state = _start(X, Y, SW, P, alpha, np.zeros(K), lr, batch_size=batch, max_iter=3)
    nb.run(X, Y, SW, spec, state, 1, n_threads=1)

    mean = np.broadcast_to(SW.mean(axis=0) if SW.shape[1] else 1.0, (K,))  # as the oracle's
    order = shuffle_order(n, spec.seed, 0)
    all_runs = np.ones(K, np.uint8)
    for kernel, check in ((nb, np.testing.assert_array_equal), (ref, _close)):
        p, loss_sum = P.copy(), np.zeros(K)
        for lo in range(0, n, batch):
            rows = order[lo:lo + batch]
            loss, g = kernel.loss_grad(X, Y, SW, p, alpha, rows, all_runs,
                                       denominator=rows.size * mean)
            loss_sum += rows.size * loss
            p = p - lr[:, None] * g
        check(state.P, p)
        check(state.history[H_LOSS, :, 1], loss_sum / n)
    assert list(state.status) == [RUNNING] * K and list(state.t) == [-(-n // batch)] * K
    assert state.epoch[0] == 1
