"""Trustworthy, continued: the CSR kernels and the softmax (multinomial) kernels compute the loss
and the residual without cancellation, against mpmath at 60 digits (tests/test_trust.py section 4
does the same for the dense binary kernels).

Each kernel runs K = n runs with the same parameters and sample weights eye(n): run k sees only
row k, so its loss is row k's loss and its gradient row k's residual (times x, a power of two
here: exact). The old formulas, kept below as negative controls, fail the same tolerance on the
same rows: log(1 + exp(z)) - y z and sigmoid(z) - y are 0 from |z| = 37 on instead of about
exp(-|z|), and logsumexp(z) - z_y and softmax(z)_y - 1 likewise once z_y leads by 37 or more.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import scipy.sparse as sp

import gradstep as gs
from gradstep import sparse
from gradstep._backends import softmax_reference, sparse_reference
from test_trust import MAX_ULPS, mpmath, needs_mpmath, ulps

# ---- the CSR kernels ------------------------------------------------------------------------

# each margin with both labels: y z > 0 is the confident correct row whose loss is tiny
MARGINS = np.array([5.0, -5.0, 30.0, -30.0, 37.0, -37.0, 700.0, -700.0, 745.0, -745.0, 750.0,
                    -750.0, 0.0, 1.0])
Z_SPARSE = np.repeat(MARGINS, 2)
Y_SPARSE = np.tile([0.0, 1.0], MARGINS.size)
B_SPARSE = 1.0  # z_i = 2 w_i + 0.5 * 0 + b with w_i = (z_i - b) / 2: exact for these margins


def _sparse_problem(dtype=np.float64):
    """(X CSR (n, n + 1), Y (n, 1), SW eye(n), P (n, n + 2)): row i has 2.0 in column i and 0.5
    in the last column (weight 0: it only makes the rows differ in length and order), every run
    the same weights, run k weighted on row k alone."""
    n = Z_SPARSE.size
    d = n + 1
    indptr = np.arange(0, 2 * n + 1, 2)
    indices = np.column_stack([np.arange(n), np.full(n, n)]).reshape(-1)
    data = np.tile([2.0, 0.5], n).astype(dtype)
    X = sp.csr_matrix((data, indices, indptr), shape=(n, d))
    w = np.zeros(d + 1)
    w[:n] = (Z_SPARSE - B_SPARSE) / 2.0
    w[d] = B_SPARSE
    P = np.tile(w, (n, 1))
    return X, Y_SPARSE[:, None].copy(), np.eye(n), P


def _sparse_margins() -> np.ndarray:
    """The margins as the kernels compute them (2 w_i + 0.5 * 0 in index order, then + b)."""
    _, _, _, P = _sparse_problem()
    n = Z_SPARSE.size
    return (2.0 * P[0, :n] + 0.5 * 0.0) + B_SPARSE


def _binary_truth(z: np.ndarray, y: np.ndarray):
    """log(1 + exp(z)) - y z, sigmoid(z) - y and sigmoid(z)(1 - sigmoid(z)) at 60 digits, each
    from a form exact in mpmath's arithmetic (as test_trust._truth), rounded once to float64."""
    loss, res, hw = [], [], []
    with mpmath.workdps(60):
        for zi, yi in zip(z, y):
            zm = mpmath.mpf(float(zi))
            s = -zm if yi else zm  # loss = log1p(exp(s)), residual = +-1 / (1 + exp(-s))
            loss.append(float(mpmath.log1p(mpmath.exp(s))))
            res.append(float((-1 if yi else 1) / (1 + mpmath.exp(-s))))
            e = mpmath.exp(-abs(zm))
            hw.append(float(e / (1 + e) ** 2))
    return np.array(loss), np.array(res), np.array(hw)


def _old_sparse_link(z, y):
    """The CSR kernels' link before this test: log1pexp(z) - y z and sigmoid(z) - y, the
    subtraction after the rounding (the negative control)."""
    e = np.exp(-np.abs(z))
    log1pexp = np.maximum(z, 0.0) + np.log1p(e)
    sig = np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    return log1pexp - y * z, sig - y, sig * (1.0 - sig)


def _sparse_modules():
    names = []
    for name in sparse.ORDER:
        if sparse._load(name) is not None:
            names.append(name)
    return names


@needs_mpmath
@pytest.mark.parametrize("name", _sparse_modules())
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sparse_loss_and_residual_within_a_few_ulp(name, dtype):
    module = sparse._load(name)
    X, Y, SW, P = _sparse_problem(dtype)
    n = Y.shape[0]
    z = _sparse_margins()
    want_loss, want_res, want_hw = _binary_truth(z, Y[:, 0])
    K = P.shape[0]
    loss, G = module.loss_grad(X, Y, SW, P, np.zeros(K), np.empty(0, np.int64),
                               np.ones(K, np.uint8), 1, None)
    diag = np.arange(n)
    # residual r: column i holds 2 r, the last feature 0.5 r, the intercept r (all exact)
    for got, want in ((loss, want_loss), (G[diag, diag] / 2.0, want_res),
                      (G[:, n] * 2.0, want_res), (G[:, n + 1], want_res)):
        bad = ulps(got, want) > MAX_ULPS
        assert not bad.any(), (z[bad], Y[bad, 0], got[bad], want[bad])
    V = np.zeros_like(P)
    V[:, n + 1] = 1.0  # u = x . 0 + 1: the Hessian-vector product is the weight times (x, 1)
    HV = module.hessp(X, SW, P, V, np.zeros(K), np.ones(K, np.uint8), 1)
    for got in (HV[diag, diag] / 2.0, HV[:, n] * 2.0, HV[:, n + 1]):
        bad = ulps(got, want_hw) > MAX_ULPS
        assert not bad.any(), (z[bad], got[bad], want_hw[bad])


