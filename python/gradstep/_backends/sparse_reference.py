"""Plain NumPy/SciPy CSR kernels: the executable specification of the sparse kernel contract.

The sparse contract is the dense one (state.py) with X a SciPy CSR matrix or array (csr_matrix,
csr_array) that ``gradstep.sparse.check_csr`` has accepted: data float32 or float64, indices and
indptr int32 or int64, indices sorted and unique within each row and in [0, n_features).

``loss_grad(X, Y, SW, P, alpha, rows, active, n_threads, denominator) -> (loss (K,), G (K, D))``
``hessp(X, SW, P, V, alpha, active, n_threads) -> HV (K, D)``

Every kernel module (this one, ``sparse_numba``, a future C++ one) has these two functions, so the
registry in ``gradstep.sparse`` (a dict backend -> module) can hand any of them to CSROracle.
Each run's linear predictor is z_ik = sum_j data[j] P[k, indices[j]] + P[k, d] over row i's
nonzeros in index order (SciPy's CSR mat-vec sums in that order too), then the dense kernels'
link, the same functions (reference.loss_and_residual, reference.hess_weight): no overflow and no
cancellation, so a confident row's tiny loss, residual and Hessian weight keep their relative
accuracy, and the CSR and dense results of the same matrix agree. Here each run is one ``X @ w``
and one ``X.T @ r``; the compiled kernels make one pass over the nonzeros for every run instead.

``structure_error(indptr, indices, n_cols)`` is the structural check of check_csr (the NumPy
version; ``sparse_numba`` has a compiled one that needs no temporaries).
"""

from __future__ import annotations

import numpy as np

from .reference import hess_weight, loss_and_residual

# structure_error codes: (code, row) with row the first offending row (-1 for the whole array)
OK, INDPTR_DECREASES, INDEX_OUT_OF_RANGE, NOT_CANONICAL = 0, 1, 2, 3


def _weights(SW: np.ndarray, k: int, m: int) -> np.ndarray:
    """Run k's weights over m rows: ones, the shared column, or the run's own column."""
    if SW.shape[1] == 0:
        return np.ones(m)
    return SW[:, 0 if SW.shape[1] == 1 else k]


def _as_f64(X):
    """X with float64 data (float32 widened per element: exact); X itself when already float64."""
    return X.astype(np.float64, copy=False)


def loss_grad(X, Y, SW, P, alpha, rows, active, n_threads=None, denominator=None):
    """Loss (K,) and gradient (K, D) of the runs marked active (see the module docstring)."""
    with np.errstate(over="ignore", invalid="ignore"):  # a diverging run overflows: reported
        return _loss_grad(X, Y, SW, P, alpha, rows, active, denominator)


def _loss_grad(X, Y, SW, P, alpha, rows, active, denominator):
    n_runs, n_params = P.shape
    d = n_params - 1
    loss = np.zeros(n_runs)
    grad = np.zeros((n_runs, n_params))
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size:
        X, Y, SW = X[rows], Y[rows], SW[rows]  # the batch's rows gathered from the CSR matrix
    m = X.shape[0]
    Xf = _as_f64(X)
    for k in np.flatnonzero(active):
        s = _weights(SW, k, m)
        total = s.sum()
        if denominator is not None and np.size(denominator):
            total = float(denominator[k])
        if m == 0 or total == 0.0:  # a run whose divisor is 0 comes back as zeros
            continue
        w, b = P[k, :d], P[k, d]
        y = Y[:, 0 if Y.shape[1] == 1 else k]
        z = np.asarray(Xf @ w).reshape(-1) + b
        loss_rows, residual = loss_and_residual(z, y)
        loss[k] = (s * loss_rows).sum() / total
        r = s * residual / total
        grad[k, :d] = np.asarray(Xf.T @ r).reshape(-1)
        grad[k, d] = r.sum()
        if alpha[k] != 0.0:  # with alpha == 0 the penalty is not computed at all
            loss[k] += 0.5 * alpha[k] * (w @ w)
            grad[k, :d] += alpha[k] * w
    return loss, grad


def hessp(X, SW, P, V, alpha, active, n_threads=None):
    """Hessian-vector products (K, D) of the runs marked active (see the module docstring)."""
    n_runs, n_params = P.shape
    d = n_params - 1
    out = np.zeros((n_runs, n_params))
    m = X.shape[0]
    Xf = _as_f64(X)
    with np.errstate(over="ignore", invalid="ignore"):
        for k in np.flatnonzero(active):
            s = _weights(SW, k, m)
            total = s.sum()
            if m == 0 or total == 0.0:
                continue
            h = hess_weight(np.asarray(Xf @ P[k, :d]).reshape(-1) + P[k, d])
            u = np.asarray(Xf @ V[k, :d]).reshape(-1) + V[k, d]  # x_i . v_k + v_kd
            r = s * h * u / total  # reference.hessp's operation order
            out[k, :d] = np.asarray(Xf.T @ r).reshape(-1) + alpha[k] * V[k, :d]
            out[k, d] = r.sum()
    return out


def structure_error(indptr: np.ndarray, indices: np.ndarray, n_cols: int) -> tuple[int, int]:
    """(code, row): OK, or the first problem of a CSR structure whose indptr has n_rows + 1
    entries starting at 0 and ending at most at len(indices): indptr decreasing, an index outside
    [0, n_cols), or a row whose indices are not strictly increasing (unsorted or duplicates)."""
    steps = np.diff(indptr)
    if (steps < 0).any():
        return INDPTR_DECREASES, int(np.argmax(steps < 0))
    nnz = int(indptr[-1])
    idx = indices[:nnz]
    if nnz == 0:
        return OK, -1
    bad = (idx < 0) | (idx >= n_cols)
    if bad.any():
        return INDEX_OUT_OF_RANGE, _row_of(indptr, int(np.argmax(bad)))
    # within a row, each index must exceed the one before; pairs that straddle a row start
    # (position j - 1, j with j a row start) do not count
    rising = idx[1:] > idx[:-1]
    starts = indptr[1:-1]
    starts = starts[(starts > 0) & (starts < nnz)]
    rising[starts - 1] = True
    if not rising.all():
        return NOT_CANONICAL, _row_of(indptr, int(np.argmax(~rising)) + 1)
    return OK, -1


def _row_of(indptr: np.ndarray, position: int) -> int:
    """The row that holds nonzero number ``position``."""
    return int(np.searchsorted(indptr, position, side="right")) - 1
