"""Sparse CSR input (gradstep.sparse): dense and sparse input of the same matrix give the same
results (each backend family against its dense twin), the CSR backends agree, the bits do not
depend on the thread count, a canonical CSR is used without a copy and never modified, and bad
matrices are refused before any work."""

from __future__ import annotations

import numpy as np
import pytest

sp = pytest.importorskip("scipy.sparse")

import gradstep as gs  # noqa: E402
from gradstep.sparse import CSROracle, check_csr  # noqa: E402


def _families():
    names = ["numpy"]
    if gs.backends()["numba"]:
        names.append("numba")
    return names


FAMILIES = _families()  # the dense backend each sparse family is compared with


def make_sparse(n=160, d=9, density=0.35, seed=0, dtype=np.float64):
    """A CSR matrix with empty rows and an empty column, and labels from a logistic model."""
    rng = np.random.default_rng(seed)
    dense = rng.standard_normal((n, d)) * (rng.random((n, d)) < density)
    dense[::17] = 0.0  # some empty rows
    dense[:, 3] = 0.0  # an empty column
    w = rng.standard_normal(d)
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-(dense @ w) - 0.2))).astype(np.int64)
    X = sp.csr_matrix(dense.astype(dtype))
    return X, y


@pytest.fixture(scope="module")
def small():
    return make_sparse()


def _close(a, b, rtol=1e-12):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = max(float(np.max(np.abs(b), initial=0.0)), 1e-300)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * scale)


# ---- loss_and_grad and hessp -----------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("weights", [None, "shared", "per_run"])
def test_loss_grad_and_hessp_equal_dense(small, family, weights):
    X, y = small
    n, d = X.shape
    rng = np.random.default_rng(1)
    K = 3
    W = 0.5 * rng.standard_normal((K, d))
    b = rng.standard_normal(K)
    Y = np.column_stack([y, 1 - y, y])
    sw = {None: None, "shared": rng.uniform(0.2, 2.0, n),
          "per_run": rng.uniform(0.0, 2.0, (n, K))}[weights]
    alpha = [0.0, 0.1, 1.5]
    dense = X.toarray()
    got = gs.loss_and_grad(X, Y, W, b, sample_weight=sw, alpha=alpha, backend=family)
    want = gs.loss_and_grad(dense, Y, W, b, sample_weight=sw, alpha=alpha, backend=family)
    for g, w in zip(got, want):
        _close(g, w)
    V = rng.standard_normal((K, d))
    got = gs.hessp(X, Y, W, b, V, 0.3, sample_weight=sw, alpha=alpha, backend=family)
    want = gs.hessp(dense, Y, W, b, V, 0.3, sample_weight=sw, alpha=alpha, backend=family)
    for g, w in zip(got, want):
        _close(g, w)
    # the single-run forms
    one = gs.loss_and_grad(X, y, W[0], b[0], backend=family)
    assert isinstance(one[0], float)
    _close(one[1], gs.loss_and_grad(dense, y, W[0], b[0], backend=family)[1])


@pytest.mark.skipif("numba" not in FAMILIES, reason="numba is not installed")
def test_csr_backends_agree_on_rows_and_denominators(small):
    X, y = small
    n, d = X.shape
    rng = np.random.default_rng(2)
    K = 5
    P = rng.standard_normal((K, d + 1))
    V = rng.standard_normal((K, d + 1))
    sw = rng.uniform(0.0, 2.0, (n, K))
    a = CSROracle(X, np.column_stack([y] * K), sw, np.linspace(0, 1, K), backend="numba")
    r = CSROracle(X, np.column_stack([y] * K), sw, np.linspace(0, 1, K), backend="numpy")
    assert (a.backend, r.backend) == ("numba-csr", "numpy-csr")
    active = np.array([1, 0, 1, 1, 1], np.uint8)
    rows = rng.permutation(n)[:37].astype(np.int64)
    for kwargs in ({}, {"rows": rows}, {"rows": rows, "denominator": np.full(K, 20.0)}):
        la, ga = a.loss_grad(P, active, **kwargs)
        lr, gr = r.loss_grad(P, active, **kwargs)
        _close(la, lr, 1e-9)
        _close(ga, gr, 1e-9)
        assert not ga[1].any() and la[1] == 0.0  # the inactive run
    _close(a.hessp(P, V, active), r.hessp(P, V, active), 1e-9)


# ---- fit: every kind of rule through the reference driver ------------------------------------


