"""The compiled core: the same two functions as reference.py, run by gradstep._core.

A thin adapter: it picks the float32 or float64 instantiation from X.dtype and passes the arrays
as they are. The core takes them without conversion (a wrong dtype or layout raises TypeError
instead of being copied) and releases the GIL for the whole computation.
"""

from __future__ import annotations

import os

import numpy as np

from .. import _core  # an ImportError here tells the registry the core was not built

__all__ = ["loss_grad", "run"]

_LOSS_GRAD = {np.dtype(np.float32): _core.loss_grad_float32,
              np.dtype(np.float64): _core.loss_grad_float64}
_RUN = {np.dtype(np.float32): _core.run_float32, np.dtype(np.float64): _core.run_float64}


def _threads(n_threads) -> int:
    return (os.cpu_count() or 1) if n_threads is None else int(n_threads)


def _pick(table: dict, X: np.ndarray):
    try:
        return table[X.dtype]
    except KeyError:
        raise TypeError(f"X must be float32 or float64, got {X.dtype}") from None


def loss_grad(X, Y, sw, P, alpha, rows, active, n_threads=None):
    """Loss (K,) and gradient (K, D) of the runs marked active (see state.py for the contract)."""
    return _pick(_LOSS_GRAD, X)(X, Y, sw, P, float(alpha), rows, active, _threads(n_threads))


def run(X, Y, sw, spec, state, n_steps, n_threads=None) -> None:
    """Advance the running runs by up to n_steps iterations (see state.py for the contract)."""
    _pick(_RUN, X)(
        X, Y, sw, spec.rule_code, spec.sched_code, spec.hyper, float(spec.alpha),
        bool(spec.fit_intercept), float(spec.tol), int(spec.batch_size), int(spec.seed),
        int(spec.max_iter), int(spec.total_updates), bool(spec.record_history),
        bool(spec.has_reference), state.P, state.slots, state.grad, state.loss, state.t,
        state.n_iter, state.status, state.best_loss, state.no_improve, state.epoch,
        state.history, state.reference, int(n_steps), _threads(n_threads),
    )
