"""Numba backend: reference.py's formulas and fit loops, compiled (an optional dependency).

``import numba`` below raises ImportError when numba is missing; the registry in
``_backends/__init__.py`` reports that as the reason the backend is not available.

Gradient: ONE pass over the rows of X serves all K runs. Each row's dot product and gradient
update touch the row while it is in cache. Rows are cut into blocks whose size depends only on
the number of parameters (never on the thread count); each block writes its partial sums into
its own slot and the slots are added in block order, so the result is the same, bit for bit,
with any number of threads. The fit loops (every iteration, step rule, schedule, stopping test
and history row) run inside compiled code; the Python functions at the bottom only unpack the
RunSpec/FitState and set the thread count for the call.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from ..rules import HYPER_A, HYPER_B, HYPER_EPS, HYPER_LR, HYPER_SCHED
from .state import (
    CONVERGED,
    DIVERGED,
    GOLDEN,
    H_DISTANCE,
    H_GRAD_NORM,
    H_LOSS,
    H_LR,
    H_STEP_NORM,
    MAX_ITER,
    MIX1,
    MIX2,
    N_ITER_NO_CHANGE,
    RUNNING,
    FitState,
    RunSpec,
)

_JIT = dict(cache=True, nogil=True, error_model="numpy", fastmath=False)
_BLOCK_ELEMENTS = 2**17  # a row block holds about this many parameters' worth of rows ...
_MIN_BLOCK_ROWS, _MAX_BLOCK_ROWS = 64, 2048  # ... within these bounds (depends on D only)
_PARALLEL_WORK = 100_000  # rows * D * active runs below which one thread does the pass
_BUFFER_BYTES = 32 * 2**20  # cap on the per-block partial sums held at once


# ---- the gradient pass --------------------------------------------------------------------


@numba.njit(**_JIT)
def _dot(X, i, P, k, d):
    """X[i, :d] . P[k, :d] with four independent accumulators; a float32 X is widened per
    element. The accumulators give instruction-level parallelism, not SIMD: numba turns LLVM's
    SLP vectorizer off (NUMBA_SLP_VECTORIZE=0) and the loop vectorizer may not reorder a sum
    without fastmath. Indexing is 2-D on purpose: row views in this loop cost reference counting
    (25% of the pass at d = 100)."""
    s0 = s1 = s2 = s3 = 0.0
    end = d - d % 4
    for j in range(0, end, 4):
        s0 += np.float64(X[i, j]) * P[k, j]
        s1 += np.float64(X[i, j + 1]) * P[k, j + 1]
        s2 += np.float64(X[i, j + 2]) * P[k, j + 2]
        s3 += np.float64(X[i, j + 3]) * P[k, j + 3]
    for j in range(end, d):
        s0 += np.float64(X[i, j]) * P[k, j]
    return (s0 + s1) + (s2 + s3)


@numba.njit(**_JIT)
def _block(X, Y, sw, P, rows, act, start, stop, acc):
    """Rows start..stop-1 (positions in rows, or rows of X when rows is empty) into acc (K, D + 1):
    acc[k, :D] = sum s (sigmoid(z) - y) (x, 1), acc[k, D] = sum s (log1pexp(z) - y z)."""
    d = X.shape[1]
    use_rows = rows.size > 0
    use_sw = sw.size > 0
    shared_y = Y.shape[1] == 1
    for k in act:
        for j in range(d + 2):
            acc[k, j] = 0.0
    for pos in range(start, stop):
        i = rows[pos] if use_rows else pos
        s = sw[i] if use_sw else 1.0
        for k in act:
            z = _dot(X, i, P, k, d) + P[k, d]
            y = Y[i, 0] if shared_y else Y[i, k]
            e = math.exp(-abs(z))  # reference.log1pexp_and_sigmoid, one element
            log1pexp = (z if z > 0.0 else 0.0) + math.log1p(e)
            sigmoid = 1.0 / (1.0 + e) if z >= 0.0 else e / (1.0 + e)
            acc[k, d + 1] += s * (log1pexp - y * z)
            r = s * (sigmoid - y)
            for j in range(d):
                acc[k, j] += r * X[i, j]
            acc[k, d] += r


@numba.njit(parallel=True, **_JIT)
def _blocks_parallel(X, Y, sw, P, rows, act, n_rows, bs, first, n_blocks, buf):
    for b in numba.prange(n_blocks):
        start = (first + b) * bs
        _block(X, Y, sw, P, rows, act, start, min(start + bs, n_rows), buf[b])


@numba.njit(**_JIT)
def _blocks_serial(X, Y, sw, P, rows, act, n_rows, bs, first, n_blocks, buf):
    for b in range(n_blocks):
        start = (first + b) * bs
        _block(X, Y, sw, P, rows, act, start, min(start + bs, n_rows), buf[b])


@numba.njit(**_JIT)
def _weight_total(sw, rows, n_rows):
    if sw.size == 0:
        return float(n_rows)
    total = 0.0
    for pos in range(n_rows):
        total += sw[rows[pos] if rows.size > 0 else pos]
    return total


@numba.njit(**_JIT)
def _workspace(n_rows, n_runs, n_params, threads):
    """(rows per block, partial-sum slots (n_slots, K, D + 1)); the block size depends on D only."""
    bs = min(_MAX_BLOCK_ROWS, max(_MIN_BLOCK_ROWS, _BLOCK_ELEMENTS // n_params))
    n_blocks = max(1, (n_rows + bs - 1) // bs)
    cap = max(2 * threads, _BUFFER_BYTES // (8 * n_runs * (n_params + 1)))
    return bs, np.empty((min(n_blocks, cap), n_runs, n_params + 1))


@numba.njit(**_JIT)
def _loss_grad_into(X, Y, sw, P, alpha, rows, active, total, bs, buf, threads, loss, grad):
    """reference._loss_grad written into loss (K,) and grad (K, D). total divides the sums: the
    rows' weight sum (0: zeros, as in the reference), or a mini-batch's expected weight. More
    than one thread only when the pass is big enough; the bits never depend on it."""
    n_runs, n_params = P.shape
    d = n_params - 1
    n_rows = rows.size if rows.size > 0 else X.shape[0]
    n_active = 0
    for k in range(n_runs):
        n_active += active[k] != 0
        loss[k] = 0.0
        for j in range(n_params):
            grad[k, j] = 0.0
    if n_active == 0 or total == 0.0:
        return
    act = np.empty(n_active, dtype=np.int64)
    n_active = 0
    for k in range(n_runs):
        if active[k]:
            act[n_active] = k
            n_active += 1
    n_blocks = (n_rows + bs - 1) // bs
    parallel = threads > 1 and n_blocks > 1 and n_rows * n_params * n_active > _PARALLEL_WORK
    n_slots = buf.shape[0]
    for first in range(0, n_blocks, n_slots):  # slots added in block order: thread-independent
        m = min(n_slots, n_blocks - first)
        if parallel:
            _blocks_parallel(X, Y, sw, P, rows, act, n_rows, bs, first, m, buf)
        else:
            _blocks_serial(X, Y, sw, P, rows, act, n_rows, bs, first, m, buf)
        for b in range(m):
            for k in act:
                for j in range(n_params):
                    grad[k, j] += buf[b, k, j]
                loss[k] += buf[b, k, n_params]
    for k in act:
        loss[k] /= total
        for j in range(n_params):
            grad[k, j] /= total
        if alpha != 0.0:  # with alpha == 0 the penalty is not computed at all
            sq = 0.0
            for j in range(d):
                sq += P[k, j] * P[k, j]
            loss[k] += 0.5 * alpha * sq
            for j in range(d):
                grad[k, j] += alpha * P[k, j]


@numba.njit(**_JIT)
def _loss_grad_entry(X, Y, sw, P, alpha, rows, active, threads, loss, grad):
    n_rows = rows.size if rows.size > 0 else X.shape[0]
    bs, buf = _workspace(n_rows, P.shape[0], P.shape[1], threads)
    total = _weight_total(sw, rows, n_rows)
    _loss_grad_into(X, Y, sw, P, alpha, rows, active, total, bs, buf, threads, loss, grad)


# ---- step rules, schedules, small vector helpers ------------------------------------------


@numba.njit(**_JIT)
def _schedule(code, lr, param, t, total_updates):
    """rules.schedule_value."""
    if code == 0:
        return lr
    if code == 1:
        return lr / (1.0 + param * (t - 1))
    if code == 2:
        return lr / float(t) ** param
    if code == 3:
        return lr * param ** float(t - 1)
    if code == 4:
        progress = min(t - 1, total_updates) / max(total_updates, 1)
        return lr * (1.0 + math.cos(math.pi * progress)) / 2.0
    raise ValueError("unknown schedule code")


@numba.njit(**_JIT)
def _step(rule, hyper_row, lr, t, g, p, slots):
    """reference.step, element by element with the same operation order."""
    a, b, eps = hyper_row[HYPER_A], hyper_row[HYPER_B], hyper_row[HYPER_EPS]
    if rule == 0:  # sgd
        for j in range(p.size):
            p[j] -= lr * g[j]
    elif rule == 1 or rule == 2:  # momentum, nesterov
        v = slots[0]
        for j in range(p.size):
            v[j] = a * v[j] + g[j]
            p[j] -= lr * (g[j] + a * v[j]) if rule == 2 else lr * v[j]
    elif rule == 3:  # normalized: no step when g == 0
        norm = _norm(g)
        if norm > 0.0:
            den = max(norm, eps)
            for j in range(p.size):
                p[j] -= lr * g[j] / den
    elif rule == 4:  # adagrad
        G = slots[0]
        for j in range(p.size):
            G[j] += g[j] * g[j]
            p[j] -= lr * g[j] / (math.sqrt(G[j]) + eps)
    elif rule == 5:  # rmsprop
        v = slots[0]
        for j in range(p.size):
            v[j] = a * v[j] + (1.0 - a) * g[j] * g[j]
            p[j] -= lr * g[j] / (math.sqrt(v[j]) + eps)
    elif rule == 6:  # adadelta
        E, D = slots[0], slots[1]
        for j in range(p.size):
            E[j] = a * E[j] + (1.0 - a) * g[j] * g[j]
            delta = math.sqrt(D[j] + eps) / math.sqrt(E[j] + eps) * g[j]
            D[j] = a * D[j] + (1.0 - a) * delta * delta
            p[j] -= lr * delta
    elif rule == 7:  # adam
        m, v = slots[0], slots[1]
        bias_a = 1.0 - a ** float(t)
        bias_b = 1.0 - b ** float(t)
        for j in range(p.size):
            m[j] = a * m[j] + (1.0 - a) * g[j]
            v[j] = b * v[j] + (1.0 - b) * g[j] * g[j]
            p[j] -= lr * (m[j] / bias_a) / (math.sqrt(v[j] / bias_b) + eps)
    else:
        raise ValueError("unknown rule code")


@numba.njit(**_JIT)
def _norm(v):
    sq = 0.0
    for j in range(v.size):
        sq += v[j] * v[j]
    return math.sqrt(sq)


@numba.njit(**_JIT)
def _distance(u, v):
    sq = 0.0
    for j in range(u.size):
        sq += (u[j] - v[j]) * (u[j] - v[j])
    return math.sqrt(sq)


@numba.njit(**_JIT)
def _finite(v):
    for j in range(v.size):
        if not math.isfinite(v[j]):
            return False
    return True


@numba.njit(**_JIT)
def _max_abs(v):
    m = 0.0
    for j in range(v.size):
        m = max(m, abs(v[j]))
    return m


@numba.njit(**_JIT)
def _copy(dst, src):
    for j in range(dst.size):
        dst[j] = src[j]


@numba.njit(**_JIT)
def _record(hist, k, i, loss, grad_norm, step_norm, lr, has_reference, p, ref):
    if i >= hist.shape[2]:  # compiled code does not check bounds: refuse to write past the end
        raise IndexError("history is shorter than max_iter + 1")
    hist[H_LOSS, k, i] = loss
    hist[H_GRAD_NORM, k, i] = grad_norm
    hist[H_STEP_NORM, k, i] = step_norm
    hist[H_LR, k, i] = lr
    if has_reference:
        hist[H_DISTANCE, k, i] = _distance(p, ref)


@numba.njit(**_JIT)
def _running(status, flags):
    """flags[k] = status[k] == RUNNING; the number of running runs."""
    count = 0
    for k in range(status.size):
        flags[k] = 1 if status[k] == RUNNING else 0
        count += flags[k]
    return count


@numba.njit(**_JIT)
def _shuffle_order(n, seed, epoch):
    """state.shuffle_order: splitmix64 keys (uint64 wrapping arithmetic; every operand is cast
    to uint64, since uint64 mixed with int64 would promote to float64), stable argsort."""
    keys = np.empty(n, dtype=np.uint64)
    offset = np.uint64(epoch) * np.uint64(n)
    for i in range(n):
        z = seed + (np.uint64(i + 1) + offset) * GOLDEN
        z = (z ^ (z >> np.uint64(30))) * MIX1
        z = (z ^ (z >> np.uint64(27))) * MIX2
        keys[i] = z ^ (z >> np.uint64(31))
    # stable argsort: least-significant-digit radix sort, eight passes of 8 bits
    order = np.arange(n)
    keys2, order2 = np.empty_like(keys), np.empty_like(order)
    count = np.empty(257, dtype=np.int64)
    for shift in range(0, 64, 8):
        count[:] = 0
        for i in range(n):
            count[np.int64((keys[i] >> np.uint64(shift)) & np.uint64(255)) + 1] += 1
        for c in range(256):
            count[c + 1] += count[c]
        for i in range(n):
            digit = np.int64((keys[i] >> np.uint64(shift)) & np.uint64(255))
            keys2[count[digit]] = keys[i]
            order2[count[digit]] = order[i]
            count[digit] += 1
        keys, keys2, order, order2 = keys2, keys, order2, order
    return order


# ---- the fit loops (reference._run_full_batch, reference._run_minibatch) -------------------


@numba.njit(**_JIT)
def _run_full_batch(X, Y, sw, rule, sched, hyper, alpha, fit_intercept, tol, max_iter,
                    total_updates, record, has_reference, P, slots, grad, loss, t, n_iter,
                    status, hist, ref, n_steps, threads):
    n_runs, n_params = P.shape
    d = n_params - 1
    all_rows = np.empty(0, dtype=np.int64)
    bs, buf = _workspace(X.shape[0], n_runs, n_params, threads)
    total = _weight_total(sw, all_rows, X.shape[0])
    P_old = np.empty_like(P)
    lr_used = np.zeros(n_runs)
    running = np.zeros(n_runs, dtype=np.uint8)
    new_loss = np.zeros(n_runs)
    new_grad = np.zeros((n_runs, n_params))
    for _ in range(n_steps):
        if _running(status, running) == 0:
            return
        for k in range(n_runs):
            _copy(P_old[k], P[k])
            lr_used[k] = 0.0
            if running[k]:
                t[k] += 1
                h = hyper[k]
                lr_used[k] = _schedule(sched[k], h[HYPER_LR], h[HYPER_SCHED], t[k], total_updates)
                _step(rule[k], h, lr_used[k], t[k], grad[k], P[k], slots[k])
        _loss_grad_into(X, Y, sw, P, alpha, all_rows, running, total, bs, buf, threads,
                        new_loss, new_grad)
        for k in range(n_runs):
            if not running[k]:
                continue
            if not fit_intercept:
                new_grad[k, d] = 0.0
            if not (_finite(P[k]) and math.isfinite(new_loss[k]) and _finite(new_grad[k])):
                _copy(P[k], P_old[k])  # keep the last finite weights
                status[k] = DIVERGED
                continue
            loss[k] = new_loss[k]
            _copy(grad[k], new_grad[k])
            n_iter[k] += 1
            if record:
                _record(hist, k, n_iter[k], loss[k], _norm(grad[k]), _distance(P[k], P_old[k]),
                        lr_used[k], has_reference, P[k], ref[k])
            if _max_abs(grad[k]) <= tol:
                status[k] = CONVERGED
            elif n_iter[k] >= max_iter:
                status[k] = MAX_ITER


@numba.njit(**_JIT)
def _run_minibatch(X, Y, sw, rule, sched, hyper, alpha, fit_intercept, tol, batch_size, seed,
                   max_iter, total_updates, record, has_reference, P, slots, loss, t, n_iter,
                   status, best_loss, no_improve, epoch, hist, ref, n_steps, threads,
                   mean_weight):
    n = X.shape[0]
    n_runs, n_params = P.shape
    d = n_params - 1
    bs, buf = _workspace(min(batch_size, n), n_runs, n_params, threads)
    P_prev = P.copy()  # weights before each run's latest step: kept on divergence
    P_start = np.empty_like(P)
    in_epoch = np.zeros(n_runs, dtype=np.uint8)
    loss_sum = np.zeros(n_runs)
    grad_norm_sum = np.zeros(n_runs)
    lr_used = np.zeros(n_runs)
    b_loss = np.zeros(n_runs)
    b_grad = np.zeros((n_runs, n_params))
    for _ in range(n_steps):
        if _running(status, in_epoch) == 0:
            return
        order = _shuffle_order(n, seed, epoch[0])
        epoch[0] += 1
        for k in range(n_runs):
            _copy(P_start[k], P[k])
            loss_sum[k] = grad_norm_sum[k] = lr_used[k] = 0.0
        for lo in range(0, n, batch_size):
            rows = order[lo:lo + batch_size]
            total = _weight_total(sw, rows, rows.size)
            if total != 0.0 and rows.size * mean_weight > 0.0:
                total = rows.size * mean_weight  # with weights: the batch's expected weight
            _loss_grad_into(X, Y, sw, P, alpha, rows, in_epoch, total, bs, buf, threads,
                            b_loss, b_grad)
            for k in range(n_runs):
                if not in_epoch[k]:
                    continue
                if not fit_intercept:
                    b_grad[k, d] = 0.0
                if not (math.isfinite(b_loss[k]) and _finite(b_grad[k])):
                    _copy(P[k], P_prev[k])
                    status[k] = DIVERGED
                    in_epoch[k] = 0
                    continue
                loss_sum[k] += rows.size * b_loss[k]
                grad_norm_sum[k] += rows.size * _norm(b_grad[k])
                t[k] += 1
                h = hyper[k]
                lr_used[k] = _schedule(sched[k], h[HYPER_LR], h[HYPER_SCHED], t[k], total_updates)
                _copy(P_prev[k], P[k])
                _step(rule[k], h, lr_used[k], t[k], b_grad[k], P[k], slots[k])
                if not _finite(P[k]):
                    _copy(P[k], P_prev[k])
                    status[k] = DIVERGED
                    in_epoch[k] = 0
        for k in range(n_runs):
            if not in_epoch[k]:
                continue
            epoch_loss = loss_sum[k] / n
            loss[k] = epoch_loss
            n_iter[k] += 1
            if record:
                _record(hist, k, n_iter[k], epoch_loss, grad_norm_sum[k] / n,
                        _distance(P[k], P_start[k]), lr_used[k], has_reference, P[k], ref[k])
            # scikit-learn's n_iter_no_change rule on the epoch loss
            if epoch_loss > best_loss[k] - tol:
                no_improve[k] += 1
            else:
                no_improve[k] = 0
            best_loss[k] = min(best_loss[k], epoch_loss)
            if no_improve[k] >= N_ITER_NO_CHANGE:
                status[k] = CONVERGED
            elif n_iter[k] >= max_iter:
                status[k] = MAX_ITER


# ---- the contract (state.py) ---------------------------------------------------------------


class _Threads:
    """numba.set_num_threads(n) for the duration of a call (None: NUMBA_NUM_THREADS)."""

    def __init__(self, n_threads) -> None:
        top = numba.config.NUMBA_NUM_THREADS
        self.n = top if n_threads is None else max(1, min(int(n_threads), top))

    def __enter__(self) -> None:
        self.previous = numba.get_num_threads()
        numba.set_num_threads(self.n)

    def __exit__(self, *exc) -> None:
        numba.set_num_threads(self.previous)


def _check_shapes(X, Y, sw, n_runs) -> None:
    """The two mismatches that compiled code would turn into reads past the end of an array."""
    if Y.shape[0] != X.shape[0] or Y.shape[1] not in (1, n_runs):
        raise ValueError(f"Y must have shape ({X.shape[0]}, 1 or {n_runs}), got {Y.shape}")
    if sw.size not in (0, X.shape[0]):
        raise ValueError(f"sw must be empty or have {X.shape[0]} entries, got {sw.size}")


def loss_grad(X, Y, sw, P, alpha, rows, active, n_threads=None):
    """Loss (K,) and gradient (K, D) of the runs marked active (see state.py for the contract)."""
    P = np.ascontiguousarray(P, dtype=np.float64)
    Y = np.ascontiguousarray(Y, dtype=np.float64)
    sw = np.ascontiguousarray(sw, dtype=np.float64)
    _check_shapes(X, Y, sw, P.shape[0])
    loss = np.zeros(P.shape[0])
    grad = np.zeros(P.shape)
    threads = _Threads(n_threads)
    with threads:
        _loss_grad_entry(
            X, Y, sw, P, float(alpha), np.ascontiguousarray(rows, np.int64),
            np.ascontiguousarray(active, np.uint8), threads.n, loss, grad,
        )
    return loss, grad


def run(X, Y, sw, spec: RunSpec, state: FitState, n_steps: int, n_threads=None) -> None:
    """Advance the running runs by up to n_steps iterations (see state.py for the contract)."""
    s = state
    Y = np.ascontiguousarray(Y, dtype=np.float64)
    sw = np.ascontiguousarray(sw, dtype=np.float64)
    _check_shapes(X, Y, sw, s.P.shape[0])
    common = (np.ascontiguousarray(spec.rule_code, np.int64),
              np.ascontiguousarray(spec.sched_code, np.int64),
              np.ascontiguousarray(spec.hyper, np.float64), float(spec.alpha),
              bool(spec.fit_intercept), float(spec.tol))
    threads = _Threads(n_threads)
    with threads:
        if spec.batch_size:
            _run_minibatch(
                X, Y, sw, *common, int(spec.batch_size), np.uint64(spec.seed),
                int(spec.max_iter), int(spec.total_updates), bool(spec.record_history),
                bool(spec.has_reference), s.P, s.slots, s.loss, s.t, s.n_iter, s.status,
                s.best_loss, s.no_improve, s.epoch, s.history, s.reference, int(n_steps), threads.n,
                # reference._run_minibatch: a batch's sums are divided by rows * mean weight
                float(sw.sum()) / X.shape[0] if sw.size else 0.0,
            )
        else:
            _run_full_batch(
                X, Y, sw, *common, int(spec.max_iter), int(spec.total_updates),
                bool(spec.record_history), bool(spec.has_reference), s.P, s.slots, s.grad,
                s.loss, s.t, s.n_iter, s.status, s.history, s.reference, int(n_steps), threads.n,
            )