@needs_mpmath
def test_the_old_sparse_link_fails_the_same_tolerance():
    """Negative control: the old formula on the same margins fails the tolerance above on every
    row where it subtracts after rounding: y = 1 with z >= 5 for the loss (log1pexp(z) - z) and
    the residual (sigmoid(z) - 1), z >= 37 for the Hessian weight (1 - sigmoid(z) = 0); from
    z = 30 on by more than a million ulps. (From 745 on the true values are the smallest
    subnormal or 0: there the old 0 is within the tolerance too.)"""
    z = _sparse_margins()
    y = Y_SPARSE
    want_loss, want_res, want_hw = _binary_truth(z, y)
    loss, res, hw = _old_sparse_link(z, y)
    cancels = (y == 1) & (z >= 5) & (z < 745)
    assert (ulps(loss, want_loss)[cancels] > MAX_ULPS).all()
    assert (ulps(res, want_res)[cancels] > MAX_ULPS).all()
    assert (ulps(hw, want_hw)[(z >= 37) & (z < 745)] > MAX_ULPS).all()
    far = cancels & (z >= 30)
    assert (ulps(loss, want_loss)[far] > 1e6).all() and (ulps(res, want_res)[far] > 1e6).all()


# ---- the softmax kernels --------------------------------------------------------------------

# (scores z, label y): z_y - max_{c != y} z_c = 40 and 700 at several offsets, ties, wrong
# labels, uniform scores, and a lead of 740 (the terms exp(-740) are subnormal)
SOFTMAX_ROWS = [
    ([40.0, 0.0, 0.0, 0.0], 0),
    ([3.0, 703.0, -10.0, 0.0], 1),
    ([1000.0, 960.0, 300.0, -1000.0], 0),
    ([-200.0, -900.0, -240.0, -260.0], 0),
    ([0.0, -5.0, 700.0, 0.0], 2),
    ([1500.0, 800.0, 790.0, 799.0], 1),  # a wrong label far behind: loss 700 + log1p(...)
    ([0.0, 40.0, 0.0, 0.0], 0),
    ([700.0, 0.0, 0.0, 0.0], 1),
    ([0.0, 0.0, 0.0, 0.0], 3),
    ([5.0, 5.0, 0.0, 0.0], 0),  # a tie for the lead
    ([30.0, 29.0, -5.0, 0.0], 0),
    ([740.0, 0.0, 0.0, 0.0], 0),
    ([36.0, 0.0, 0.0, -1.0], 3),
    ([0.0, 0.5, 0.25, -37.0], 2),
]
Z_SOFT = np.array([z for z, _ in SOFTMAX_ROWS])
Y_SOFT = np.array([y for _, y in SOFTMAX_ROWS], dtype=np.int64)
N_CLASSES = Z_SOFT.shape[1]


@functools.cache
def _softmax_truth() -> tuple[np.ndarray, np.ndarray]:
    """Per row the loss log(sum_c exp(z_c - z_y)) = log1p(T), T = sum_{c != y} exp(z_c - z_y),
    and the residual softmax(z) - onehot(y): exp(z_c - z_y) / (1 + T) for c != y and -T / (1 + T)
    for y, at 60 digits (sums of positive terms only), rounded once to float64."""
    loss, res = [], []
    with mpmath.workdps(60):
        for z, y in SOFTMAX_ROWS:
            e = [mpmath.exp(mpmath.mpf(zc) - mpmath.mpf(z[y])) for zc in z]
            T = mpmath.fsum(e[c] for c in range(len(z)) if c != y)
            loss.append(float(mpmath.log1p(T)))
            res.append([float(-T / (1 + T)) if c == y else float(e[c] / (1 + T))
                        for c in range(len(z))])
    return np.array(loss), np.array(res)


def _old_softmax_link(Z, labels):
    """The softmax kernels' link before this test: logsumexp(z) - z_y and softmax(z) - onehot(y)
    (the negative control)."""
    m = Z.max(axis=1, keepdims=True)
    E = np.exp(Z - m)
    S = E.sum(axis=1, keepdims=True)
    lse = (m + np.log(S))[:, 0]
    rows = np.arange(Z.shape[0])
    onehot = np.zeros_like(Z)
    onehot[rows, labels] = 1.0
    return lse - Z[rows, labels], E / S - onehot


