# mypy: disable-error-code="call-overload,attr-defined"
"""Numba multinomial kernels for CSR X: softmax_reference.py's contract in one pass over the
nonzeros (an optional dependency; softmax_cpp.py is the C++ version of the same pass).

sparse_numba's pass with each run's C classes as C consecutive runs (P's rows (K, C (d + 1))
read as (K C, d + 1)): per row the C dot products of every run in one walk over its nonzeros
(sparse_numba._row_dots), the softmax link over the row's C scores (_link_row: the reference's
pivot and T, so a confident row keeps its tiny loss to full relative accuracy), and the C
residuals scattered back (sparse_numba._scatter). The same blocks, slots and block-order
reduction as sparse_numba: the same bits for any number of threads.
"""

from __future__ import annotations

import numba
import numpy as np

from . import numba as _dense
from . import sparse_numba as _sparse
from .numba import _add_l2, _runs_to_do, _source_hash, _weight_totals
from .numba_rules import JIT as _JIT
from .sparse_numba import (
    _PARALLEL_WORK,
    _as_f64,
    _n_slots,
    _partition,
    _per_run,
    _reduce_parallel,
    _reduce_serial,
    _row_dot_pairs,
    _row_dots,
    _scatter,
    _Threads,
    _transposed,
)

__all__ = ["hessp", "loss_grad"]


@numba.njit(**_JIT)
def _leader(t, C):
    """The first class with the largest score (a NaN propagates through the exps anyway)."""
    lead = 0
    for c in range(1, C):
        if t[c] > t[lead]:
            lead = c
    return lead


@numba.njit(**_JIT)
def _softmax_from(t, C, j):
    """t = softmax(t) measured from the pivot j (every exponent <= 0 when j leads); returns
    T = sum_{c != j} exp(t_c - t_j), kept apart from the 1 (softmax_reference.softmax_from)."""
    tj = t[j]
    T = 0.0
    for c in range(C):
        e = 0.0 if c == j else np.exp(t[c] - tj)
        t[c] = e
        T += e
    S = 1.0 + T
    for c in range(C):
        t[c] = t[c] / S
    t[j] = 1.0 / S
    return T


@numba.njit(**_JIT)
def _link_row(t, C, y):
    """Over a row's scores t (intercepts included) with label y: t becomes the residuals
    softmax(t) - onehot(y); returns the loss logsumexp(t) - t_y (softmax_reference.softmax_link's
    operations: the label's residual -T / (1 + T) when it is the pivot)."""
    lead = _leader(t, C)
    j = y if t[y] >= t[lead] else lead
    gap = t[j] - t[y]
    T = _softmax_from(t, C, j)
    t[y] = -T / (1.0 + T) if j == y else t[y] - 1.0
    return gap + np.log1p(T)


