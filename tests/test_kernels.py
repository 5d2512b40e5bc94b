"""The compiled core's kernels (baseline, AVX2+FMA, AVX-512; chosen at run time), their vector link.

Every other test runs the kernel the CPU picks; these run each kernel this CPU can execute, so a
wrong AVX2 path fails on a machine that has AVX2 and a wrong baseline path fails everywhere.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import gradstep as gs

core = pytest.importorskip("gradstep._core", reason="the compiled core is not built")
KERNELS = core.kernels()


@pytest.fixture(params=KERNELS)
def kernel(request):
    before = core.set_kernel(request.param)
    yield request.param
    core.set_kernel(before)


def ulps(a, b):
    """Distance in units in the last place of two float64 arrays of the same sign."""
    a = np.ascontiguousarray(a, dtype=np.float64).view(np.int64)
    b = np.ascontiguousarray(b, dtype=np.float64).view(np.int64)
    return np.abs(a - b)


LONG_DOUBLE_IS_WIDER = np.finfo(np.longdouble).nmant >= 63


@pytest.mark.skipif(not LONG_DOUBLE_IS_WIDER, reason="needs an 80-bit long double as reference")
def test_vector_link_within_two_ulp(kernel):
    rng = np.random.default_rng(0)
    z = np.concatenate([
        np.linspace(-800.0, 800.0, 200_001),  # past exp's underflow (-745) on both sides
        np.geomspace(1e-300, 60.0, 50_000), -np.geomspace(1e-300, 750.0, 50_000),
        rng.standard_normal(100_000) * 10.0,
    ])
    zl = z.astype(np.longdouble)
    e = np.exp(-np.abs(zl))
    want_l = (np.maximum(zl, 0) + np.log1p(e)).astype(np.float64)
    want_s = np.where(zl >= 0, 1 / (1 + e), e / (1 + e)).astype(np.float64)
    got_l, got_s = core.link(z)
    assert ulps(got_l, want_l).max() <= 2
    assert ulps(got_s, want_s).max() <= 2


def test_vector_link_special_values(kernel):
    z = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-300, -1e-300, 745.5, -745.5, 1e308])
    log1pexp, sigmoid = core.link(z)
    np.testing.assert_array_equal(log1pexp[:4], [np.log(2.0), np.log(2.0), np.inf, 0.0])
    np.testing.assert_array_equal(sigmoid[:4], [0.5, 0.5, 1.0, 0.0])
    assert np.isnan(log1pexp[4]) and np.isnan(sigmoid[4])
    np.testing.assert_allclose(log1pexp[5:7], np.log(2.0), rtol=1e-15)
    assert log1pexp[7] == 745.5 and sigmoid[7] == 1.0
    assert 0.0 <= log1pexp[8] < 1e-320 and 0.0 <= sigmoid[8] < 1e-320  # exp(-745.5): subnormal/0
    assert log1pexp[9] == 1e308 and sigmoid[9] == 1.0


def test_vector_link_tail_matches_scalar_path(kernel):
    """The last n % 4 values go through the scalar link; both give the same values to 2 ulp."""
    z = np.linspace(-30.0, 30.0, 4003)
    l_all, s_all = core.link(z)
    for start in range(4):
        l_one, s_one = core.link(np.ascontiguousarray(z[start::4][:3]))
        assert ulps(l_one, l_all[start::4][:3]).max() <= 4
        assert ulps(s_one, s_all[start::4][:3]).max() <= 4


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("K, per_run_weights", [(5, False), (19, False), (19, True), (27, True)])
def test_kernel_agrees_with_numpy_reference(kernel, dtype, K, per_run_weights):
    # sizes that are not multiples of the row group (4) or of the vector width (4); K = 19 takes
    # two chunks of 8 runs (the run-vectorized path) and 3 runs in pairs; the AVX-512 kernel takes
    # K = 27 as a chunk of 16, one of 8 and 3 runs in pairs
    rng = np.random.default_rng(1)
    n, d = 1003, 37
    X = rng.standard_normal((n, d)).astype(dtype)
    Y = (rng.random((n, K)) < 0.4).astype(np.float64)
    W = rng.standard_normal((K, d)) * 0.5
    b = rng.standard_normal(K)
    sw = rng.random((n, K) if per_run_weights else n) + 0.5
    got = gs.loss_and_grad(X, Y, W, b, sample_weight=sw, alpha=0.01, backend="cpp")
    ref = gs.loss_and_grad(X, Y, W, b, sample_weight=sw, alpha=0.01, backend="numpy")
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r, rtol=1e-9, atol=1e-12)


def test_kernel_mini_batch_fit_agrees_with_numpy(kernel):
    rng = np.random.default_rng(2)
    X = rng.standard_normal((517, 13))
    y = (X @ rng.standard_normal(13) + rng.standard_normal(517) > 0).astype(int)
    # 12 runs: a chunk of 8 (run-vectorized) and two pairs, on the gathered rows of each batch
    kw = dict(rule=["adam", "momentum", "sgd"] * 4, lr=0.05, batch_size=32, max_iter=4,
              tol=None, random_state=0)
    got = gs.fit(X, y, backend="cpp", **kw)
    ref = gs.fit(X, y, backend="numpy", **kw)
    np.testing.assert_allclose(got.coef, ref.coef, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got.history.loss, ref.history.loss, rtol=1e-9)


def test_kernel_bits_do_not_depend_on_threads(kernel):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((40_000, 30))
    y = (rng.random(40_000) < 0.5).astype(float)
    for K in (3, 16):
        W = rng.standard_normal((K, 30)) * 0.1
        one = gs.loss_and_grad(X, y, W, np.zeros(K), backend="cpp", n_threads=1)
        many = gs.loss_and_grad(X, y, W, np.zeros(K), backend="cpp", n_threads=3)
        for a, b in zip(one, many):
            np.testing.assert_array_equal(a, b)


def test_set_kernel_rejects_unknown_names():
    with pytest.raises(ValueError, match="'baseline', 'avx2' or 'avx512'"):
        core.set_kernel("sse9")
    assert core.kernel() in KERNELS


def _assert_same_bits_under(select, names, compute):
    """compute() under each of two settings (select(name) returns the one it replaces; the
    setting before is restored): the same arrays to the bit."""
    before = select(names[0])
    try:
        first = compute()
        select(names[1])
        second = compute()
    finally:
        select(before)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


@pytest.mark.skipif("avx512" not in KERNELS, reason="this CPU has no AVX-512 F, VL and DQ")
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("K", [1, 2, 8, 16, 27])
def test_avx512_kernel_gives_the_avx2_bits(dtype, K):
    """Lane = run in the run chunks and the same dot-product lanes elsewhere: the wider kernel is
    the AVX2 kernel's arithmetic, to the bit, for the gradient, the Hessian product and a fit."""
    rng = np.random.default_rng(4)
    n, d = 2_003, 45
    X = rng.standard_normal((n, d)).astype(dtype)
    Y = (rng.random((n, K)) < 0.4).astype(np.float64)
    W = rng.standard_normal((K, d)) * 0.3
    V = rng.standard_normal((K, d))
    sw = rng.random((n, K)) + 0.5

    def compute():
        grads = gs.loss_and_grad(X, Y, W, np.zeros(K), sample_weight=sw, backend="cpp")
        hv = gs.hessp(X, Y, W, np.zeros(K), V, np.ones(K), sample_weight=sw, backend="cpp")
        fitted = gs.fit(X, Y[:, 0], rule=["adam"] * K, lr=0.05, batch_size=64, max_iter=2,
                        tol=None, random_state=0, backend="cpp")
        return (*grads, *hv, fitted.coef)

    _assert_same_bits_under(core.set_kernel, ("avx2", "avx512"), compute)