def _softmax_modules():
    out = [pytest.param(softmax_reference, False, id="numpy"),
           pytest.param(softmax_reference, True, id="numpy-csr")]
    if gs.backends()["numba"]:
        from gradstep._backends import softmax_numba

        out.append(pytest.param(softmax_numba, False, id="numba"))
    return out


def _softmax_problem(dtype=np.float64):
    """(X ones (n, 1), labels, SW eye(n), P (n, C * 2)): run k's class c has weight Z[k, c] and
    intercept 0, so every row's scores under run k are Z[k] (x = 1: exact)."""
    n = len(SOFTMAX_ROWS)
    P = np.zeros((n, N_CLASSES, 2))
    P[:, :, 0] = Z_SOFT
    return np.ones((n, 1), dtype=dtype), Y_SOFT, np.eye(n), P.reshape(n, -1)


@needs_mpmath
@pytest.mark.parametrize("module,csr", _softmax_modules())
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_softmax_loss_and_residual_within_a_few_ulp(module, csr, dtype):
    X, labels, SW, P = _softmax_problem(dtype)
    if csr:
        X = sp.csr_matrix(X)
    K = P.shape[0]
    want_loss, want_res = _softmax_truth()
    loss, G = module.loss_grad(X, labels, SW, P, np.zeros(K), np.empty(0, np.int64),
                               np.ones(K, np.uint8), 1, None, n_classes=N_CLASSES)
    bad = ulps(loss, want_loss) > MAX_ULPS
    assert not bad.any(), (Z_SOFT[bad], Y_SOFT[bad], loss[bad], want_loss[bad])
    G = G.reshape(K, N_CLASSES, 2)
    for got in (G[:, :, 0], G[:, :, 1]):  # x = 1 and the intercept: both the residual
        bad = (ulps(got, want_res) > MAX_ULPS).any(axis=1)
        assert not bad.any(), (Z_SOFT[bad], Y_SOFT[bad], got[bad], want_res[bad])


@needs_mpmath
def test_the_old_softmax_link_fails_the_same_tolerance():
    """Negative control: on every row whose label leads by 37 or more, the old loss and the
    old residual of the label (0 there: the 1 + T of logsumexp has lost T) fail the same
    tolerance."""
    want_loss, want_res = _softmax_truth()
    loss, res = _old_softmax_link(Z_SOFT, Y_SOFT)
    rows = np.arange(len(SOFTMAX_ROWS))
    others = np.where(np.arange(N_CLASSES) == Y_SOFT[:, None], -np.inf, Z_SOFT)
    lead = Z_SOFT[rows, Y_SOFT] - others.max(axis=1)
    confident = lead >= 37
    assert confident.sum() >= 6
    assert (ulps(loss, want_loss)[confident] > MAX_ULPS).all()
    assert (ulps(res[rows, Y_SOFT], want_res[rows, Y_SOFT])[confident] > MAX_ULPS).all()


@pytest.mark.skipif(not gs.backends()["numba"], reason="needs numba")
def test_softmax_numpy_and_numba_agree_on_extreme_rows():
    """The two softmax kernels on rows far out (scores up to +-1000, confident and wrong rows):
    the same loss, gradient and Hessian-vector products to 1e-12."""
    from gradstep._backends import softmax_numba

    rng = np.random.default_rng(5)
    n, d, C = 400, 6, 5
    X = rng.standard_normal((n, d)) * 40.0
    labels = rng.integers(0, C, n).astype(np.int64)
    P = rng.standard_normal((3, C * (d + 1))) * 3.0
    SW = rng.uniform(0.0, 2.0, (n, 3))
    alpha = np.array([0.0, 0.1, 1.0])
    active = np.ones(3, np.uint8)
    for rows in (np.empty(0, np.int64), rng.permutation(n)[:150].astype(np.int64)):
        args = (X, labels, SW, P, alpha, rows, active, 2, None)
        want = softmax_reference.loss_grad(*args, n_classes=C)
        got = softmax_numba.loss_grad(*args, n_classes=C)
        for a, e in zip(got, want):
            np.testing.assert_allclose(a, e, rtol=1e-12, atol=1e-15)
    V = rng.standard_normal(P.shape)
    want = softmax_reference.hessp(X, SW, P, V, alpha, active, 2, n_classes=C)
    # the Hessian's sums mix signs (p_c (u_c - mean u)): an entry near 0 keeps the rounding of
    # the largest terms, summed in another order by each kernel; hence 1e-12 of the largest
    np.testing.assert_allclose(
        softmax_numba.hessp(X, SW, P, V, alpha, active, 2, n_classes=C), want, rtol=1e-12,
        atol=1e-12 * np.abs(want).max())


def test_sparse_reference_reuses_the_dense_link():
    """The CSR kernels take the dense kernels' link functions, not copies of them (the NumPy
    CSR specification is the dense one itself, link included)."""
    from gradstep._backends import reference

    assert sparse_reference.loss_grad is reference.loss_grad
    assert sparse_reference.hessp is reference.hessp
    if gs.backends()["numba"]:
        from gradstep._backends import numba as nb
        from gradstep._backends import sparse_numba

        assert sparse_numba._link is nb._link
        assert sparse_numba._hess_weight is nb._hess_weight
