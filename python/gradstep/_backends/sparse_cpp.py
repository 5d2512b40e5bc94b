"""C++ CSR kernels: sparse_reference.py's contract, run by gradstep._core (sparse_kernel.hpp).

ONE pass over the nonzeros serves every active run, as in sparse_numba: per row the K dot products
in one walk over the row's nonzeros (the parameters read transposed, (D, K), so the K values of a
feature are contiguous), the dense kernels' cancellation-free link, then the K residuals scattered
back in a second walk of the same row. Rows are cut into blocks of fixed work (independent of the
thread count), each summed into its own slot, the slots added in block order: the same bits for
any number of threads. The GIL is released for the whole pass.

X's data, indices and indptr go to the core as they are (float32/float64 data, int32/int64
indices and indptr, as ``gradstep.sparse.check_csr`` accepted them): never copied. ``run`` is the
dense backend's compiled first-order fit loop (fit.hpp) over these kernels, for a matrix whose
structure is proven (the driver takes it only then: its passes check no row).
"""

from __future__ import annotations

import numpy as np

from .. import _core  # an ImportError here tells gradstep.sparse the C++ kernels are missing
from .._validate import cpu_count

__all__ = ["CHECKS_ROWS", "RUN_TAKES_L1", "SIDE_BY_SIDE", "curvature_run", "hessp", "loss_grad",
           "run", "structure_error"]

# run takes fits with an L1 term (cpp.RUN_TAKES_L1)
RUN_TAKES_L1 = True

# the same as cpp.SIDE_BY_SIDE
SIDE_BY_SIDE = True

# loss_grad and hessp take check_rows=True: each row's column indices checked just before the
# kernel reads by them (ValueError on a bad row), for a matrix whose structure is not proven
CHECKS_ROWS = True

_NO_DENOMINATOR = np.empty(0, dtype=np.float64)
_NO_DENOMINATOR.flags.writeable = False


def _threads(n_threads) -> int:
    return cpu_count() if n_threads is None else max(1, int(n_threads))


def _f64(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float64)


def _per_run(value, n_runs: int, name: str) -> np.ndarray:
    """value (a number or (n_runs,)) as one float64 per run. np.full rather than broadcast_to:
    this runs on every kernel call, and broadcast_to took ~20 us of a small fit's ~250 us
    iteration (iris, multinomial; both under a line profiler, which inflates them)."""
    a = np.asarray(value, dtype=np.float64)
    if a.ndim == 0:
        return np.full(n_runs, float(a))
    if a.ndim > 1 or a.size != n_runs:
        raise ValueError(f"{name} must have shape ({n_runs},), got {a.shape}")
    return np.ascontiguousarray(a)


def _params(P) -> tuple[np.ndarray, int]:
    """P as the core takes it (float64, C-contiguous) and its number of runs."""
    P = _f64(P)
    return P, (P.shape[0] if P.ndim == 2 else 0)


def _denominator(denominator, n_runs: int) -> np.ndarray:
    """Each run's divisor as the core takes it; an empty array for none (each run's sums are
    then divided by its weight of the rows used)."""
    if denominator is None or np.size(denominator) == 0:
        return _NO_DENOMINATOR
    return _per_run(denominator, n_runs, "denominator")


def _matrix(X) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(data, indices, indptr, n_cols) of a CSR matrix that check_csr accepted."""
    return X.data, X.indices, X.indptr, int(X.shape[1])


def structure_error(indptr: np.ndarray, indices: np.ndarray, n_cols: int,
                    n_threads: int = 1) -> tuple[int, int]:
    """sparse_reference.structure_error without temporaries: (code, first offending row); the
    screen of valid structures on up to n_threads threads (the same answer on any number)."""
    code, row = _core.csr_structure_error(np.ascontiguousarray(indptr),
                                          np.ascontiguousarray(indices), int(n_cols),
                                          int(n_threads))
    return int(code), int(row)


def loss_grad(X, Y, SW, P, alpha, rows, active, n_threads=None, denominator=None, *,
              check_rows=False):
    """Loss (K,) and gradient (K, D) of the runs marked active (see sparse_reference.py);
    ``check_rows``: see CHECKS_ROWS."""
    P, n_runs = _params(P)
    return _core.csr_loss_grad(
        *_matrix(X), _f64(Y), _f64(SW), P, _per_run(alpha, n_runs, "alpha"),
        np.ascontiguousarray(rows, dtype=np.int64), np.ascontiguousarray(active, dtype=np.uint8),
        _threads(n_threads), _denominator(denominator, n_runs), bool(check_rows))


def run(X, Y, SW, spec, state, n_steps, n_threads=None) -> None:
    """Advances the running runs of ``state`` in place by up to n_steps iterations (epochs with
    a batch size), as ``cpp.run`` does on a dense X. X's structure must be proven
    (``CSROracle.structure_proven``): the loop reads by its indices unchecked."""
    _core.csr_run(*_matrix(X), _f64(Y), _f64(SW), spec, state, int(n_steps), _threads(n_threads))


def curvature_run(oracle, spec, state, loop, n_steps) -> None:
    """Up to n_steps iterations of the fit's single lbfgs, armijo, bb or newton run on oracle's
    CSR X, as ``cpp.curvature_run`` does on a dense one. X's structure must be proven
    (``CSROracle.structure_proven``): the loop reads by its indices unchecked."""
    _core.csr_curvature_run(*_matrix(oracle.X), _f64(oracle.Y), _f64(oracle.SW), spec, state,
                            loop, int(n_steps), _threads(oracle.n_threads))


def hessp(X, SW, P, V, alpha, active, n_threads=None, *, check_rows=False):
    """Hessian-vector products (K, D) of the runs marked active (see sparse_reference.py);
    ``check_rows``: see CHECKS_ROWS."""
    P, n_runs = _params(P)
    return _core.csr_hessp(*_matrix(X), _f64(SW), P, _f64(V), _per_run(alpha, n_runs, "alpha"),
                           np.ascontiguousarray(active, dtype=np.uint8), _threads(n_threads),
                           bool(check_rows))

