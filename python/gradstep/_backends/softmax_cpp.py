"""C++ multinomial kernels: softmax_reference.py's contract, run by gradstep._core.

Dense X (float32/float64, C-contiguous): softmax_kernel.hpp, per run and chunk of rows the
classes' scores as one register-tiled product (gemm_tiles.hpp), each row's softmax link
(softmax_link.hpp) four rows at a time, then the gradient sums as a second tiled product while the
chunk is in L1: X read once per gradient. CSR X:
sparse_kernel.hpp's engine with each run's C classes as C consecutive runs (P's rows
(K, C (d + 1)) read as (K C, d + 1)), one pass over the nonzeros. Both deterministic across
n_threads (fixed blocks, slots added in block order).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import _core
from .sparse_cpp import _denominator, _f64, _matrix, _params, _per_run, _threads

__all__ = ["CHECKS_ROWS", "SIDE_BY_SIDE", "curvature_run", "hessp", "loss_grad"]

# loss_grad and hessp take check_rows=True (sparse_cpp.CHECKS_ROWS): a matrix whose structure is
# not proven is checked row by row just before the kernel reads by its indices
CHECKS_ROWS = True

# the same as cpp.SIDE_BY_SIDE
SIDE_BY_SIDE = True


_DENSE = {np.dtype(np.float32): (_core.softmax_loss_grad_float32, _core.softmax_hessp_float32,
                                 _core.softmax_curvature_run_float32),
          np.dtype(np.float64): (_core.softmax_loss_grad_float64, _core.softmax_hessp_float64,
                                 _core.softmax_curvature_run_float64)}


def _dense(X, which: int):
    """The dense kernel (0: loss_grad, 1: hessp, 2: curvature_run) for X's dtype; X as the oracle
    checked it."""
    if X.dtype not in _DENSE or not X.flags.c_contiguous:
        raise ValueError(f"X must be a C-contiguous float32 or float64 array, got {X.dtype}")
    return _DENSE[X.dtype][which]


def loss_grad(X, labels, SW, P, alpha, rows, active, n_threads=None, denominator=None, *,
              n_classes, check_rows=False):
    """Loss (K,) and gradient (K, C (d + 1)) of the active runs (softmax_reference.loss_grad);
    ``check_rows`` (CSR only): see sparse_cpp.CHECKS_ROWS."""
    P, n_runs = _params(P)
    args = (np.ascontiguousarray(labels, dtype=np.int64), _f64(SW), P,
            _per_run(alpha, n_runs, "alpha"), np.ascontiguousarray(rows, dtype=np.int64),
            np.ascontiguousarray(active, dtype=np.uint8), _threads(n_threads),
            _denominator(denominator, n_runs), int(n_classes))
    if hasattr(X, "indptr"):
        return _core.csr_softmax_loss_grad(*_matrix(X), *args, bool(check_rows))
    return _dense(X, 0)(X, *args)


def hessp(X, SW, P, V, alpha, active, n_threads=None, *, n_classes, check_rows=False):
    """Hessian-vector products (K, C (d + 1)) of the active runs (softmax_reference.hessp)."""
    P, n_runs = _params(P)
    args = (_f64(SW), P, _f64(V), _per_run(alpha, n_runs, "alpha"),
            np.ascontiguousarray(active, dtype=np.uint8), _threads(n_threads), int(n_classes))
    if hasattr(X, "indptr"):
        return _core.csr_softmax_hessp(*_matrix(X), *args, bool(check_rows))
    return _dense(X, 1)(X, *args)


def curvature_run(oracle, spec, state, loop, n_steps) -> None:
    """Up to n_steps iterations of the fit's single lbfgs, armijo, bb or newton run on oracle's
    X (see cpp.curvature_run); a CSR X's structure must be proven (the loop reads by its
    indices unchecked)."""
    X = oracle.X
    args: tuple[Any, ...] = (
        np.ascontiguousarray(oracle.labels, dtype=np.int64), _f64(oracle.SW), spec, state, loop,
        int(n_steps), _threads(oracle.n_threads), int(oracle.n_classes))
    if hasattr(X, "indptr"):
        _core.csr_softmax_curvature_run(*_matrix(X), *args)
    else:
        _dense(X, 2)(X, *args)
