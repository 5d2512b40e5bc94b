"""The C++ CSR kernels (gradstep._backends.sparse_cpp, cpp/include/gradstep/sparse_kernel.hpp):
they agree with the Numba and NumPy CSR kernels (float32/float64 data, int32/int64 indices, row
subsets, denominators, shared and per-run weights, per-run alpha, inactive runs) on every
instruction set this CPU runs, with the dense C++ kernels on the same matrix, give the same bits
for any number of threads and for a run alone or among others, handle empty rows, empty columns and
a matrix without nonzeros, and drive gs.fit with backend="cpp"."""

from __future__ import annotations

import numpy as np
import pytest

sp = pytest.importorskip("scipy.sparse")
core = pytest.importorskip("gradstep._core", reason="the compiled core is not built")

import gradstep as gs  # noqa: E402
from conftest import fit_recording_drivers  # noqa: E402
from gradstep._backends import sparse_cpp, sparse_reference  # noqa: E402
from gradstep.sparse import CSROracle  # noqa: E402

HAVE_NUMBA = bool(gs.backends()["numba"])
NO_ROWS = np.empty(0, dtype=np.int64)


@pytest.fixture(params=core.kernels())
def kernel(request):
    before = core.set_kernel(request.param)
    yield request.param
    core.set_kernel(before)


def _close(a, b, rtol):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = max(float(np.max(np.abs(b), initial=0.0)), 1e-300)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * scale)