FIT_CASES = [
    ("sgd", None), ("adam", None), ("lbfgs", None), ("newton", None),
    ("sgd", 16), ("adam", 16),
]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("rule,batch_size", FIT_CASES)
def test_fit_equals_dense(small, family, rule, batch_size):
    X, y = small
    n, d = X.shape
    dense = X.toarray()
    sw = np.random.default_rng(3).uniform(0.3, 1.7, n)
    for weights, intercept in ((None, True), (sw, False)):
        kw = dict(alpha=0.05, max_iter=25, tol=1e-10, batch_size=batch_size, random_state=7,
                  sample_weight=weights, fit_intercept=intercept,
                  reference=np.full(d + intercept, 0.1))
        if rule in ("sgd", "adam"):
            kw["lr"] = 0.05 if batch_size else 0.5
        got = gs.fit(X, y, rule, backend=family, **kw)
        want = gs.fit(dense, y, rule, backend=family, **kw)
        assert got.backend == f"{family}-csr"
        assert got.n_iter == want.n_iter and got.status == want.status
        _close(got.coef, want.coef)
        assert got.intercept == pytest.approx(want.intercept, rel=1e-12, abs=1e-14)
        for field in ("loss", "grad_norm", "step_norm", "distance", "passes"):
            _close(getattr(got.history, field), getattr(want.history, field))


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_fit_and_auto_lr_equal_dense(small, family):
    X, y = small
    dense = X.toarray()
    kw = dict(lr=["auto", 0.1], alpha=[0.01, 0.2], max_iter=20, tol=None)
    got = gs.fit(X, y, ["sgd", "adam"], backend=family, **kw)
    want = gs.fit(dense, y, ["sgd", "adam"], backend=family, **kw)
    _close(got.coef, want.coef)
    _close([r.lr for r in got.rules], [r.lr for r in want.rules])
    assert gs.lipschitz_constant(X, backend=family) == pytest.approx(
        gs.lipschitz_constant(dense, backend=family), rel=1e-12)


# ---- dtypes and formats ----------------------------------------------------------------------


def _int64_indices(X):
    """X with int64 indices and indptr (SciPy's constructor would narrow them to int32)."""
    Y = X.copy()
    Y.indices = Y.indices.astype(np.int64)
    Y.indptr = Y.indptr.astype(np.int64)
    return Y


@pytest.mark.parametrize("family", FAMILIES)
def test_float32_data_and_int64_indices(small, family):
    X, y = small
    d = X.shape[1]
    w = np.linspace(-1, 1, d)
    X32 = X.astype(np.float32)
    got = gs.loss_and_grad(X32, y, w, 0.2, backend=family)
    want = gs.loss_and_grad(X32.toarray(), y, w, 0.2, backend=family)  # float32 dense
    for g, e in zip(got, want):
        _close(g, e)
    X64 = _int64_indices(X)
    assert X64.indices.dtype == np.int64
    o = CSROracle(X64, y, backend=family)
    assert o.X is X64
    got = gs.loss_and_grad(X64, y, w, 0.2, backend=family)
    want = gs.loss_and_grad(X, y, w, 0.2, backend=family)
    for g, e in zip(got, want):
        _close(g, e, 1e-15)


def test_csr_array_csc_and_coo_give_the_same_results(small):
    X, y = small
    w = np.linspace(-1, 1, X.shape[1])
    want = gs.loss_and_grad(X, y, w, backend="numpy")
    for other in (sp.csr_array(X), X.tocsc(), sp.csc_array(X), X.tocoo()):
        got = gs.loss_and_grad(other, y, w, backend="numpy")
        for g, e in zip(got, want):
            _close(g, e, 1e-15)
    res = gs.fit(sp.csc_array(X), y, "lbfgs", alpha=0.1, backend="numpy")
    assert res.backend == "numpy-csr" and res.status == "converged"


def test_other_formats_are_converted_once_and_made_canonical():
    # a COO with a duplicate entry: converted to a new, canonical CSR (the user's is untouched)
    coo = sp.coo_matrix(([1.0, 2.0, 3.0], ([0, 0, 1], [1, 1, 0])), shape=(2, 2))
    X = check_csr(coo)
    assert X.format == "csr" and X.nnz == 2 and X.toarray().tolist() == [[0.0, 3.0], [3.0, 0.0]]
    assert coo.nnz == 3  # the COO still holds its three entries
    ints = sp.csr_matrix(np.array([[0, 2], [1, 0]], dtype=np.int64))
    converted = check_csr(ints)
    assert converted.dtype == np.float64 and ints.dtype == np.int64


