"""The compiled core against the kernel contract of state.py, through gradstep._backends.cpp.

loss_grad and hessp are compared with reference.py (the specification) for both dtypes of X, 1, 3
and 5 runs, the three weight layouts (Ks = 0, 1, K), per-run alpha with zeros, row subsets,
inactive runs and explicit denominators, on every kernel this CPU can run; hessp also against a
central difference of the reference gradient. The drivers are checked against hand loops of the
reference formulas. Every result must have the same bits for any number of threads.
"""

from __future__ import annotations

import numpy as np
import pytest

core = pytest.importorskip("gradstep._core", reason="the compiled core is not built")

from gradstep._backends import cpp, reference  # noqa: E402 (after the skip)
from gradstep._backends.state import (  # noqa: E402
    H_DISTANCE,
    H_GRAD_NORM,
    H_LOSS,
    H_LR,
    H_PASSES,
    H_STEP_NORM,
    N_HISTORY,
    RUNNING,
    FitState,
    RunSpec,
    shuffle_order,
)

KERNELS = core.kernels()
N_HYPER = 5  # rules.N_HYPER: lr, schedule param, a, b, eps
NO_ROWS = np.empty(0, dtype=np.int64)


@pytest.fixture(params=KERNELS)
def kernel(request):
    before = core.set_kernel(request.param)
    yield request.param
    core.set_kernel(before)


def assert_close(got, want, rtol=1e-12):
    """Elementwise to rtol, with an absolute floor of rtol * 1e-2 of the array's largest value
    (a component that cancels to near 0 keeps only the absolute accuracy of its terms)."""
    got, want = np.asarray(got), np.asarray(want)
    scale = max(float(np.max(np.abs(want), initial=0.0)), 1e-300)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * 1e-2 * scale)


def weights(rng, n, n_runs, ks):
    """SW (n, Ks) for Ks in {"0", "1", "K"}; per-run columns look like cross-validation folds."""
    if ks == "0":
        return np.empty((n, 0))
    if ks == "1":
        return rng.random((n, 1)) + 0.5
    SW = rng.random((n, n_runs)) + 0.5
    for k in range(n_runs):  # run k leaves out every (k + 2)-th row, as a fold would
        SW[k :: k + 2, k] = 0.0
    return SW


def problem(rng, dtype, n_runs, ks, n=203, d=13):
    """n and d that are not multiples of the row group (4) or of the vector width (4)."""
    X = rng.standard_normal((n, d)).astype(dtype)
    Y = (rng.random((n, n_runs)) < 0.4).astype(np.float64)
    SW = weights(rng, n, n_runs, ks)
    P = rng.standard_normal((n_runs, d + 1)) * 0.4
    alpha = np.array([0.0, 0.1, 0.0, 1e-3, 2.0][:n_runs])
    return X, Y, SW, P, alpha