def test_kernel_environment_variable_picks_the_kernel():
    for name in KERNELS:
        env = {**os.environ, "GRADSTEP_KERNEL": name}
        code = "import gradstep._core as c; print(c.kernel())"
        got = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, check=True).stdout.strip()
        assert got == name


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("K", [1, 2, 3, 16])
def test_row_orders_give_the_same_bits(kernel, dtype, K):
    """The dense gradient and Hessian product read a group's four rows interleaved or one after
    another (RowOrder in block_kernel.hpp, chosen by CPU and size): each row's sums are the same
    chains either way, in full-batch and mini-batch calls, with d % 4 != 0 (the tail terms) and
    odd run counts."""
    rng = np.random.default_rng(8)
    n, d = 1_030, 103
    X = rng.standard_normal((n, d)).astype(dtype)
    Y = (rng.random((n, K)) < 0.4).astype(np.float64)
    W = rng.standard_normal((K, d)) * 0.2
    sw = rng.random(n) + 0.5

    def compute():
        grads = gs.loss_and_grad(X, Y, W, np.zeros(K), sample_weight=sw, backend="cpp")
        hv = gs.hessp(X, Y, W, np.zeros(K), W[::-1], np.ones(K), sample_weight=sw,
                      backend="cpp")
        fitted = gs.fit(X, Y[:, 0], rule=["adam", "sgd", "momentum"][:min(K, 3)], lr=0.05,
                        batch_size=64 if K < 3 else None, max_iter=3, tol=None,
                        random_state=0, backend="cpp")
        return (*grads, *hv, fitted.coef, fitted.intercept)

    _assert_same_bits_under(core.set_row_order, ("interleaved", "rowwise"), compute)


def test_row_order_is_chosen_by_name_or_environment():
    with pytest.raises(ValueError, match="'auto', 'rowwise' or 'interleaved'"):
        core.set_row_order("sideways")
    assert core.row_order() in ("auto", "rowwise", "interleaved")
    for name in ("rowwise", "interleaved"):
        env = {**os.environ, "GRADSTEP_ROW_ORDER": name}
        code = "import gradstep._core as c; print(c.row_order())"
        got = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, check=True).stdout.strip()
        assert got == name