# ---- no copy, nothing modified, determinism --------------------------------------------------


def test_canonical_csr_is_used_without_a_copy(small):
    X, y = small
    for M in (X, sp.csr_array(X), X.astype(np.float32), _int64_indices(X)):
        o = CSROracle(M, y)
        assert o.X is M
        assert o.X.data is M.data and o.X.indices is M.indices and o.X.indptr is M.indptr
        assert np.shares_memory(o.X.data, M.data)
    oracle, _ = gs.oracle.data_oracle(X, y, sample_weight=None, alpha=0.0, backend="auto",
                                      n_threads=None, labels=True)
    assert isinstance(oracle, CSROracle) and oracle.X is X


def test_the_users_matrix_is_never_modified(small):
    X, y = small
    before = [a.copy() for a in (X.data, X.indices, X.indptr)]
    gs.fit(X, y, "lbfgs", alpha=0.1, max_iter=5)
    gs.fit(X, y, "adam", lr=0.1, max_iter=3, batch_size=16, random_state=0)
    gs.hessp(X, y, np.ones(X.shape[1]), 0.0, np.ones(X.shape[1]))
    for a, b in zip((X.data, X.indices, X.indptr), before):
        assert np.array_equal(a, b)
    unsorted = _unsorted(X)
    snapshot = unsorted.indices.copy()
    with pytest.raises(ValueError):
        gs.fit(unsorted, y)
    assert np.array_equal(unsorted.indices, snapshot)


@pytest.mark.skipif("numba" not in FAMILIES, reason="numba is not installed")
def test_thread_count_gives_identical_bits():
    rng = np.random.default_rng(5)
    n, d = 20_000, 60
    X = sp.random(n, d, density=0.15, format="csr", random_state=6, dtype=np.float64)
    y = (rng.random(n) < 0.5).astype(np.float64)
    sw = rng.uniform(0.5, 1.5, n)
    K = 3
    P = 0.3 * rng.standard_normal((K, d + 1))
    V = rng.standard_normal((K, d + 1))
    active = np.ones(K, np.uint8)
    rows = rng.permutation(n)[:9000].astype(np.int64)
    one = CSROracle(X, y, sw, 0.1, backend="numba", n_threads=1)
    two = CSROracle(X, y, sw, 0.1, backend="numba", n_threads=2)
    for kwargs in ({}, {"rows": rows}):
        a, b = one.loss_grad(P, active, **kwargs), two.loss_grad(P, active, **kwargs)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert np.array_equal(one.hessp(P, V, active), two.hessp(P, V, active))
    for k in range(K):  # and each run's bits do not depend on the other runs
        alone = one.loss_grad(P[k:k + 1], active[:1])
        assert np.array_equal(alone[1][0], one.loss_grad(P, active)[1][k])


# ---- refusals --------------------------------------------------------------------------------


def _unsorted(X):
    Y = X.copy()
    row = int(np.argmax(np.diff(Y.indptr) >= 2))
    lo = Y.indptr[row]
    Y.indices[lo], Y.indices[lo + 1] = Y.indices[lo + 1], Y.indices[lo]
    return Y


def _with(X, **arrays):
    Y = X.copy()
    for name, value in arrays.items():
        setattr(Y, name, value)
    return Y


