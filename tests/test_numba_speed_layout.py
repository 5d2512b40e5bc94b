"""The Numba loss/gradient kernel's fast layout (numba.py: row groups, vectorized dot products and
a vectorized link with its own exp and log1p): many runs (two groups' worth and a remainder),
per-run weights, mini-batch rows, float32 and float64 against the NumPy reference; thread-count
bit-identity; and the link's exp and log1p against the C library over their whole range."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("numba")

from gradstep._backends import numba as nb
from gradstep._backends import reference as ref

TOL = 1e-9


def _problem(n, d, K, dtype, seed=0):
    rng = np.random.default_rng(seed)
    X = np.ascontiguousarray(rng.standard_normal((n, d)), dtype=dtype)
    Y = (rng.random((n, K)) < 0.5).astype(np.float64)
    SW = rng.random((n, K)) * 2.0  # a weight column per run
    SW[rng.random((n, K)) < 0.1] = 0.0
    P = rng.standard_normal((K, d + 1)) * 0.5
    return X, Y, SW, P


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("batch", [False, True])
def test_19_runs_per_run_weights_against_reference(dtype, batch):
    """K = 19: 16 + 3 runs, d = 37 (not a multiple of the vector width), n not a multiple of the
    row group, one run inactive and per-run L2; mini-batch rows given in shuffled order."""
    n, d, K = 1003, 37, 19
    X, Y, SW, P = _problem(n, d, K, dtype)
    rng = np.random.default_rng(1)
    rows = rng.permutation(n)[:517] if batch else np.empty(0, np.int64)
    alpha = rng.random(K) * 0.1
    active = np.ones(K, np.uint8)
    active[7] = 0
    loss, grad = nb.loss_grad(X, Y, SW, P, alpha, rows, active, 1)
    rloss, rgrad = ref.loss_grad(X, Y, SW, P, alpha, rows, active)
    np.testing.assert_allclose(loss, rloss, rtol=TOL, atol=TOL)
    np.testing.assert_allclose(grad, rgrad, rtol=TOL, atol=TOL)
    assert loss[7] == 0.0 and not grad[7].any()


@pytest.mark.parametrize("K", [1, 2, 3, 5, 9])  # 9: the BLAS path (_block_gemm)
def test_few_runs_shared_weights(K):
    """Fewer than 4 runs take bigger row groups: the same answers, shared weights and targets."""
    n, d = 777, 19
    X, Y, SW, P = _problem(n, d, K, np.float32, seed=K)
    Y1 = np.ascontiguousarray(Y[:, :1])
    SW1 = np.ascontiguousarray(SW[:, :1])
    active = np.ones(K, np.uint8)
    alpha = np.zeros(K)
    got = nb.loss_grad(X, Y1, SW1, P, alpha, np.empty(0, np.int64), active, 1)
    want = ref.loss_grad(X, Y1, SW1, P, alpha, np.empty(0, np.int64), active)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=TOL, atol=TOL)


def test_16_runs_bit_identical_for_any_thread_count():
    numba = pytest.importorskip("numba")
    n, d, K = 20_000, 30, 16
    X, Y, SW, P = _problem(n, d, K, np.float64, seed=3)
    active = np.ones(K, np.uint8)
    alpha = np.zeros(K)
    rows = np.empty(0, np.int64)
    one = nb.loss_grad(X, Y, SW, P, alpha, rows, active, 1)
    top = numba.config.NUMBA_NUM_THREADS
    for threads in sorted({2, top}):
        other = nb.loss_grad(X, Y, SW, P, alpha, rows, active, threads)
        assert np.array_equal(one[0], other[0]) and np.array_equal(one[1], other[1])


@pytest.mark.parametrize("K", [nb._GEMM_RUNS - 1, nb._GEMM_RUNS + 1])
def test_a_run_does_not_depend_on_the_other_runs(K):
    """Below _GEMM_RUNS active runs a run's margins, link and gradient are taken per run: its bits
    are the same alone. From _GEMM_RUNS on a block's margins and gradient are BLAS products over
    all runs (_block_gemm): the same sums in another order, so alone it agrees to rounding."""
    n, d = 1001, 23
    X, Y, SW, P = _problem(n, d, K, np.float64, seed=4)
    alpha, rows = np.zeros(K), np.empty(0, np.int64)
    all_loss, all_grad = nb.loss_grad(X, Y, SW, P, alpha, rows, np.ones(K, np.uint8), 1)
    k = 5
    one_loss, one_grad = nb.loss_grad(X, Y[:, k:k + 1], SW[:, k:k + 1], P[k:k + 1], alpha[:1],
                                      rows, np.ones(1, np.uint8), 1)
    if K < nb._GEMM_RUNS:
        assert one_loss[0] == all_loss[k] and np.array_equal(one_grad[0], all_grad[k])
    else:
        assert one_loss[0] == pytest.approx(all_loss[k], rel=1e-13)
        np.testing.assert_allclose(one_grad[0], all_grad[k], rtol=1e-11, atol=1e-15)


def test_link_exp_and_log1p_against_libm():
    """_exp_nonpositive and _log1p_unit (the link's vectorizable exp and log1p) within 2 ulp of
    the C library, subnormal results and special values included."""
    rng = np.random.default_rng(5)
    xs = np.concatenate([-np.abs(rng.standard_normal(2000)) * 10, -rng.random(2000) * 750,
                         [0.0, -0.0, -1e-300, -708.4, -709.0, -744.0, -745.1, -746.0, -800.0]])
    for x in xs:
        got, want = nb._exp_nonpositive(x), math.exp(x)
        assert abs(got - want) <= 2 * math.ulp(want) if want > 0 else got == 0.0, x
    assert nb._exp_nonpositive(-math.inf) == 0.0 and math.isnan(nb._exp_nonpositive(math.nan))
    es = np.concatenate([rng.random(2000), np.exp(-rng.random(2000) * 700),
                         [0.0, 1.0, 5e-324, 0.41421356237309503, 0.4142135623730951]])
    for e in es:
        got, want = nb._log1p_unit(e), math.log1p(e)
        assert abs(got - want) <= 2 * math.ulp(want), e
    assert math.isnan(nb._log1p_unit(math.nan))


def test_link_extremes_and_nan():
    """Huge margins give the exact limits (no overflow, no cancellation); a NaN margin gives NaN."""
    z = np.array([-1000.0, -40.0, 0.0, 40.0, 1000.0, math.nan, 3.5, -3.5])
    n = z.size
    for yv in (0.0, 1.0):
        y = np.full(n, yv)
        lb, rb = np.empty(n), np.empty(n)
        nb._link_many(z, y, np.ones(n), lb, rb, n)
        with np.errstate(invalid="ignore", over="ignore"):
            rl, rr = ref.loss_and_residual(z, y)
        np.testing.assert_allclose(lb, rl, rtol=1e-14, atol=0)
        np.testing.assert_allclose(rb, rr, rtol=1e-14, atol=0)
        assert np.isnan(lb[5]) and np.isnan(rb[5])