@numba.njit(**_JIT)
def _block(data, indices, indptr, labels, SW, PT, act, C, rows, start, stop, acc):
    """Positions start..stop-1 of rows (rows of X when rows is empty) into acc (d + 2, Ka): per
    class column the gradient sums, the intercept's (row d) and, in each run's first class, the
    loss sum (row d + 1)."""
    ka = act.size
    d = PT.shape[0] - 1
    use_rows = rows.size > 0
    ks = SW.shape[1]
    for c in range(d + 2):
        for a in range(ka):
            acc[c, a] = 0.0
    z = np.empty(ka)
    r = np.empty(ka)
    t = np.empty(C)
    for pos in range(start, stop):
        i = rows[pos] if use_rows else pos
        lo = np.uint64(indptr[i])
        hi = np.uint64(indptr[i + 1])
        _row_dots(data, indices, lo, hi, PT, z)
        s_row = 1.0 if ks == 0 else SW[i, 0]
        for a0 in range(0, ka, C):
            s = s_row if ks <= 1 else SW[i, act[a0] // C]  # Ks == K: the run's own column
            for c in range(C):
                t[c] = z[a0 + c] + PT[d, a0 + c]
            acc[d + 1, a0] += s * _link_row(t, C, labels[i])
            for c in range(C):
                r[a0 + c] = s * t[c]
                acc[d, a0 + c] += r[a0 + c]
        _scatter(data, indices, lo, hi, r, acc)


@numba.njit(parallel=True, **_JIT)
def _blocks_parallel(data, indices, indptr, labels, SW, PT, act, C, rows, starts, first, m, buf):
    for b in numba.prange(m):
        _block(data, indices, indptr, labels, SW, PT, act, C, rows, starts[first + b],
               starts[first + b + 1], buf[b])


@numba.njit(**_JIT)
def _blocks_serial(data, indices, indptr, labels, SW, PT, act, C, rows, starts, first, m, buf):
    for b in range(m):
        _block(data, indices, indptr, labels, SW, PT, act, C, rows, starts[first + b],
               starts[first + b + 1], buf[b])


@numba.njit(**_JIT)
def _class_runs(SW, rows, n_rows, active, denominator, C):
    """(total (K C,), act): each class column's divisor (its run's weight of the rows, or the
    run's denominator) and the class columns to compute, runs' C columns together."""
    n_runs = active.size
    run_total = np.empty(n_runs)
    if denominator.size > 0:
        run_total[:] = denominator
    else:
        _weight_totals(SW, rows, n_rows, run_total)
    total = np.empty(n_runs * C)
    wanted = np.empty(n_runs * C, dtype=np.uint8)
    for k in range(n_runs):
        for c in range(C):
            total[k * C + c] = run_total[k]
            wanted[k * C + c] = active[k]
    return total, _runs_to_do(wanted, total)


@numba.njit(**_JIT)
def _loss_grad_entry(data, indices, indptr, labels, SW, P, alpha, C, rows, active, denominator,
                     threads, loss, grad):
    n_runs = P.shape[0]
    Q = P.reshape(n_runs * C, -1)  # class rows (w_c, b_c)
    G = grad.reshape(n_runs * C, -1)
    n_params = Q.shape[1]
    d = n_params - 1
    n_rows = rows.size if rows.size > 0 else indptr.size - 1
    total, act = _class_runs(SW, rows, n_rows, active, denominator, C)
    if act.size == 0 or n_rows == 0:
        return
    ka = act.size
    PT = _transposed(Q, act)
    starts, work = _partition(indptr, rows, n_rows, n_params)
    n_blocks = starts.size - 1
    parallel = threads > 1 and n_blocks > 1 and work * ka > _PARALLEL_WORK
    n_slots = _n_slots(n_blocks, (d + 2) * ka, threads)
    buf = np.empty((n_slots, d + 2, ka))
    out = np.zeros((d + 2, ka))
    for first in range(0, n_blocks, n_slots):  # slots added in block order: thread-independent
        m = min(n_slots, n_blocks - first)
        if parallel:
            _blocks_parallel(data, indices, indptr, labels, SW, PT, act, C, rows, starts, first,
                             m, buf)
            _reduce_parallel(buf, m, out)
        else:
            _blocks_serial(data, indices, indptr, labels, SW, PT, act, C, rows, starts, first, m,
                           buf)
            _reduce_serial(buf, m, out)
    for a in range(ka):
        q = act[a]  # class column q: run q // C
        k = q // C
        loss[k] += out[d + 1, a] / total[q]
        for j in range(n_params):
            G[q, j] = out[j, a] / total[q]
        if alpha[k] != 0.0:  # with alpha == 0 the penalty is not computed at all
            loss[k] += _add_l2(Q[q], alpha[k], d, G[q])


@numba.njit(**_JIT)
def _hv_block(data, indices, indptr, SW, PT, VT, act, C, start, stop, acc):
    """Rows start..stop-1 into acc (d + 1, Ka): sum s p_c (u_c - sum_c' p_c' u_c') (x, 1) per
    class column (softmax_reference.hessp's order), z and u in one walk over the row."""
    ka = act.size
    d = PT.shape[0] - 1
    ks = SW.shape[1]
    for c in range(d + 1):
        for a in range(ka):
            acc[c, a] = 0.0
    z = np.empty(ka)
    u = np.empty(ka)
    t = np.empty(C)
    for i in range(start, stop):
        lo = np.uint64(indptr[i])
        hi = np.uint64(indptr[i + 1])
        _row_dot_pairs(data, indices, lo, hi, PT, VT, z, u)
        s_row = 1.0 if ks == 0 else SW[i, 0]
        for a0 in range(0, ka, C):
            s = s_row if ks <= 1 else SW[i, act[a0] // C]
            for c in range(C):
                t[c] = z[a0 + c] + PT[d, a0 + c]
                u[a0 + c] += VT[d, a0 + c]
            _softmax_from(t, C, _leader(t, C))
            mean = 0.0
            for c in range(C):
                mean += t[c] * u[a0 + c]
            for c in range(C):
                u[a0 + c] = s * t[c] * (u[a0 + c] - mean)
                acc[d, a0 + c] += u[a0 + c]
        _scatter(data, indices, lo, hi, u, acc)


@numba.njit(parallel=True, **_JIT)
def _hv_blocks_parallel(data, indices, indptr, SW, PT, VT, act, C, starts, first, m, buf):
    for b in numba.prange(m):
        _hv_block(data, indices, indptr, SW, PT, VT, act, C, starts[first + b],
                  starts[first + b + 1], buf[b])


@numba.njit(**_JIT)
def _hv_blocks_serial(data, indices, indptr, SW, PT, VT, act, C, starts, first, m, buf):
    for b in range(m):
        _hv_block(data, indices, indptr, SW, PT, VT, act, C, starts[first + b],
                  starts[first + b + 1], buf[b])


@numba.njit(**_JIT)
def _hessp_entry(data, indices, indptr, SW, P, V, alpha, C, active, threads, out):
    n_runs = P.shape[0]
    Q = P.reshape(n_runs * C, -1)
    W = V.reshape(n_runs * C, -1)
    H = out.reshape(n_runs * C, -1)
    n_params = Q.shape[1]
    d = n_params - 1
    n_rows = indptr.size - 1
    no_rows = np.empty(0, dtype=np.int64)
    total, act = _class_runs(SW, no_rows, n_rows, active, np.empty(0), C)
    if act.size == 0 or n_rows == 0:
        return
    ka = act.size
    PT = _transposed(Q, act)
    VT = _transposed(W, act)
    starts, work = _partition(indptr, no_rows, n_rows, n_params)
    n_blocks = starts.size - 1
    parallel = threads > 1 and n_blocks > 1 and 2 * work * ka > _PARALLEL_WORK
    n_slots = _n_slots(n_blocks, (d + 1) * ka, threads)
    buf = np.empty((n_slots, d + 1, ka))
    acc = np.zeros((d + 1, ka))
    for first in range(0, n_blocks, n_slots):
        m = min(n_slots, n_blocks - first)
        if parallel:
            _hv_blocks_parallel(data, indices, indptr, SW, PT, VT, act, C, starts, first, m, buf)
            _reduce_parallel(buf, m, acc)
        else:
            _hv_blocks_serial(data, indices, indptr, SW, PT, VT, act, C, starts, first, m, buf)
            _reduce_serial(buf, m, acc)
    for a in range(ka):
        q = act[a]
        k = q // C
        for j in range(n_params):
            H[q, j] = acc[j, a] / total[q]
        for j in range(d):
            H[q, j] += alpha[k] * W[q, j]


# ---- the contract (softmax_reference.py) ----------------------------------------------------


def _check(X, labels, SW, P, n_classes: int) -> None:
    """The mismatches that compiled code would turn into reads past the end of an array."""
    n, d = X.shape
    if n_classes < 2:
        raise ValueError(f"n_classes must be at least 2, got {n_classes}")
    if P.ndim != 2 or P.shape[1] != n_classes * (d + 1):
        raise ValueError(f"P must have shape (K, n_classes (d + 1)) = (K, "
                         f"{n_classes * (d + 1)}), got {P.shape}")
    if X.indptr.size != n + 1:
        raise ValueError(f"X.indptr must have {n + 1} entries, got {X.indptr.size}")
    if SW.ndim != 2 or SW.shape[0] != n or SW.shape[1] not in (0, 1, P.shape[0]):
        raise ValueError(f"SW must have shape ({n}, Ks) with Ks in (0, 1, {P.shape[0]}), got "
                         f"{SW.shape}")
    if labels is None:
        return
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {labels.shape}")
    bad = np.flatnonzero((labels < 0) | (labels >= n_classes))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"labels[{i}] = {labels[i]} is out of range [0, {n_classes})")


def loss_grad(X, labels, SW, P, alpha, rows, active, n_threads=None, denominator=None, *,
              n_classes):
    """Loss (K,) and gradient (K, C (d + 1)) of the active runs (softmax_reference.loss_grad)."""
    P, SW = _as_f64(P), _as_f64(SW)
    labels = np.ascontiguousarray(labels, np.int64)
    _check(X, labels, SW, P, int(n_classes))
    n_runs = P.shape[0]
    rows = np.ascontiguousarray(rows, np.int64)
    if rows.size and (rows.min() < 0 or rows.max() >= X.shape[0]):
        raise ValueError(f"rows must lie in [0, {X.shape[0]})")
    if denominator is None or np.size(denominator) == 0:
        denominator = np.empty(0)
    else:
        denominator = _per_run(denominator, n_runs, "denominator")
    loss = np.zeros(n_runs)
    grad = np.zeros(P.shape)
    with _Threads(n_threads) as threads:
        _loss_grad_entry(X.data, X.indices, X.indptr, labels, SW, P,
                         _per_run(alpha, n_runs, "alpha"), int(n_classes), rows,
                         np.ascontiguousarray(active, np.uint8), denominator, threads.n, loss,
                         grad)
    return loss, grad


def hessp(X, SW, P, V, alpha, active, n_threads=None, *, n_classes):
    """Hessian-vector products (K, C (d + 1)) of the active runs (softmax_reference.hessp)."""
    P, V, SW = _as_f64(P), _as_f64(V), _as_f64(SW)
    _check(X, None, SW, P, int(n_classes))
    if V.shape != P.shape:
        raise ValueError(f"V must have the shape of P {P.shape}, got {V.shape}")
    out = np.zeros(P.shape)
    with _Threads(n_threads) as threads:
        _hessp_entry(X.data, X.indices, X.indptr, SW, P, V, _per_run(alpha, P.shape[0], "alpha"),
                     int(n_classes), np.ascontiguousarray(active, np.uint8), threads.n, out)
    return out


# ---- numba's cache and the modules compiled in ----------------------------------------------
# As in sparse_numba: the kernels above compile in numba.py's and sparse_numba.py's functions,
# which numba's cache does not watch; when either file changed since the cache was built, every
# kernel here has its cache dropped.
_SOURCES = _source_hash(_dense) ^ (_source_hash(_sparse) << 1)


@numba.njit(**_JIT)
def _sources_compiled():
    return _SOURCES  # a global is frozen into the compiled (and cached) code


if _sources_compiled() != _SOURCES:
    for _fn in (_sources_compiled, _leader, _softmax_from, _link_row, _block, _blocks_parallel,
                _blocks_serial, _class_runs, _loss_grad_entry, _hv_block, _hv_blocks_parallel,
                _hv_blocks_serial, _hessp_entry):
        _fn.recompile()  # drops the function's cache entries; recompiled on the next call