def _matrix(n=211, d=29, density=0.25, seed=0, dtype=np.float64, index=np.int32):
    """A canonical CSR with empty rows, an empty column and rows of very different lengths."""
    rng = np.random.default_rng(seed)
    dense = rng.standard_normal((n, d)) * (rng.random((n, d)) < density)
    dense[::13] = 0.0  # empty rows
    dense[5] = rng.standard_normal(d)  # a full row
    dense[:, d // 3] = 0.0  # an empty column
    X = sp.csr_matrix(dense.astype(dtype))
    X.indices = X.indices.astype(index)
    X.indptr = X.indptr.astype(index)
    return X


def _weights(rng, n, K, kind):
    return {"0": np.empty((n, 0)), "1": rng.uniform(0.2, 2.0, (n, 1)),
            "K": rng.uniform(0.0, 2.0, (n, K))}[kind]


def _runs(rng, n, d, K):
    """(Y, SW, P, V, active) of K runs on n x d: one shared 0/1 target column, unit weights,
    parameters and hessp vectors drawn from rng, every run active."""
    Y = (rng.random((n, 1)) < 0.5).astype(np.float64)
    P = 0.3 * rng.standard_normal((K, d + 1))
    V = rng.standard_normal((K, d + 1))
    return Y, np.empty((n, 0)), P, V, np.ones(K, np.uint8)


def _modules():
    mods = {"numpy": sparse_reference}
    if HAVE_NUMBA:
        from gradstep._backends import sparse_numba

        mods["numba"] = sparse_numba
    return mods


# ---- agreement with the other CSR kernels ---------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("index", [np.int32, np.int64])
@pytest.mark.parametrize("ks", ["0", "1", "K"])
@pytest.mark.parametrize("K", [1, 3, 6, 13])
def test_agrees_with_numba_and_numpy(kernel, dtype, index, ks, K):
    rng = np.random.default_rng(K)
    X = _matrix(dtype=dtype, index=index, seed=K)
    n, d = X.shape
    Y = (rng.random((n, K)) < 0.4).astype(np.float64)
    SW = _weights(rng, n, K, ks)
    P = 0.5 * rng.standard_normal((K, d + 1))
    V = rng.standard_normal((K, d + 1))
    alpha = np.resize([0.0, 0.3, 1e-3, 2.0], K)
    active = np.ones(K, np.uint8)
    if K > 1:
        active[K // 2] = 0
    rows = rng.permutation(n)[:71].astype(np.int64)
    den = np.linspace(10.0, 30.0, K)
    cases = [(NO_ROWS, None), (rows, None), (rows, den), (NO_ROWS, den)]
    for module in _modules().values():
        for r, dn in cases:
            loss, G = sparse_cpp.loss_grad(X, Y, SW, P, alpha, r, active, 2, dn)
            want = module.loss_grad(X, Y, SW, P, alpha, r, active, 2, dn)
            _close(loss, want[0], 1e-9)
            _close(G, want[1], 1e-9)
            for k in np.flatnonzero(active == 0):  # inactive runs come back as zeros
                assert loss[k] == 0.0 and not G[k].any()
        HV = sparse_cpp.hessp(X, SW, P, V, alpha, active, 2)
        _close(HV, module.hessp(X, SW, P, V, alpha, active, 2), 1e-9)
    # a shared target column (Y (n, 1))
    loss, G = sparse_cpp.loss_grad(X, Y[:, :1], SW, P, alpha, NO_ROWS, active, 1)
    want = sparse_reference.loss_grad(X, Y[:, :1], SW, P, alpha, NO_ROWS, active)
    _close(loss, want[0], 1e-9)
    _close(G, want[1], 1e-9)


@pytest.mark.parametrize("weights", [None, "shared", "per_run"])
def test_equals_the_dense_cpp_kernels(kernel, weights):
    X = _matrix(n=300, d=41, density=0.3, seed=3)
    n, d = X.shape
    rng = np.random.default_rng(4)
    K = 5
    y = (rng.random(n) < 0.5).astype(np.int64)
    Y = np.column_stack([y, 1 - y, y, y, 1 - y])
    W = 0.4 * rng.standard_normal((K, d))
    b = rng.standard_normal(K)
    sw = {None: None, "shared": rng.uniform(0.2, 2.0, n),
          "per_run": rng.uniform(0.0, 2.0, (n, K))}[weights]
    alpha = [0.0, 0.1, 0.0, 1.5, 1e-4]
    dense = X.toarray()
    got = gs.loss_and_grad(X, Y, W, b, sample_weight=sw, alpha=alpha, backend="cpp")
    want = gs.loss_and_grad(dense, Y, W, b, sample_weight=sw, alpha=alpha, backend="cpp")
    for g, w in zip(got, want):
        _close(g, w, 1e-12)
    V = rng.standard_normal((K, d))
    got = gs.hessp(X, Y, W, b, V, 0.3, sample_weight=sw, alpha=alpha, backend="cpp")
    want = gs.hessp(dense, Y, W, b, V, 0.3, sample_weight=sw, alpha=alpha, backend="cpp")
    for g, w in zip(got, want):
        _close(g, w, 1e-12)


def test_far_from_the_optimum_the_link_does_not_cancel():
    """z of +-60 and more: the loss of a well-classified row is exp(-|z|), not 0 from rounding."""
    X = sp.csr_matrix(np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 1.0], [0.0, 0.0]]))
    y = np.array([1.0, 0.0, 1.0, 0.0])
    P = np.array([[40.0, -30.0, 0.0]])
    loss, G = sparse_cpp.loss_grad(X, y[:, None], np.empty((4, 0)), P, np.zeros(1), NO_ROWS,
                                   np.ones(1, np.uint8), 1)
    z = np.array([40.0, -60.0, 90.0, 0.0])
    want = (np.exp(-np.abs(z[:3])).sum() + np.log(2.0)) / 4  # log1p(e^-|z|) ~ e^-|z|
    _close(loss, [want], 1e-14)
    assert G[0, 0] < 0 and G[0, 0] != 0.0


# ---- threads and runs: the same bits ---------------------------------------------------------


def _big(seed=5):
    rng = np.random.default_rng(seed)
    n, d = 30_000, 400
    lengths = rng.integers(0, 40, n)
    indptr = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    cols = [np.sort(rng.choice(d, size=m, replace=False)) for m in lengths]
    indices = np.concatenate(cols).astype(np.int32)
    data = rng.standard_normal(indices.size)
    return sp.csr_matrix((data, indices, indptr), shape=(n, d))


@pytest.mark.parametrize("K,ks", [(1, "0"), (3, "1"), (9, "K")])
def test_thread_count_gives_identical_bits(kernel, K, ks):
    X = _big()
    n, d = X.shape
    rng = np.random.default_rng(6)
    Y = (rng.random((n, 1)) < 0.5).astype(np.float64)
    SW = _weights(rng, n, K, ks)
    P = 0.3 * rng.standard_normal((K, d + 1))
    V = rng.standard_normal((K, d + 1))
    alpha = np.full(K, 0.1)
    active = np.ones(K, np.uint8)
    rows = rng.permutation(n)[:20_000].astype(np.int64)
    for r in (NO_ROWS, rows):
        results = [sparse_cpp.loss_grad(X, Y, SW, P, alpha, r, active, t) for t in (1, 2, 3)]
        for loss, G in results[1:]:
            assert np.array_equal(loss, results[0][0]) and np.array_equal(G, results[0][1])
    hv = [sparse_cpp.hessp(X, SW, P, V, alpha, active, t) for t in (1, 2, 3)]
    assert np.array_equal(hv[0], hv[1]) and np.array_equal(hv[0], hv[2])