def test_bad_matrices_are_refused_before_any_work(small):
    X, y = small
    n, d = X.shape
    lo = int(X.indptr[1])
    dup = X.copy()
    row = int(np.argmax(np.diff(dup.indptr) >= 2))
    dup.indices[dup.indptr[row] + 1] = dup.indices[dup.indptr[row]]
    nan = X.copy()
    nan.data[5] = np.nan
    inf = X.copy()
    inf.data[-1] = -np.inf
    negative = X.copy()
    negative.indices[lo] = -1
    past = X.copy()
    past.indices[-1] = d
    falling = X.indptr.copy()
    falling[3], falling[4] = falling[4], falling[3]
    cases = [
        (_unsorted(X), "unsorted or duplicate"),
        (dup, "unsorted or duplicate"),
        (nan, "NaN or infinity"),
        (inf, "NaN or infinity"),
        (negative, r"column index outside \[0, 9\)"),
        (past, r"column index outside \[0, 9\)"),
        (_with(X, indptr=X.indptr[:-1]), "indptr has"),
        (_with(X, indptr=falling), "indptr decreases at row 3"),
        (_with(X, indptr=np.r_[X.indptr[:-1], X.indptr[-1] + 1]), "end at most"),
        (_with(X, indptr=X.indptr + 1), "start at 0"),
        (sp.csr_matrix((0, 4)), "empty"),
        (sp.csr_matrix((3, 0)), "empty"),
        (sp.csr_matrix(np.eye(2, dtype=np.complex128)), "real numbers"),
    ]
    for bad, message in cases:
        with pytest.raises(ValueError, match=message):
            check_csr(bad)
        labels = y[: bad.shape[0]] if bad.shape[0] else y[:0]
        with pytest.raises(ValueError, match=message):
            gs.fit(bad, labels, "sgd", lr=0.1, max_iter=2)
        # the one-pass calls leave the index checks to the C++ kernels' first pass (and run
        # them first on the other kernels): the same named error either way
        for backend in ("auto", "numpy"):
            coef = np.zeros(bad.shape[1])
            with pytest.raises(ValueError, match=message):
                gs.loss_and_grad(bad, labels, coef, backend=backend)
            with pytest.raises(ValueError, match=message):
                gs.hessp(bad, labels, coef, 0.0, coef, backend=backend)
            with pytest.raises(ValueError, match=message):
                gs.fit(bad, labels, "lbfgs", max_iter=2, backend=backend)
            # multinomial: the C++ softmax kernels check rows as well, others get the exact check
            W = np.zeros((2, bad.shape[1]))
            softmax = dict(loss="multinomial", classes=[0, 1], backend=backend)
            with pytest.raises(ValueError, match=message):
                gs.loss_and_grad(bad, labels, W, **softmax)
            with pytest.raises(ValueError, match=message):
                gs.hessp(bad, labels, W, 0.0, W, **softmax)
            with pytest.raises(ValueError, match=message):
                gs.fit(bad, labels, "lbfgs", max_iter=2, **softmax)
    # the first pass names the first bad entry when the check is left to it
    with pytest.raises(ValueError, match=r"NaN or infinity \(first at row \d+, column \d+"):
        gs.loss_and_grad(nan, y, np.zeros(d))
    with pytest.raises(ValueError, match="unknown backend 'gpu'"):
        gs.fit(X, y, backend="gpu")


def test_hiding_numba_falls_back_to_numpy_kernels(small, monkeypatch):
    import gradstep.sparse as gsp

    X, y = small
    monkeypatch.setattr(gsp, "_loaded", {})
    monkeypatch.setattr(gsp, "_why_missing", {})
    fastest = CSROracle(X, y, backend="cpp").backend  # "cpp" and "auto": the fastest there is
    assert CSROracle(X, y).backend == fastest
    assert fastest in ("cpp-csr", "numba-csr" if "numba" in FAMILIES else "numpy-csr")
    monkeypatch.setitem(gsp.KERNELS, "cpp", "._backends.no_such_module")
    monkeypatch.setitem(gsp.KERNELS, "numba", "._backends.no_such_module")
    monkeypatch.setattr(gsp, "_loaded", {})
    monkeypatch.setattr(gsp, "_why_missing", {})
    assert CSROracle(X, y, backend="cpp").backend == "numpy-csr"
    assert CSROracle(X, y).backend == "numpy-csr"
    with pytest.raises(ValueError, match="backend 'numba' has no sparse kernels"):
        CSROracle(X, y, backend="numba")


@pytest.mark.skipif("numba" not in FAMILIES, reason="numba is not installed")
def test_numpy_and_numba_structure_checks_agree(small):
    from gradstep._backends import sparse_numba, sparse_reference

    X, _ = small
    d = X.shape[1]
    dup = X.copy()
    row = int(np.argmax(np.diff(dup.indptr) >= 2))
    dup.indices[dup.indptr[row] + 1] = dup.indices[dup.indptr[row]]
    past = X.copy()
    past.indices[-1] = d
    falling = X.indptr.copy()
    falling[3], falling[4] = falling[4], falling[3]
    for M in (X, _int64_indices(X), _unsorted(X), dup, past, _with(X, indptr=falling)):
        expected = sparse_reference.structure_error(M.indptr, M.indices, d)
        assert tuple(sparse_numba.structure_error(M.indptr, M.indices, d)) == expected
    assert expected[0] == sparse_reference.INDPTR_DECREASES
