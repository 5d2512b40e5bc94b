"""The compiled multinomial kernels for CSR X (C++: _backends/softmax_cpp.py; Numba:
_backends/softmax_sparse_numba.py) against the specification (softmax_reference.py on the same
CSR): values, hessp, row subsets, denominators, per-run weights, inactive runs, dtypes,
thread-count determinism, a run's bits alone and among others, accuracy of confident rows, and
the refusals of bad arguments."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import gradstep as gs
from gradstep._backends import softmax_reference

NO_ROWS = np.empty(0, np.int64)


@pytest.fixture(params=["cpp", "numba"])
def kernels(request):
    if not gs.backends()[request.param]:
        pytest.skip(f"{request.param} missing")
    if request.param == "cpp":
        from gradstep._backends import softmax_cpp

        return softmax_cpp
    from gradstep._backends import softmax_sparse_numba

    return softmax_sparse_numba


def _csr(n, d, density, seed, data_dtype=np.float64, index_dtype=np.int32):
    X = sp.random(n, d, density=density, format="csr", random_state=seed,
                  data_rvs=np.random.default_rng(seed).standard_normal)
    X = sp.csr_matrix((X.data.astype(data_dtype), X.indices.astype(index_dtype),
                       X.indptr.astype(index_dtype)), shape=X.shape)
    return X


@pytest.mark.parametrize("data_dtype", [np.float32, np.float64])
@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("weights", [0, 1, 3])
def test_kernels_agree_with_the_specification(kernels, data_dtype, index_dtype, weights):
    rng = np.random.default_rng(int(weights) + 10 * (data_dtype is np.float32))
    n, d, C, K = 2000, 60, 4, 3
    X = _csr(n, d, 0.1, 5, data_dtype, index_dtype)
    labels = rng.integers(0, C, n).astype(np.int64)
    P = rng.standard_normal((K, C * (d + 1))) * 0.5
    SW = rng.uniform(0.1, 2.0, (n, weights))
    alpha = np.array([0.0, 0.3, 1.0])
    active = np.array([1, 0, 1], np.uint8)
    subset = rng.permutation(n)[:300].astype(np.int64)
    for rows, den in ((NO_ROWS, None), (subset, None), (subset, np.array([50.0, 1.0, 7.0]))):
        want = softmax_reference.loss_grad(X, labels, SW, P, alpha, rows, active, 1, den,
                                           n_classes=C)
        got = kernels.loss_grad(X, labels, SW, P, alpha, rows, active, 2, den, n_classes=C)
        np.testing.assert_allclose(got[0], want[0], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(got[1], want[1], rtol=1e-10, atol=1e-14)
        assert not got[1][1].any() and got[0][1] == 0.0  # the inactive run
    V = rng.standard_normal(P.shape)
    np.testing.assert_allclose(kernels.hessp(X, SW, P, V, alpha, active, 2, n_classes=C),
                               softmax_reference.hessp(X, SW, P, V, alpha, active, 1,
                                                       n_classes=C),
                               rtol=1e-10, atol=1e-14)


def test_the_same_bits_for_any_thread_count_and_for_a_run_alone(kernels):
    rng = np.random.default_rng(1)
    n, d, C, K = 20000, 300, 3, 5  # several blocks (work ~ nnz), so threads split the pass
    X = _csr(n, d, 0.1, 2)
    labels = rng.integers(0, C, n).astype(np.int64)
    P = rng.standard_normal((K, C * (d + 1))) * 0.2
    V = rng.standard_normal(P.shape)
    SW = rng.uniform(0.5, 1.5, (n, 1))
    alpha = np.full(K, 0.01)
    every = np.ones(K, np.uint8)
    one = kernels.loss_grad(X, labels, SW, P, alpha, NO_ROWS, every, 1, n_classes=C)
    two = kernels.loss_grad(X, labels, SW, P, alpha, NO_ROWS, every, 2, n_classes=C)
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_array_equal(one[1], two[1])
    np.testing.assert_array_equal(kernels.hessp(X, SW, P, V, alpha, every, 1, n_classes=C),
                                  kernels.hessp(X, SW, P, V, alpha, every, 2, n_classes=C))
    for k in (0, 3):  # run k alone gives its bits among the others
        alone = kernels.loss_grad(X, labels, SW, P[k:k + 1], alpha[k:k + 1], NO_ROWS,
                              np.ones(1, np.uint8), 2, n_classes=C)
        assert alone[0][0] == one[0][k]
        np.testing.assert_array_equal(alone[1][0], one[1][k])
        alone_hv = kernels.hessp(X, SW, P[k:k + 1], V[k:k + 1], alpha[k:k + 1],
                                 np.ones(1, np.uint8), 2, n_classes=C)
        np.testing.assert_array_equal(alone_hv[0], kernels.hessp(X, SW, P, V, alpha, every, 1,
                                                                 n_classes=C)[k])


def test_confident_rows_keep_their_relative_accuracy(kernels):
    # nine rows (two groups of four, whose links the C++ kernel takes in vectors, and one alone)
    # whose label leads by gap: each row's loss is (C - 1) exp(-gap), measured from the pivot,
    # not as logsumexp(z) - z_y (which is 0 from a gap of ~37 on)
    C = 3
    for gap in (5.0, 40.0, 300.0):
        X = sp.csr_matrix(np.ones((9, 1)))
        P = np.array([[gap, 0.0, 0.0, 0.0, 0.0, 0.0]])  # class 0 scores gap, the others 0
        loss, G = kernels.loss_grad(X, np.zeros(9, np.int64), np.ones((9, 0)), P, np.zeros(1),
                                    NO_ROWS, np.ones(1, np.uint8), 1, n_classes=C)
        expect = np.log1p((C - 1) * np.exp(-gap))
        assert loss[0] == pytest.approx(expect, rel=1e-14)
        # the label's residual is minus the others' probability, not p_y - 1
        assert G[0, 0] == pytest.approx(-(C - 1) * np.exp(-gap) / (1 + (C - 1) * np.exp(-gap)),
                                        rel=1e-14)
        # hessp along class 1's weight: p1 (1 - p1) there, -p_c p1 for the other classes
        V = np.array([[0.0, 0.0, 1.0, 0.0, 0.0, 0.0]])
        HV = kernels.hessp(X, np.ones((9, 0)), P, V, np.zeros(1), np.ones(1, np.uint8), 1,
                           n_classes=C)
        e = np.exp(-gap)
        p0, p1 = 1.0 / (1.0 + 2.0 * e), e / (1.0 + 2.0 * e)
        assert HV[0, 2] == pytest.approx(p1 * (1.0 - p1), rel=1e-13)
        assert HV[0, 0] == pytest.approx(-p0 * p1, rel=1e-13)
        assert HV[0, 4] == pytest.approx(-p1 * p1, rel=1e-13)


def test_nonfinite_data_shows_in_the_result_and_bad_arguments_are_refused(kernels):
    X = _csr(50, 6, 0.5, 3)
    labels = np.arange(50, dtype=np.int64) % 3
    P = np.zeros((1, 3 * 7))
    args = (np.ones((50, 0)), P, np.zeros(1), NO_ROWS, np.ones(1, np.uint8), 1)
    bad = X.copy()
    bad.data[4] = np.nan
    loss, G = kernels.loss_grad(bad, labels, *args, n_classes=3)
    assert not (np.isfinite(loss).all() and np.isfinite(G).all())
    with pytest.raises(ValueError, match=r"labels\[2\] = 5 is out of range \[0, 3\)"):
        kernels.loss_grad(X, np.array([0, 1, 5] + [0] * 47), *args, n_classes=3)
    with pytest.raises(ValueError, match=r"P must have shape \(K, n_classes \(d \+ 1\)\)"):
        kernels.loss_grad(X, labels, np.ones((50, 0)), np.zeros((1, 20)), np.zeros(1), NO_ROWS,
                      np.ones(1, np.uint8), 1, n_classes=3)
    with pytest.raises(ValueError, match="n_classes must be at least 2"):
        kernels.loss_grad(X, labels, *args, n_classes=1)
    with pytest.raises(ValueError, match="labels must have shape"):
        kernels.loss_grad(X, labels[:10], *args, n_classes=3)


@pytest.mark.parametrize("backend", ["cpp", "numba"])
def test_fit_and_public_functions_use_the_one_pass_kernels(backend):
    if not gs.backends()[backend]:
        pytest.skip(f"{backend} missing")
    rng = np.random.default_rng(4)
    X = _csr(400, 30, 0.2, 6)
    y = rng.integers(0, 3, 400)
    res = gs.fit(X, y, "lbfgs", loss="multinomial", alpha=0.01, tol=1e-10, max_iter=2000,
                 backend=backend)
    assert res.backend == f"{backend}-softmax-csr" and res.status == "converged"
    ref = gs.fit(X, y, "lbfgs", loss="multinomial", alpha=0.01, tol=1e-10, max_iter=2000,
                 backend="numpy")
    assert ref.backend == "numpy-softmax-csr"
    np.testing.assert_allclose(res.coef, ref.coef, atol=1e-8)
    W, b = rng.standard_normal((3, 30)), rng.standard_normal(3)
    got = gs.loss_and_grad(X, y, W, b, alpha=0.1, loss="multinomial", backend=backend)
    want = gs.loss_and_grad(X.toarray(), y, W, b, alpha=0.1, loss="multinomial",
                            backend="numpy")
    for a, e in zip(got, want):
        np.testing.assert_allclose(a, e, rtol=1e-12, atol=1e-15)