@pytest.mark.parametrize("K", [3, 13, 14, 15, 17])
def test_a_runs_bits_do_not_depend_on_the_other_runs(kernel, K):
    """Runs go 8, 4, then the 2 or 3 left together (or 1) through the dot products and 16, 4,
    then 2 or 3 together (or 1) through the scatters; each run's arithmetic is the same."""
    X = _big(7)
    n, d = X.shape
    rng = np.random.default_rng(8)
    Y, SW, P, V, active = _runs(rng, n, d, K)
    alpha = np.zeros(K)
    loss, G = sparse_cpp.loss_grad(X, Y, SW, P, alpha, NO_ROWS, active, 2)
    HV = sparse_cpp.hessp(X, SW, P, V, alpha, active, 2)
    one = np.ones(1, np.uint8)
    for k in sorted({0, 7 % K, 9 % K, 12 % K, K - 2, K - 1}):
        lk, gk = sparse_cpp.loss_grad(X, Y, SW, P[k:k + 1], alpha[:1], NO_ROWS, one, 2)
        assert lk[0] == loss[k] and np.array_equal(gk[0], G[k])
        hk = sparse_cpp.hessp(X, SW, P[k:k + 1], V[k:k + 1], alpha[:1], one, 2)
        assert np.array_equal(hk[0], HV[k])


def test_wide_matrices_that_outgrow_l2_give_the_same_results(kernel):
    """30,000 features x 16 runs: the block's sums (7.7 MB, hessp 11.5 MB) are past
    kPrefetchSumsBytes, so the kernel asks for each group's feature entries ahead of their use;
    the results are the NumPy kernels', and each run's bits are those of the run alone (1 run:
    480 KB, no prefetching)."""
    rng = np.random.default_rng(11)
    n, d, K = 400, 30_000, 16
    X = sp.random(n, d, density=2e-3, format="csr", random_state=12)
    Y, SW, P, V, active = _runs(rng, n, d, K)
    alpha = np.full(K, 0.01)
    rows = rng.permutation(n)[:150].astype(np.int64)
    for r in (NO_ROWS, rows):
        loss, G = sparse_cpp.loss_grad(X, Y, SW, P, alpha, r, active, 1)
        want = sparse_reference.loss_grad(X, Y, SW, P, alpha, r, active)
        _close(loss, want[0], 1e-9)
        _close(G, want[1], 1e-9)
        lk, gk = sparse_cpp.loss_grad(X, Y, SW, P[5:6], alpha[:1], r, active[:1], 1)
        assert lk[0] == loss[5] and np.array_equal(gk[0], G[5])
    HV = sparse_cpp.hessp(X, SW, P, V, alpha, active, 1)
    _close(HV, sparse_reference.hessp(X, SW, P, V, alpha, active), 1e-9)
    hk = sparse_cpp.hessp(X, SW, P[9:10], V[9:10], alpha[:1], active[:1], 1)
    assert np.array_equal(hk[0], HV[9])


# ---- structure: empty rows and columns, no nonzeros, no copies --------------------------------


