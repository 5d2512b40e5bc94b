# mypy: disable-error-code="call-overload,attr-defined"
"""Numba CSR kernels: sparse_reference.py's contract, compiled (an optional dependency).

ONE pass over the nonzeros serves every active run. Per row i, for each active run k:
z_k = sum_j data[j] P[k, indices[j]] + P[k, d] (the nonzeros in index order, one accumulator:
the order of SciPy's mat-vec), the dense Numba kernels' link (numba._link and
numba._hess_weight, the same compiled functions: no overflow, no cancellation), then the row's
residuals scattered into the gradient sums. The parameters are read transposed, PT (D, Ka)
for the Ka active runs, and the sums are kept as (D + 2, Ka) (gradient, intercept, loss), so one
nonzero touches one contiguous row of Ka values in each: no dense n x d or d x K temporary.

Rows are cut into blocks of about the same work (nonzeros + 1 per row, at least
max(2**14, 8 D)); the cut depends on the matrix, the rows asked for and D only, never on the
thread count. Each block sums into its own slot and the slots are added in block order (in
parallel over columns, each column in block order), so results are the same, bit for bit, with
any number of threads.
"""

from __future__ import annotations

import numba
import numpy as np

from . import numba as _dense
from .numba import _add_l2, _hess_weight, _link, _runs_to_do, _source_hash, _weight_totals
from .numba import _check_shapes as _check_dense_shapes
from .numba_rules import JIT as _JIT
from .sparse_reference import INDEX_OUT_OF_RANGE, INDPTR_DECREASES, NOT_CANONICAL, OK

_MIN_BLOCK_WORK = 2**14  # a block holds at least this many nonzeros + rows ...
_WORK_PER_PARAM = 8  # ... and at least this many per parameter (zeroing and adding its slot)
_PARALLEL_WORK = 100_000  # (nonzeros + rows) * active runs below which one thread does the pass
_BUFFER_BYTES = 64 * 2**20  # cap on the per-block partial sums held at once
_REDUCE_CHUNK = 256  # columns per task when the slots are added


# ---- the structure check of gradstep.sparse.check_csr ---------------------------------------


@numba.njit(**_JIT)
def structure_error(indptr, indices, n_cols):
    """sparse_reference.structure_error without temporaries: (code, first offending row)."""
    n_rows = indptr.size - 1
    for i in range(n_rows):
        if indptr[i + 1] < indptr[i]:
            return INDPTR_DECREASES, i
    for i in range(n_rows):
        previous = -1
        for j in range(indptr[i], indptr[i + 1]):
            c = indices[j]
            if c < 0 or c >= n_cols:
                return INDEX_OUT_OF_RANGE, i
            if c <= previous:
                return NOT_CANONICAL, i
            previous = c
    return OK, -1


# ---- blocks, slots and their sum ------------------------------------------------------------


@numba.njit(**_JIT)
def _partition(indptr, rows, n_rows, n_params):
    """(block starts (n_blocks + 1,), total work): consecutive positions of rows (or rows of X
    when rows is empty) whose work (nonzeros + 1 per row) reaches the target."""
    target = max(_MIN_BLOCK_WORK, _WORK_PER_PARAM * n_params)
    use_rows = rows.size > 0
    starts = np.empty(n_rows + 1, dtype=np.int64)
    starts[0] = 0
    n_blocks = 0
    work = 0
    total = 0
    for pos in range(n_rows):
        i = rows[pos] if use_rows else pos
        w = np.int64(indptr[i + 1]) - np.int64(indptr[i]) + 1
        work += w
        total += w
        if work >= target:
            n_blocks += 1
            starts[n_blocks] = pos + 1
            work = 0
    if starts[n_blocks] < n_rows:
        n_blocks += 1
        starts[n_blocks] = n_rows
    return starts[: n_blocks + 1], total


@numba.njit(parallel=True, **_JIT)
def _reduce_parallel(buf, m, out):
    """out += buf[0] + ... + buf[m - 1], each entry in block order; tasks are column chunks."""
    n_cols, ka = out.shape
    n_chunks = (n_cols + _REDUCE_CHUNK - 1) // _REDUCE_CHUNK
    for t in numba.prange(n_chunks):
        lo = t * _REDUCE_CHUNK
        hi = min(lo + _REDUCE_CHUNK, n_cols)
        for b in range(m):
            for c in range(lo, hi):
                for a in range(ka):
                    out[c, a] += buf[b, c, a]


