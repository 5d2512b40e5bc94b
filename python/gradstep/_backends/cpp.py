"""The compiled core: the kernel contract of state.py, run by gradstep._core.

A thin adapter: it picks the float32 or float64 instantiation from X.dtype and passes the arrays
(and the RunSpec / FitState objects, whose named attributes the core reads itself) as they are.
The core takes them without conversion (a wrong dtype or layout raises TypeError instead of being
copied) and releases the GIL for the whole computation.
"""

from __future__ import annotations

import numpy as np

from .. import _core  # an ImportError here tells the registry the core was not built
from .._validate import cpu_count

__all__ = ["RUN_TAKES_L1", "SIDE_BY_SIDE", "curvature_run", "hessp", "loss_grad", "run"]

# run takes fits with an L1 term (spec.l1, spec.penalized): a proximal step after each update
RUN_TAKES_L1 = True

# run and curvature_run release the GIL and, on one thread, share no state with other calls:
# driver.SplitDriver runs its groups' compiled loops side by side, one thread each
SIDE_BY_SIDE = True

_LOSS_GRAD = {np.dtype(np.float32): _core.loss_grad_float32,
              np.dtype(np.float64): _core.loss_grad_float64}
_HESSP = {np.dtype(np.float32): _core.hessp_float32, np.dtype(np.float64): _core.hessp_float64}
_RUN = {np.dtype(np.float32): _core.run_float32, np.dtype(np.float64): _core.run_float64}
_CURVATURE = {np.dtype(np.float32): _core.curvature_run_float32,
              np.dtype(np.float64): _core.curvature_run_float64}
_NO_DENOMINATOR = np.empty(0, dtype=np.float64)
_NO_DENOMINATOR.flags.writeable = False


def _threads(n_threads) -> int:
    return cpu_count() if n_threads is None else int(n_threads)


def _pick(table: dict, X: np.ndarray):
    try:
        return table[X.dtype]
    except KeyError:
        raise TypeError(f"X must be float32 or float64, got {X.dtype}") from None


def loss_grad(X, Y, SW, P, alpha, rows, active, n_threads=None, denominator=None):
    """Loss (K,) and gradient (K, D) of the runs marked active (see state.py for the contract)."""
    den = _NO_DENOMINATOR if denominator is None else denominator
    return _pick(_LOSS_GRAD, X)(X, Y, SW, P, alpha, rows, active, _threads(n_threads), den)


def hessp(X, SW, P, V, alpha, active, n_threads=None):
    """Hessian-vector products (K, D) of the runs marked active (see state.py for the contract)."""
    return _pick(_HESSP, X)(X, SW, P, V, alpha, active, _threads(n_threads))


def run(X, Y, SW, spec, state, n_steps, n_threads=None) -> None:
    """Advance the running runs by up to n_steps iterations (see state.py for the contract)."""
    _pick(_RUN, X)(X, Y, SW, spec, state, int(n_steps), _threads(n_threads))


def curvature_run(oracle, spec, state, loop, n_steps) -> None:
    """Up to n_steps iterations of the fit's single lbfgs, armijo, bb or newton run
    (``loop.kind``) on oracle's X (lbfgs_loop.hpp, backtrack_loop.hpp; ``loop`` is the
    driver.CompiledCurvatureDriver that holds the run's arrays between calls; with spec.l1 > 0,
    OWL-QN or armijo's proximal steps over the parameters ``spec.penalized`` marks)."""
    _pick(_CURVATURE, oracle.X)(oracle.X, oracle.Y, oracle.SW, spec, state, loop, int(n_steps),
                                _threads(oracle.n_threads))