def active_runs(n_runs):
    active = np.ones(n_runs, dtype=np.uint8)
    if n_runs > 1:
        active[n_runs // 2] = 0
    return active


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n_runs", [1, 3, 5])
@pytest.mark.parametrize("ks", ["0", "1", "K"])
def test_loss_grad_matches_reference(kernel, dtype, n_runs, ks):
    rng = np.random.default_rng(10 * n_runs + len(ks))
    X, Y, SW, P, alpha = problem(rng, dtype, n_runs, ks)
    active = active_runs(n_runs)
    subset = np.sort(rng.choice(X.shape[0], 61, replace=False)).astype(np.int64)
    shuffled = rng.permutation(X.shape[0])[:97].astype(np.int64)
    for Yk in (Y, np.ascontiguousarray(Y[:, :1])):
        for rows in (NO_ROWS, subset, shuffled):
            got = cpp.loss_grad(X, Yk, SW, P, alpha, rows, active, n_threads=1)
            want = reference.loss_grad(X, Yk, SW, P, alpha, rows, active)
            assert_close(got[0], want[0])
            assert_close(got[1], want[1])
            inactive = active == 0
            assert not got[0][inactive].any() and not got[1][inactive].any()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n_runs", [1, 3, 5])
@pytest.mark.parametrize("ks", ["0", "1", "K"])
def test_loss_grad_denominator(kernel, dtype, n_runs, ks):
    rng = np.random.default_rng(20 + n_runs)
    X, Y, SW, P, alpha = problem(rng, dtype, n_runs, ks)
    active = np.ones(n_runs, dtype=np.uint8)
    rows = rng.permutation(X.shape[0])[:32].astype(np.int64)
    denominator = rng.random(n_runs) * 40.0 + 1.0
    denominator[-1] = 0.0  # a divisor of 0: that run comes back as zeros
    got = cpp.loss_grad(X, Y, SW, P, alpha, rows, active, 1, denominator)
    want = reference.loss_grad(X, Y, SW, P, alpha, rows, active, None, denominator)
    assert_close(got[0], want[0])
    assert_close(got[1], want[1])
    assert got[0][-1] == 0.0 and not got[1][-1].any()
    # an empty denominator is no denominator
    got = cpp.loss_grad(X, Y, SW, P, alpha, rows, active, 1, np.empty(0))
    want = reference.loss_grad(X, Y, SW, P, alpha, rows, active)
    assert_close(got[1], want[1])


def test_run_with_zero_weight_sum_comes_back_as_zeros():
    rng = np.random.default_rng(3)
    X, Y, SW, P, alpha = problem(rng, np.float64, 3, "K")
    SW[:, 1] = 0.0
    active = np.ones(3, dtype=np.uint8)
    loss, G = cpp.loss_grad(X, Y, SW, P, alpha, NO_ROWS, active)
    assert loss[1] == 0.0 and not G[1].any() and G[0].any() and G[2].any()
    HV = cpp.hessp(X, SW, P, P, alpha, active)
    assert not HV[1].any() and HV[0].any()


def test_alpha_is_per_run():
    """Each run gets its own L2 term; a run whose alpha is 0 gets none."""
    rng = np.random.default_rng(4)
    X, Y, SW, P, _ = problem(rng, np.float64, 2, "1")
    alpha = np.array([0.0, 0.5])
    active = np.ones(2, dtype=np.uint8)
    got = cpp.loss_grad(X, Y, SW, P, alpha, NO_ROWS, active)
    want = reference.loss_grad(X, Y, SW, P, alpha, NO_ROWS, active)
    assert_close(got[0], want[0])
    no_pen = reference.loss_grad(X, Y, SW, P, np.zeros(2), NO_ROWS, active)
    assert got[0][0] == pytest.approx(no_pen[0][0], rel=1e-13)
    assert got[0][1] > no_pen[0][1]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n_runs", [1, 3, 5])
@pytest.mark.parametrize("ks", ["0", "1", "K"])
def test_hessp_matches_reference(kernel, dtype, n_runs, ks):
    rng = np.random.default_rng(30 + n_runs + len(ks))
    X, _, SW, P, alpha = problem(rng, dtype, n_runs, ks)
    V = rng.standard_normal(P.shape)
    active = active_runs(n_runs)
    got = cpp.hessp(X, SW, P, V, alpha, active, n_threads=1)
    want = reference.hessp(X, SW, P, V, alpha, active)
    assert_close(got, want)
    assert not got[active == 0].any()


@pytest.mark.parametrize("ks", ["0", "1", "K"])
def test_hessp_matches_finite_difference_of_gradient(ks):
    rng = np.random.default_rng(40)
    X, Y, SW, P, alpha = problem(rng, np.float64, 3, ks)
    V = rng.standard_normal(P.shape)
    active = np.ones(3, dtype=np.uint8)
    h = 1e-5
    g_plus = reference.loss_grad(X, Y, SW, P + h * V, alpha, NO_ROWS, active)[1]
    g_minus = reference.loss_grad(X, Y, SW, P - h * V, alpha, NO_ROWS, active)[1]
    fd = (g_plus - g_minus) / (2 * h)
    got = cpp.hessp(X, SW, P, V, alpha, active)
    np.testing.assert_allclose(got, fd, rtol=1e-6, atol=1e-8 * np.abs(fd).max())


@pytest.mark.parametrize("ks", ["0", "1", "K"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_bits_do_not_depend_on_threads(kernel, ks, dtype):
    rng = np.random.default_rng(50)
    n, d, n_runs = 20_000, 30, 3  # n * (d + 1) * K far above the core's parallel threshold
    X, Y, SW, P, alpha = problem(rng, dtype, n_runs, ks, n=n, d=d)
    V = rng.standard_normal(P.shape)
    active = np.ones(n_runs, dtype=np.uint8)
    rows = rng.permutation(n)[: n // 2].astype(np.int64)
    results = []
    for n_threads in (1, 2, 3):
        results.append((
            *cpp.loss_grad(X, Y, SW, P, alpha, NO_ROWS, active, n_threads),
            *cpp.loss_grad(X, Y, SW, P, alpha, rows, active, n_threads),
            cpp.hessp(X, SW, P, V, alpha, active, n_threads),
        ))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


def test_rule_codes():
    assert core.rule_codes() == {
        "sgd": 0, "momentum": 1, "nesterov": 2, "normalized": 3,
        "adagrad": 4, "rmsprop": 5, "adadelta": 6, "adam": 7,
    }


# ---- the driver ------------------------------------------------------------------------------

def make_spec(n_runs, lr, alpha, batch_size=0, max_iter=10, seed=0):
    hyper = np.zeros((n_runs, N_HYPER))
    hyper[:, 0] = lr
    return RunSpec(
        rule_code=np.zeros(n_runs, dtype=np.int64),  # sgd
        sched_code=np.zeros(n_runs, dtype=np.int64),  # constant
        hyper=hyper, alpha=np.asarray(alpha, dtype=np.float64), fit_intercept=True, tol=0.0,
        batch_size=batch_size, seed=seed, max_iter=max_iter, total_updates=max_iter,
        record_history=True, has_reference=True,
    )


def make_state(X, Y, SW, P0, spec, reference_P):
    """A state as driver.init_state leaves it: history entry 0 at the starting point."""
    n_runs, n_params = P0.shape
    state = FitState.empty(n_runs, n_params, spec.max_iter + 1)
    state.P[:] = P0
    state.reference[:] = reference_P
    active = np.ones(n_runs, dtype=np.uint8)
    loss, grad = reference.loss_grad(X, Y, SW, P0, spec.alpha, NO_ROWS, active)
    state.loss[:], state.grad[:] = loss, grad
    state.history[H_LOSS, :, 0] = loss
    state.history[H_GRAD_NORM, :, 0] = np.linalg.norm(grad, axis=1)
    state.history[H_DISTANCE, :, 0] = np.linalg.norm(P0 - reference_P, axis=1)
    return state


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("ks", ["0", "1", "K"])
def test_run_full_batch_sgd_two_steps_matches_hand_loop(dtype, ks):
    rng = np.random.default_rng(60)
    n_runs = 3
    X, Y, SW, P0, _ = problem(rng, dtype, n_runs, ks, n=57, d=5)
    alpha = np.array([0.0, 0.3, 1.5])  # per run, one of them without penalty
    lr = np.array([0.5, 0.2, 0.1])
    spec = make_spec(n_runs, lr, alpha)
    ref_P = rng.standard_normal(P0.shape)
    state = make_state(X, Y, SW, P0, spec, ref_P)
    cpp.run(X, Y, SW, spec, state, 2, n_threads=1)

    active = np.ones(n_runs, dtype=np.uint8)
    P = P0.copy()
    _, grad = reference.loss_grad(X, Y, SW, P, alpha, NO_ROWS, active)
    for i in (1, 2):
        P_old = P.copy()
        P = P - lr[:, None] * grad
        loss, grad = reference.loss_grad(X, Y, SW, P, alpha, NO_ROWS, active)
        assert_close(state.history[H_LOSS, :, i], loss)
        assert_close(state.history[H_GRAD_NORM, :, i], np.linalg.norm(grad, axis=1))
        assert_close(state.history[H_STEP_NORM, :, i], np.linalg.norm(P - P_old, axis=1))
        assert_close(state.history[H_DISTANCE, :, i], np.linalg.norm(P - ref_P, axis=1))
        np.testing.assert_array_equal(state.history[H_LR, :, i], lr)
    assert_close(state.P, P)
    assert_close(state.grad, grad)
    assert_close(state.loss, loss)
    np.testing.assert_array_equal(state.t, [2, 2, 2])
    np.testing.assert_array_equal(state.n_iter, [2, 2, 2])
    np.testing.assert_array_equal(state.status, [RUNNING] * n_runs)
    assert np.isnan(state.history[H_PASSES]).all()  # the Python layer's row
    assert np.isnan(state.history[:, :, 3:]).all()
    assert state.history.shape[0] == N_HISTORY


@pytest.mark.parametrize("ks", ["0", "1", "K"])
def test_run_minibatch_sgd_epoch_matches_hand_loop(ks):
    """One epoch: each batch's sums for run k are divided by batch rows * mean of run k's
    weights (the batch gradient is unbiased)."""
    rng = np.random.default_rng(70)
    n_runs, n, batch = 3, 61, 8
    X, Y, SW, P0, _ = problem(rng, np.float64, n_runs, ks, n=n, d=4)
    alpha = np.array([0.0, 0.3, 1.5])
    lr = np.array([0.5, 0.2, 0.1])
    spec = make_spec(n_runs, lr, alpha, batch_size=batch, seed=123)
    state = make_state(X, Y, SW, P0, spec, np.zeros_like(P0))
    cpp.run(X, Y, SW, spec, state, 1, n_threads=1)

    mean = SW.mean(axis=0) if SW.shape[1] else np.ones(1)
    mean = np.broadcast_to(mean, (n_runs,))
    active = np.ones(n_runs, dtype=np.uint8)
    P = P0.copy()
    loss_sum = np.zeros(n_runs)
    order = shuffle_order(n, 123, 0)
    for start in range(0, n, batch):
        rows = order[start : start + batch]
        loss, grad = reference.loss_grad(X, Y, SW, P, alpha, rows, active, None,
                                         rows.size * mean)
        loss_sum += rows.size * loss
        P = P - lr[:, None] * grad
    assert_close(state.P, P)
    assert_close(state.loss, loss_sum / n)
    assert_close(state.history[H_LOSS, :, 1], loss_sum / n)
    np.testing.assert_array_equal(state.t, [(n + batch - 1) // batch] * n_runs)
    np.testing.assert_array_equal(state.n_iter, [1] * n_runs)
    assert state.epoch[0] == 1


def test_run_bits_do_not_depend_on_threads():
    rng = np.random.default_rng(80)
    n_runs = 3
    X, Y, SW, P0, _ = problem(rng, np.float64, n_runs, "K", n=20_000, d=30)
    spec = make_spec(n_runs, [0.5, 0.2, 0.1], [0.0, 0.01, 0.1], max_iter=3)
    states = []
    for n_threads in (1, 3):
        state = make_state(X, Y, SW, P0 * 0.1, spec, np.zeros_like(P0))
        cpp.run(X, Y, SW, spec, state, 3, n_threads)
        states.append(state)
    for name in ("P", "grad", "loss", "history"):
        np.testing.assert_array_equal(getattr(states[0], name), getattr(states[1], name))


def test_run_rejects_wrong_attributes():
    rng = np.random.default_rng(90)
    X, Y, SW, P0, _ = problem(rng, np.float64, 2, "1", n=20, d=3)
    spec = make_spec(2, 0.1, [0.0, 0.1])
    state = make_state(X, Y, SW, P0, spec, np.zeros_like(P0))
    spec.rule_code = spec.rule_code.astype(np.int32)
    with pytest.raises(TypeError, match="spec.rule_code"):
        cpp.run(X, Y, SW, spec, state, 1)
    spec.rule_code = np.array([0, 99], dtype=np.int64)
    with pytest.raises(ValueError, match="rule_code"):
        cpp.run(X, Y, SW, spec, state, 1)
    spec.rule_code = np.zeros(2, dtype=np.int64)
    spec.alpha = 0.1
    with pytest.raises(TypeError, match="spec.alpha"):
        cpp.run(X, Y, SW, spec, state, 1)
    spec.alpha = np.zeros(3)
    with pytest.raises(ValueError, match="spec.alpha"):
        cpp.run(X, Y, SW, spec, state, 1)
    spec.alpha = np.zeros(2)
    state.P = np.asfortranarray(np.zeros((3, 2)).T)
    with pytest.raises(TypeError, match="state.P"):
        cpp.run(X, Y, SW, spec, state, 1)
    state.P = np.zeros((2, 4))
    state.grad.flags.writeable = False
    with pytest.raises(ValueError, match="state.grad"):
        cpp.run(X, Y, SW, spec, state, 1)
    state.grad = np.zeros((2, 4))
    cpp.run(X, Y, SW, spec, state, 1)  # now well-formed
    assert state.n_iter.tolist() == [1, 1]


def test_kernels_reject_wrong_shapes():
    rng = np.random.default_rng(91)
    X, Y, SW, P, alpha = problem(rng, np.float64, 2, "K", n=20, d=3)
    active = np.ones(2, dtype=np.uint8)
    with pytest.raises(ValueError, match="SW"):
        cpp.loss_grad(X, Y, np.ones((20, 3)), P, alpha, NO_ROWS, active)
    with pytest.raises(ValueError, match="alpha"):
        cpp.loss_grad(X, Y, SW, P, np.zeros(3), NO_ROWS, active)
    with pytest.raises(ValueError, match="denominator"):
        cpp.loss_grad(X, Y, SW, P, alpha, NO_ROWS, active, 1, np.ones(3))
    with pytest.raises(ValueError, match="V"):
        cpp.hessp(X, SW, P, np.zeros((2, 3)), alpha, active)
    with pytest.raises(TypeError):
        cpp.hessp(X, SW, P, P.astype(np.float32), alpha, active)
