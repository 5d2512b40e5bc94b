"""C++ multinomial kernels for CSR X: softmax_reference.py's contract in one pass over the
nonzeros, run by gradstep._core (sparse_kernel.hpp with softmax_link.hpp).

The CSR engine of sparse_cpp.py with each run's C classes as C consecutive runs (P's rows
(K, C (d + 1)) read as (K C, d + 1)): the C dot products of a row in one walk over its nonzeros,
the softmax link of softmax_reference.softmax_link over the row's C scores, the C residuals
scattered back in a second walk. Deterministic across n_threads as the binary kernels are.
Dense X has no C++ softmax kernel (the Numba one, with two BLAS products per block of rows,
serves "cpp" there).
"""

from __future__ import annotations

import numpy as np

from .. import _core
from .sparse_cpp import _NO_DENOMINATOR, _f64, _matrix, _per_run, _threads

__all__ = ["CHECKS_ROWS", "hessp", "loss_grad"]

# loss_grad and hessp take check_rows=True (sparse_cpp.CHECKS_ROWS): a matrix whose structure is
# not proven is checked row by row just before the kernel reads by its indices
CHECKS_ROWS = True


def loss_grad(X, labels, SW, P, alpha, rows, active, n_threads=None, denominator=None, *,
              n_classes, check_rows=False):
    """Loss (K,) and gradient (K, C (d + 1)) of the active runs (softmax_reference.loss_grad)."""
    P = _f64(P)
    n_runs = P.shape[0] if P.ndim == 2 else 0
    if denominator is None or np.size(denominator) == 0:
        den = _NO_DENOMINATOR
    else:
        den = _per_run(denominator, n_runs, "denominator")
    return _core.csr_softmax_loss_grad(
        *_matrix(X), np.ascontiguousarray(labels, dtype=np.int64), _f64(SW), P,
        _per_run(alpha, n_runs, "alpha"), np.ascontiguousarray(rows, dtype=np.int64),
        np.ascontiguousarray(active, dtype=np.uint8), _threads(n_threads), den, int(n_classes),
        bool(check_rows))


def hessp(X, SW, P, V, alpha, active, n_threads=None, *, n_classes, check_rows=False):
    """Hessian-vector products (K, C (d + 1)) of the active runs (softmax_reference.hessp)."""
    P = _f64(P)
    n_runs = P.shape[0] if P.ndim == 2 else 0
    return _core.csr_softmax_hessp(*_matrix(X), _f64(SW), P, _f64(V),
                                   _per_run(alpha, n_runs, "alpha"),
                                   np.ascontiguousarray(active, dtype=np.uint8),
                                   _threads(n_threads), int(n_classes), bool(check_rows))