@numba.njit(**_JIT)
def _reduce_serial(buf, m, out):
    n_cols, ka = out.shape
    for b in range(m):
        for c in range(n_cols):
            for a in range(ka):
                out[c, a] += buf[b, c, a]


@numba.njit(**_JIT)
def _n_slots(n_blocks, n_values, threads):
    """How many block slots of n_values float64 are held at once (any number gives the same
    bits: the slots are added in block order)."""
    return max(1, min(n_blocks, max(threads, _BUFFER_BYTES // (8 * n_values))))


@numba.njit(**_JIT)
def _transposed(P, act):
    """PT (D, Ka): the active runs' parameters, one row per parameter."""
    n_params = P.shape[1]
    PT = np.empty((n_params, act.size))
    for a in range(act.size):
        k = act[a]
        for j in range(n_params):
            PT[j, a] = P[k, j]
    return PT


@numba.njit(**_JIT)
def _row_dots(data, indices, lo, hi, PT, z):
    """z[a] = sum_j data[j] PT[indices[j], a] over j = lo..hi-1, for every column a of PT: each a
    single sum in index order (the contract's order). The runs are taken 8, then 4, then 1 at a
    time so that their sums stay in registers across the row (an array of sums would be stored
    and reloaded at every nonzero). lo, hi and the indices are unsigned: numba then skips the
    wraparound of negative indices (check_csr proved every index in [0, d))."""
    ka = PT.shape[1]
    a = 0
    while a + 8 <= ka:
        z0 = z1 = z2 = z3 = z4 = z5 = z6 = z7 = 0.0
        for j in range(lo, hi):
            x = np.float64(data[j])
            c = np.uint64(indices[j])
            z0 += x * PT[c, a]
            z1 += x * PT[c, a + 1]
            z2 += x * PT[c, a + 2]
            z3 += x * PT[c, a + 3]
            z4 += x * PT[c, a + 4]
            z5 += x * PT[c, a + 5]
            z6 += x * PT[c, a + 6]
            z7 += x * PT[c, a + 7]
        z[a], z[a + 1], z[a + 2], z[a + 3] = z0, z1, z2, z3
        z[a + 4], z[a + 5], z[a + 6], z[a + 7] = z4, z5, z6, z7
        a += 8
    while a + 4 <= ka:
        z0 = z1 = z2 = z3 = 0.0
        for j in range(lo, hi):
            x = np.float64(data[j])
            c = np.uint64(indices[j])
            z0 += x * PT[c, a]
            z1 += x * PT[c, a + 1]
            z2 += x * PT[c, a + 2]
            z3 += x * PT[c, a + 3]
        z[a], z[a + 1], z[a + 2], z[a + 3] = z0, z1, z2, z3
        a += 4
    while a < ka:
        z0 = 0.0
        for j in range(lo, hi):
            z0 += np.float64(data[j]) * PT[np.uint64(indices[j]), a]
        z[a] = z0
        a += 1


@numba.njit(**_JIT)
def _row_dot_pairs(data, indices, lo, hi, PT, VT, z, u):
    """_row_dots of PT into z and of VT into u in the same walk over the row (4 runs, then 1,
    at a time)."""
    ka = PT.shape[1]
    a = 0
    while a + 4 <= ka:
        z0 = z1 = z2 = z3 = 0.0
        u0 = u1 = u2 = u3 = 0.0
        for j in range(lo, hi):
            x = np.float64(data[j])
            c = np.uint64(indices[j])
            z0 += x * PT[c, a]
            z1 += x * PT[c, a + 1]
            z2 += x * PT[c, a + 2]
            z3 += x * PT[c, a + 3]
            u0 += x * VT[c, a]
            u1 += x * VT[c, a + 1]
            u2 += x * VT[c, a + 2]
            u3 += x * VT[c, a + 3]
        z[a], z[a + 1], z[a + 2], z[a + 3] = z0, z1, z2, z3
        u[a], u[a + 1], u[a + 2], u[a + 3] = u0, u1, u2, u3
        a += 4
    while a < ka:
        z0 = 0.0
        u0 = 0.0
        for j in range(lo, hi):
            x = np.float64(data[j])
            c = np.uint64(indices[j])
            z0 += x * PT[c, a]
            u0 += x * VT[c, a]
        z[a] = z0
        u[a] = u0
        a += 1


@numba.njit(**_JIT)
def _scatter(data, indices, lo, hi, r, acc):
    """acc[indices[j], a] += r[a] data[j] for j = lo..hi-1 and every a (one contiguous row of
    acc per nonzero)."""
    ka = r.size
    if ka == 1:  # one run: no inner loop
        r0 = r[0]
        for j in range(lo, hi):
            acc[np.uint64(indices[j]), 0] += r0 * np.float64(data[j])
        return
    for j in range(lo, hi):
        x = np.float64(data[j])
        c = np.uint64(indices[j])
        for a in range(ka):
            acc[c, a] += r[a] * x


# ---- loss and gradient ----------------------------------------------------------------------


@numba.njit(**_JIT)
def _block(data, indices, indptr, Y, SW, PT, act, rows, start, stop, acc):
    """Positions start..stop-1 of rows (rows of X when rows is empty) into acc (d + 2, Ka):
    acc[:d] = sum s (sigmoid(z) - y) x, acc[d] = sum s (sigmoid(z) - y) (the intercept),
    acc[d + 1] = sum s (log(1 + exp(z)) - y z), both terms from numba._link."""
    ka = act.size
    d = PT.shape[0] - 1
    use_rows = rows.size > 0
    ks = SW.shape[1]
    shared_y = Y.shape[1] == 1
    for c in range(d + 2):
        for a in range(ka):
            acc[c, a] = 0.0
    z = np.empty(ka)
    r = np.empty(ka)
    for pos in range(start, stop):
        i = rows[pos] if use_rows else pos
        lo = np.uint64(indptr[i])
        hi = np.uint64(indptr[i + 1])
        _row_dots(data, indices, lo, hi, PT, z)
        s_row = 1.0 if ks == 0 else SW[i, 0]
        for a in range(ka):
            k = act[a]
            s = s_row if ks <= 1 else SW[i, k]  # Ks == K: run k's own column
            zz = z[a] + PT[d, a]
            y = Y[i, 0] if shared_y else Y[i, k]
            loss, residual = _link(zz, y)  # reference.loss_and_residual, one element
            acc[d + 1, a] += s * loss
            r[a] = s * residual
            acc[d, a] += r[a]
        _scatter(data, indices, lo, hi, r, acc)


@numba.njit(parallel=True, **_JIT)
def _blocks_parallel(data, indices, indptr, Y, SW, PT, act, rows, starts, first, m, buf):
    for b in numba.prange(m):
        _block(data, indices, indptr, Y, SW, PT, act, rows, starts[first + b],
               starts[first + b + 1], buf[b])


@numba.njit(**_JIT)
def _blocks_serial(data, indices, indptr, Y, SW, PT, act, rows, starts, first, m, buf):
    for b in range(m):
        _block(data, indices, indptr, Y, SW, PT, act, rows, starts[first + b],
               starts[first + b + 1], buf[b])


@numba.njit(**_JIT)
def _loss_grad_entry(data, indices, indptr, Y, SW, P, alpha, rows, active, denominator,
                     threads, loss, grad):
    n_runs, n_params = P.shape
    d = n_params - 1
    n_rows = rows.size if rows.size > 0 else indptr.size - 1
    total = np.empty(n_runs)
    if denominator.size > 0:
        total[:] = denominator
    else:
        _weight_totals(SW, rows, n_rows, total)
    act = _runs_to_do(active, total)
    if act.size == 0 or n_rows == 0:
        return
    ka = act.size
    PT = _transposed(P, act)
    starts, work = _partition(indptr, rows, n_rows, n_params)
    n_blocks = starts.size - 1
    parallel = threads > 1 and n_blocks > 1 and work * ka > _PARALLEL_WORK
    n_slots = _n_slots(n_blocks, (d + 2) * ka, threads)
    buf = np.empty((n_slots, d + 2, ka))
    out = np.zeros((d + 2, ka))
    for first in range(0, n_blocks, n_slots):  # slots added in block order: thread-independent
        m = min(n_slots, n_blocks - first)
        if parallel:
            _blocks_parallel(data, indices, indptr, Y, SW, PT, act, rows, starts, first, m, buf)
            _reduce_parallel(buf, m, out)
        else:
            _blocks_serial(data, indices, indptr, Y, SW, PT, act, rows, starts, first, m, buf)
            _reduce_serial(buf, m, out)
    for a in range(ka):
        k = act[a]
        loss[k] = out[d + 1, a] / total[k]
        for j in range(n_params):
            grad[k, j] = out[j, a] / total[k]
        if alpha[k] != 0.0:  # with alpha == 0 the penalty is not computed at all
            loss[k] += _add_l2(P[k], alpha[k], d, grad[k])


# ---- Hessian-vector products ----------------------------------------------------------------


@numba.njit(**_JIT)
def _hv_block(data, indices, indptr, SW, PT, VT, act, start, stop, acc):
    """Rows start..stop-1 into acc (d + 1, Ka): acc = sum s sigma (1 - sigma) u (x, 1) (the
    weight from numba._hess_weight) with
    z = x . P[k, :d] + P[k, d], u = x . V[k, :d] + V[k, d]: both dot products in one walk."""
    ka = act.size
    d = PT.shape[0] - 1
    ks = SW.shape[1]
    for c in range(d + 1):
        for a in range(ka):
            acc[c, a] = 0.0
    z = np.empty(ka)
    u = np.empty(ka)
    for i in range(start, stop):
        lo = np.uint64(indptr[i])
        hi = np.uint64(indptr[i + 1])
        _row_dot_pairs(data, indices, lo, hi, PT, VT, z, u)
        s_row = 1.0 if ks == 0 else SW[i, 0]
        for a in range(ka):
            s = s_row if ks <= 1 else SW[i, act[a]]
            zz = z[a] + PT[d, a]
            u[a] = s * _hess_weight(zz) * (u[a] + VT[d, a])  # reference.hessp's order
            acc[d, a] += u[a]
        _scatter(data, indices, lo, hi, u, acc)


@numba.njit(parallel=True, **_JIT)
def _hv_blocks_parallel(data, indices, indptr, SW, PT, VT, act, starts, first, m, buf):
    for b in numba.prange(m):
        _hv_block(data, indices, indptr, SW, PT, VT, act, starts[first + b],
                  starts[first + b + 1], buf[b])


@numba.njit(**_JIT)
def _hv_blocks_serial(data, indices, indptr, SW, PT, VT, act, starts, first, m, buf):
    for b in range(m):
        _hv_block(data, indices, indptr, SW, PT, VT, act, starts[first + b],
                  starts[first + b + 1], buf[b])


@numba.njit(**_JIT)
def _hessp_entry(data, indices, indptr, SW, P, V, alpha, active, threads, out):
    n_runs, n_params = P.shape
    d = n_params - 1
    n_rows = indptr.size - 1
    no_rows = np.empty(0, dtype=np.int64)
    total = np.empty(n_runs)
    _weight_totals(SW, no_rows, n_rows, total)
    act = _runs_to_do(active, total)
    if act.size == 0 or n_rows == 0:
        return
    ka = act.size
    PT = _transposed(P, act)
    VT = _transposed(V, act)
    starts, work = _partition(indptr, no_rows, n_rows, n_params)
    n_blocks = starts.size - 1
    parallel = threads > 1 and n_blocks > 1 and 2 * work * ka > _PARALLEL_WORK
    n_slots = _n_slots(n_blocks, (d + 1) * ka, threads)
    buf = np.empty((n_slots, d + 1, ka))
    acc = np.zeros((d + 1, ka))
    for first in range(0, n_blocks, n_slots):
        m = min(n_slots, n_blocks - first)
        if parallel:
            _hv_blocks_parallel(data, indices, indptr, SW, PT, VT, act, starts, first, m, buf)
            _reduce_parallel(buf, m, acc)
        else:
            _hv_blocks_serial(data, indices, indptr, SW, PT, VT, act, starts, first, m, buf)
            _reduce_serial(buf, m, acc)
    for a in range(ka):
        k = act[a]
        for j in range(n_params):
            out[k, j] = acc[j, a] / total[k]
        for j in range(d):
            out[k, j] += alpha[k] * V[k, j]


# ---- the contract (sparse_reference.py) -----------------------------------------------------


class _Threads:
    """numba.set_num_threads(n) for the duration of a call (None: NUMBA_NUM_THREADS)."""

    def __init__(self, n_threads) -> None:
        top = numba.config.NUMBA_NUM_THREADS
        self.n = top if n_threads is None else max(1, min(int(n_threads), top))

    def __enter__(self) -> _Threads:
        self.previous = numba.get_num_threads()
        numba.set_num_threads(self.n)
        return self

    def __exit__(self, *exc) -> None:
        numba.set_num_threads(self.previous)


def _as_f64(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float64)


def _per_run(value, n_runs: int, name: str) -> np.ndarray:
    a = np.asarray(value, dtype=np.float64)
    if a.ndim > 1 or (a.ndim == 1 and a.size != n_runs):
        raise ValueError(f"{name} must have shape ({n_runs},), got {a.shape}")
    return np.array(np.broadcast_to(a, (n_runs,)))


def _arrays(X):
    """(data, indices, indptr) of a CSR matrix that check_csr accepted."""
    return X.data, X.indices, X.indptr


def _check_shapes(X, Y, SW, P) -> None:
    """The mismatches that compiled code would turn into reads past the end of an array: the
    dense kernels' checks of P, Y and SW (numba._check_shapes: they read only X.shape), and
    indptr's length."""
    _check_dense_shapes(X, Y, SW, P)
    n = X.shape[0]
    if X.indptr.size != n + 1:
        raise ValueError(f"X.indptr must have {n + 1} entries, got {X.indptr.size}")


def loss_grad(X, Y, SW, P, alpha, rows, active, n_threads=None, denominator=None):
    """Loss (K,) and gradient (K, D) of the runs marked active (see sparse_reference.py)."""
    P, Y, SW = _as_f64(P), _as_f64(Y), _as_f64(SW)
    _check_shapes(X, Y, SW, P)
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
        _loss_grad_entry(*_arrays(X), Y, SW, P, _per_run(alpha, n_runs, "alpha"), rows,
                         np.ascontiguousarray(active, np.uint8), denominator, threads.n,
                         loss, grad)
    return loss, grad


def hessp(X, SW, P, V, alpha, active, n_threads=None):
    """Hessian-vector products (K, D) of the runs marked active (see sparse_reference.py)."""
    P, V, SW = _as_f64(P), _as_f64(V), _as_f64(SW)
    _check_shapes(X, None, SW, P)
    if V.shape != P.shape:
        raise ValueError(f"V must have the shape of P {P.shape}, got {V.shape}")
    out = np.zeros(P.shape)
    with _Threads(n_threads) as threads:
        _hessp_entry(*_arrays(X), SW, P, V, _per_run(alpha, P.shape[0], "alpha"),
                     np.ascontiguousarray(active, np.uint8), threads.n, out)
    return out


# ---- numba's cache and numba.py -------------------------------------------------------------
# numba's cache only checks the file a function is defined in, but the kernels above compile in
# numba.py's functions (_link, _hess_weight: the link itself; _weight_totals, _runs_to_do): cached
# here, they would keep an older numba.py's link after numba.py changed. A cached constant
# records which numba.py the cache was built from; when the file has changed since, every kernel
# that reaches into numba.py has its cache dropped (numba.py's own guard does the same for
# numba_rules.py).
_DENSE_SOURCE = _source_hash(_dense)


@numba.njit(**_JIT)
def _dense_source_compiled():
    return _DENSE_SOURCE  # a global is frozen into the compiled (and cached) code


if _dense_source_compiled() != _DENSE_SOURCE:
    for _fn in (_dense_source_compiled, _block, _blocks_parallel, _blocks_serial, _hv_block,
                _hv_blocks_parallel, _hv_blocks_serial, _loss_grad_entry, _hessp_entry):
        _fn.recompile()  # drops the function's cache entries; recompiled on the next call