@pytest.mark.parametrize("index", [np.int32, np.int64])
def test_no_nonzeros_and_empty_rows(index):
    n, d, K = 7, 4, 2
    X = sp.csr_matrix((n, d))
    X.indices = X.indices.astype(index)
    X.indptr = X.indptr.astype(index)
    rng = np.random.default_rng(9)
    Y = (rng.random((n, K)) < 0.5).astype(np.float64)
    P = rng.standard_normal((K, d + 1))
    V = rng.standard_normal((K, d + 1))
    alpha = np.array([0.0, 0.5])
    active = np.ones(K, np.uint8)
    SW = np.empty((n, 0))
    for r in (NO_ROWS, np.array([1, 3], np.int64)):
        got = sparse_cpp.loss_grad(X, Y, SW, P, alpha, r, active, 2)
        want = sparse_reference.loss_grad(X, Y, SW, P, alpha, r, active)
        _close(got[0], want[0], 1e-12)
        _close(got[1], want[1], 1e-12)
        assert not got[1][:, :d][0].any()  # run 0 has no penalty: no feature gradient
    _close(sparse_cpp.hessp(X, SW, P, V, alpha, active, 2),
           sparse_reference.hessp(X, SW, P, V, alpha, active), 1e-12)
    # a row whose stored entries are all after indptr[-1] (allowed by check_csr) is not read
    Z = sp.csr_matrix((np.array([5.0]), np.array([1], np.int32), np.zeros(n + 1, np.int32)),
                      shape=(n, d))
    got = sparse_cpp.loss_grad(Z, Y, SW, P, alpha, NO_ROWS, active, 1)
    _close(got[1], sparse_cpp.loss_grad(X, Y, SW, P, alpha, NO_ROWS, active, 1)[1], 0.0)


def test_zero_weights_and_zero_denominators_give_zeros():
    X = _matrix(n=40, d=6)
    n, d = X.shape
    rng = np.random.default_rng(10)
    K = 3
    Y = (rng.random((n, K)) < 0.5).astype(np.float64)
    SW = rng.uniform(0.5, 1.5, (n, K))
    SW[:, 1] = 0.0
    P = rng.standard_normal((K, d + 1))
    loss, G = sparse_cpp.loss_grad(X, Y, SW, P, np.full(K, 0.2), NO_ROWS, np.ones(K, np.uint8), 1)
    assert loss[1] == 0.0 and not G[1].any() and loss[0] != 0.0
    loss, G = sparse_cpp.loss_grad(X, Y, SW, P, np.zeros(K), NO_ROWS, np.ones(K, np.uint8), 1,
                                   np.array([3.0, 0.0, 2.0]))
    assert loss[1] == 0.0 and not G[1].any()


def test_bad_calls_raise_instead_of_reading_out_of_bounds():
    X = _matrix(n=20, d=5)
    n, d = X.shape
    Y = np.zeros((n, 1))
    P = np.zeros((1, d + 1))
    args = (np.zeros(1), NO_ROWS, np.ones(1, np.uint8), 1)
    with pytest.raises(ValueError, match="P must have shape"):
        sparse_cpp.loss_grad(X, Y, np.empty((n, 0)), np.zeros((1, d)), *args)
    with pytest.raises(ValueError, match="out of range"):
        sparse_cpp.loss_grad(X, Y, np.empty((n, 0)), P, np.zeros(1), np.array([n], np.int64),
                             np.ones(1, np.uint8), 1)
    with pytest.raises(ValueError, match="Y must have shape"):
        sparse_cpp.loss_grad(X, np.zeros((n + 1, 1)), np.empty((n, 0)), P, *args)
    bad = X.copy()
    bad.indptr = bad.indptr.copy()
    bad.indptr[-1] = bad.indices.size + 1
    with pytest.raises(ValueError, match="end at most"):
        sparse_cpp.loss_grad(bad, Y, np.empty((n, 0)), P, *args)
    falling = X.copy()
    falling.indptr = falling.indptr.copy()
    falling.indptr[3] = falling.indptr[-1] + 5  # a row past the end (check_csr refuses it)
    with pytest.raises(ValueError, match="row 2 spans"):
        sparse_cpp.loss_grad(falling, Y, np.empty((n, 0)), P, *args)
    with pytest.raises(TypeError, match="data must be"):
        sparse_cpp.loss_grad(X.astype(np.int64), Y, np.empty((n, 0)), P, *args)


