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
accuracy, and the CSR and dense results of the same matrix agree. ``loss_grad`` and ``hessp`` ARE
the dense specification's (reference.py), which takes a SciPy X as it is: each run is one
``X @ w`` and one ``X.T @ r``; the compiled kernels make one pass over the nonzeros for every run
instead.

``structure_error(indptr, indices, n_cols)`` is the structural check of check_csr (the NumPy
version; ``sparse_numba`` has a compiled one that needs no temporaries).
"""

from __future__ import annotations

import numpy as np

from .reference import hessp, loss_grad  # noqa: F401  (the dense specification, CSR-ready)

# structure_error codes: (code, row) with row the first offending row (-1 for the whole array)
OK, INDPTR_DECREASES, INDEX_OUT_OF_RANGE, NOT_CANONICAL = 0, 1, 2, 3


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