@pytest.mark.parametrize("index", [np.int32, np.int64])
def test_kernels_that_check_rows_refuse_exactly_the_bad_rows_they_read(index):
    """check_rows: a pass raises a ValueError naming the first bad row it reads (in its order)
    exactly when a row it reads has an index outside [0, d), a duplicate or a fall (faults
    across a row boundary are no fault), and gives the unchecked pass's bits otherwise. Up to
    200 rows: several of the chunks in which consecutive rows are checked (kCheckRows = 64)."""
    rng = np.random.default_rng(17)
    d = 30
    for trial in range(150):
        n = int(rng.integers(1, 200))
        lengths = rng.integers(0, 7, n)
        indptr = np.r_[0, np.cumsum(lengths)].astype(index)
        indices = np.concatenate(
            [np.sort(rng.choice(d, size=k, replace=False)) for k in lengths] or [[]]
        ).astype(index)
        nnz = indices.size
        fault = trial % 4
        for _ in range(int(rng.integers(1, 4))):  # one to three faults of the trial's kind
            if fault == 1 and nnz:
                indices[rng.integers(nnz)] = rng.choice([d, d + 7, -1, -d])
            elif fault == 2 and nnz >= 2:
                j = int(rng.integers(1, nnz))
                indices[j] = indices[j - 1] - int(rng.integers(0, 2))
        X = sp.csr_matrix((rng.standard_normal(nnz), indices, indptr), shape=(n, d))
        X.indices, X.indptr = indices, indptr  # as they are (no narrowing, no checks)
        bad_rows = {i for i in range(n)
                    if sparse_reference.structure_error(
                        indptr[i:i + 2] - indptr[i], indices[indptr[i]:indptr[i + 1]], d)[0]}
        K = 2
        Y = (rng.random((n, 1)) < 0.5).astype(np.float64)
        SW = np.empty((n, 0))
        P = rng.standard_normal((K, d + 1))
        alpha, active = np.zeros(K), np.ones(K, np.uint8)
        rows = rng.choice(n, size=max(1, n // 2), replace=False).astype(np.int64)
        for r in (NO_ROWS, rows):
            order = range(n) if r.size == 0 else r.tolist()
            first_bad = next((i for i in order if i in bad_rows), None)
            if first_bad is not None:
                with pytest.raises(ValueError, match=rf"row {first_bad} has a column index out"):
                    sparse_cpp.loss_grad(X, Y, SW, P, alpha, r, active, 1, check_rows=True)
            else:
                got = sparse_cpp.loss_grad(X, Y, SW, P, alpha, r, active, 1, check_rows=True)
                want = sparse_cpp.loss_grad(X, Y, SW, P, alpha, r, active, 1)
                assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
        if bad_rows:
            with pytest.raises(ValueError, match=rf"row {min(bad_rows)} has a column index out"):
                sparse_cpp.hessp(X, SW, P, P, alpha, active, 1, check_rows=True)
        else:
            assert np.array_equal(sparse_cpp.hessp(X, SW, P, P, alpha, active, 1, check_rows=True),
                                  sparse_cpp.hessp(X, SW, P, P, alpha, active, 1))


def test_one_pass_calls_have_no_structure_pass_of_their_own(monkeypatch):
    """gs.loss_and_grad and gs.fit on CSR with the C++ kernels read X once at the start: the
    kernels check each row, check_csr's O(nnz) structure check does not run; an oracle made by
    from_validated (a copy) proves the structure again with its first pass."""
    from gradstep import sparse as gs_sparse

    calls = []
    real = gs_sparse._structure_error
    monkeypatch.setattr(gs_sparse, "_structure_error",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    X = _matrix(n=60, d=7)
    y = (np.arange(60) % 3 == 0).astype(np.float64)
    coef = np.full(7, 0.1)
    want = gs.loss_and_grad(X.toarray(), y, coef, 0.2)
    got = gs.loss_and_grad(X, y, coef, 0.2, backend="cpp")
    assert not calls
    _close(got[0], want[0], 1e-12)
    _close(got[1], want[1], 1e-12)
    gs.fit(X, y, "lbfgs", max_iter=5, backend="cpp")
    assert not calls
    oracle = CSROracle(X, y, backend="cpp")  # the public constructor checks X in full
    assert len(calls) == 1 and oracle.structure_proven
    copy = CSROracle.from_validated(oracle.X, oracle.Y, oracle.SW, np.zeros(1), oracle.backend,
                                    oracle.module, 1)
    assert not copy.structure_proven
    copy.loss_grad(np.zeros((1, 8)), np.ones(1, np.uint8), rows=np.arange(5))
    assert not copy.structure_proven  # five rows prove five rows
    copy.hessp(np.zeros((1, 8)), np.ones((1, 8)), np.ones(1, np.uint8))
    assert copy.structure_proven and len(calls) == 1
    gs.loss_and_grad(X, y, coef, 0.2, backend="numpy")  # kernels that do not check rows
    assert len(calls) == 2
    # the multinomial loss likewise: its C++ kernels check rows, the NumPy ones get the check
    W = np.full((3, 7), 0.1)
    labels = np.arange(60) % 3
    got = gs.loss_and_grad(X, labels, W, loss="multinomial", backend="cpp")
    gs.hessp(X, labels, W, 0.0, W, loss="multinomial", backend="cpp")
    res = gs.fit(X, labels, "lbfgs", loss="multinomial", max_iter=5, backend="cpp")
    assert len(calls) == 2 and res.backend == "cpp-softmax-csr"
    want = gs.loss_and_grad(X, labels, W, loss="multinomial", backend="numpy")
    assert len(calls) == 3
    _close(got[0], want[0], 1e-12)
    _close(got[1], want[1], 1e-12)


def test_structure_check_agrees_with_numpy():
    X = _matrix(n=50, d=8)
    d = X.shape[1]
    dup = X.copy()
    row = int(np.argmax(np.diff(dup.indptr) >= 2))
    dup.indices[dup.indptr[row] + 1] = dup.indices[dup.indptr[row]]
    past = X.copy()
    past.indices[-1] = d
    negative = X.copy()
    negative.indices[3] = -1
    falling = X.copy()
    falling.indptr = falling.indptr.copy()
    falling.indptr[3], falling.indptr[4] = falling.indptr[4], falling.indptr[3]
    wide = X.copy()
    wide.indices = wide.indices.astype(np.int64)
    for M in (X, wide, dup, past, negative, falling):
        want = sparse_reference.structure_error(M.indptr, M.indices, d)
        assert sparse_cpp.structure_error(M.indptr, M.indices, d) == want


@pytest.mark.parametrize("index", [np.int32, np.int64])
def test_structure_screen_finds_every_kind_of_fault(index):
    # the C++ check screens with counts over the whole index array (pairs that do not increase
    # must be row starts, the largest index below d) before it scans rows: equal or falling
    # indices across a row boundary and empty rows are valid; one fault anywhere is not
    rng = np.random.default_rng(7)
    d = 40
    for trial in range(200):
        n = int(rng.integers(1, 12))
        lengths = rng.integers(0, 6, n)
        lengths[rng.random(n) < 0.2] = 0  # empty rows
        indptr = np.r_[0, np.cumsum(lengths)].astype(index)
        indices = np.concatenate(
            [np.sort(rng.choice(d, size=k, replace=False)) for k in lengths] or [[]]
        ).astype(index)
        nnz = indices.size
        fault = trial % 5
        if fault == 1 and nnz:  # out of range, or negative
            indices[rng.integers(nnz)] = rng.choice([d, d + 3, -1])
        elif fault == 2 and nnz >= 2:  # a duplicate or a fall, maybe across a row boundary
            j = int(rng.integers(1, nnz))
            indices[j] = indices[j - 1] - int(rng.integers(0, 2))
        elif fault == 3 and n >= 2:  # indptr falls
            i = int(rng.integers(1, n))
            indptr[i] = indptr[i + 1] + 1
            if indptr[i] > nnz:
                continue
        want = sparse_reference.structure_error(indptr, indices, d)
        assert sparse_cpp.structure_error(indptr, indices, d) == want, (trial, fault)


def test_structure_screen_on_threads_finds_faults_in_any_chunk():
    # past 2^20 indices the screen is split into chunks over the threads: a fault in a late
    # chunk, or across a chunk border, is found (and named by row) on any number of threads
    n, per_row, d = 4000, 300, 5000
    rng = np.random.default_rng(11)
    indices = np.concatenate(
        [np.sort(rng.choice(d, per_row, replace=False)) for _ in range(n)]).astype(np.int32)
    indptr = np.arange(0, indices.size + 1, per_row, dtype=np.int64)
    assert indices.size > 2**20
    for where in (None, 2**20, 2**20 + 1, indices.size - 1):
        bad = indices.copy()
        if where is not None:
            bad[where] = bad[where - 1]  # a duplicate (or, at a row start, allowed)
        want = sparse_reference.structure_error(indptr, bad, d)
        for threads in (1, 2, 3):
            assert sparse_cpp.structure_error(indptr, bad, d, threads) == want, (where, threads)
    past = indices.copy()
    past[-1] = d
    assert sparse_cpp.structure_error(indptr, past, d, 2) == (2, n - 1)


def test_no_copy_of_the_matrix():
    X = _matrix()
    o = CSROracle(X, np.zeros(X.shape[0]), backend="cpp")
    assert o.backend == "cpp-csr" and o.X is X and o.X.data is X.data
    assert hasattr(o.module, "run")  # the compiled first-order loop (driver.make_driver)


@pytest.mark.parametrize("batch_size,shuffle", [(None, "rows"), (32, "rows"), (32, "blocks")])
def test_compiled_loop_on_csr_follows_the_reference_driver(monkeypatch, batch_size, shuffle):
    # The C++ first-order loop over the CSR kernels (sparse_cpp.run) against the reference
    # driver over the same kernels: the same steps, statuses and history, to rounding.
    X = _matrix(n=500, d=40, density=0.2, seed=21)
    rng = np.random.default_rng(22)
    y = (rng.random(X.shape[0]) < 0.5).astype(np.int64)
    sw = rng.uniform(0.5, 2.0, X.shape[0])
    kw = dict(lr=[0.05, 0.01, 0.1], alpha=[1e-3, 0.0, 1e-2], batch_size=batch_size,
              shuffle=shuffle, sample_weight=sw, max_iter=12, tol=1e-4, random_state=5,
              backend="cpp")
    rules = ["adam", "rmsprop", "nesterov"]
    made = []

    def fit(refuse=(), **more):
        result, drivers = fit_recording_drivers(monkeypatch, X, y, rules, refuse=refuse,
                                                **kw, **more)
        made.extend(drivers)
        return result

    compiled = fit()
    no_intercept = fit(fit_intercept=False)
    reference = fit(refuse=("_compiled_loop",))
    reference_no_intercept = fit(refuse=("_compiled_loop",), fit_intercept=False)
    assert made == ["CompiledDriver"] * 2 + ["ReferenceDriver"] * 2
    for a, b in ((compiled, reference), (no_intercept, reference_no_intercept)):
        assert a.backend == b.backend == "cpp-csr"
        assert list(a.status) == list(b.status) and list(a.n_iter) == list(b.n_iter)
        _close(a.coef, b.coef, 1e-12)
        _close(a.intercept, b.intercept, 1e-12)
        np.testing.assert_allclose(a.history.loss, b.history.loss, rtol=1e-12)
    assert np.all(no_intercept.intercept == 0.0)


def test_compiled_loop_needs_a_proven_structure(monkeypatch):
    # A CSR oracle whose index structure is not proven (its passes still check rows) keeps the
    # reference driver: the compiled loop reads by the indices unchecked.
    from gradstep import driver

    X = _matrix()
    y = np.arange(X.shape[0]) % 2
    made = []
    real_init, real_make = driver.init_state, driver.make_driver

    def init_unproven(oracle, spec, state):
        real_init(oracle, spec, state)
        oracle.structure_proven = False  # as if the first pass had not proved it

    def spy(*args):
        made_driver = real_make(*args)
        made.append(type(made_driver).__name__)
        return made_driver

    monkeypatch.setattr("gradstep.api.make_driver", spy)
    proven = gs.fit(X, y, "sgd", lr=0.1, max_iter=3, tol=None, backend="cpp")
    monkeypatch.setattr("gradstep.api.init_state", init_unproven)
    unproven = gs.fit(X, y, "sgd", lr=0.1, max_iter=3, tol=None, backend="cpp")
    assert made == ["CompiledDriver", "ReferenceDriver"]
    _close(proven.coef, unproven.coef, 1e-12)


# ---- fit ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("rule,kwargs", [("adam", {"lr": 0.05}), ("lbfgs", {}),
                                         ("sgd", {"lr": 0.1, "batch_size": 16})])
def test_fit_on_cpp_kernels(rule, kwargs):
    X = _matrix(n=400, d=12, density=0.4, seed=11)
    n, d = X.shape
    rng = np.random.default_rng(12)
    w = rng.standard_normal(d)
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-(X @ w)))).astype(np.int64)
    kwargs.update(alpha=1e-3, max_iter=60, random_state=3)
    res = gs.fit(X, y, rule, backend="cpp", **kwargs)
    assert res.backend == "cpp-csr"
    ref = gs.fit(X, y, rule, backend="numpy", **kwargs)
    assert ref.backend == "numpy-csr"  # the same driver over the NumPy CSR kernels
    _close(res.coef, ref.coef, 1e-9)
    dense = gs.fit(X.toarray(), y, rule, backend="cpp", **kwargs)
    _close(res.coef, dense.coef, 1e-9)
