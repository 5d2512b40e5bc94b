"""Numba: softmax_reference.py's kernels compiled, one pass over the rows for all K runs.

Rows are cut into fixed blocks (the size depends on the number of parameters only); each block
sums into its own slot and the slots are added in block order, so the result has the same bits
for any number of threads. Per row and run the C dot products are taken first, then the link of
softmax_reference.softmax_link (no overflow, no cancellation: the same operations in the same
order), then the gradient update of the C classes with the row still in cache.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from .numba import _Threads
from .numba_rules import JIT

_BLOCK_ELEMENTS = 2**17
_MIN_BLOCK_ROWS, _MAX_BLOCK_ROWS = 64, 2048


@numba.njit(**JIT)
def _weight(SW, i, k):
    if SW.shape[1] == 0:
        return 1.0
    return SW[i, 0] if SW.shape[1] == 1 else SW[i, k]


@numba.njit(**JIT)
def _scores(X, i, P, k, n_classes, d, z):
    """z[c] = x_i . w_kc + b_kc."""
    for c in range(n_classes):
        base = c * (d + 1)
        acc = 0.0
        for j in range(d):
            acc += np.float64(X[i, j]) * P[k, base + j]
        z[c] = acc + P[k, base + d]


@numba.njit(**JIT)
def _lead(z, n_classes):
    """The first largest score's class, or the first NaN's (numpy's argmax)."""
    j = 0
    if math.isnan(z[0]):
        return j
    for c in range(1, n_classes):
        if math.isnan(z[c]):
            return c
        if z[c] > z[j]:
            j = c
    return j


@numba.njit(**JIT)
def _softmax_from(z, j, n_classes, p):
    """softmax_reference.softmax_from for one row: p = softmax(z) measured from pivot j; returns
    T = sum_{c != j} exp(z_c - z_j) (kept apart from the 1 of the pivot)."""
    zj = z[j]
    total = 0.0
    for c in range(n_classes):
        if c != j:
            p[c] = math.exp(z[c] - zj)
            total += p[c]
    s = 1.0 + total
    for c in range(n_classes):
        p[c] = 1.0 / s if c == j else p[c] / s
    return total


@numba.njit(**JIT)
def _softmax_link(z, y, n_classes, p):
    """softmax_reference.softmax_link for one row: p = softmax(z) - onehot(y) in place; returns
    the loss logsumexp(z) - z_y = (z_j - z_y) + log1p(T), j the label when it leads."""
    j = _lead(z, n_classes)
    if z[y] >= z[j]:
        j = y
    t = _softmax_from(z, j, n_classes, p)
    # the label's residual: -sum_{c != y} p_c when it leads, else p_y - 1 with p_y <= 1/2
    p[y] = -t / (1.0 + t) if j == y else p[y] - 1.0
    return (z[j] - z[y]) + math.log1p(t)


@numba.njit(**JIT)
def _grad_block(X, labels, SW, P, rows, act, n_classes, start, stop, acc):
    d = X.shape[1]
    D = n_classes * (d + 1)
    z = np.empty(n_classes)
    p = np.empty(n_classes)
    for k in act:
        for j in range(D + 2):
            acc[k, j] = 0.0
    for pos in range(start, stop):
        i = rows[pos] if rows.size > 0 else pos
        y = labels[i]
        for k in act:
            s = _weight(SW, i, k)
            _scores(X, i, P, k, n_classes, d, z)
            acc[k, D] += s * _softmax_link(z, y, n_classes, p)  # p: the residual
            acc[k, D + 1] += s
            for c in range(n_classes):
                r = s * p[c]
                base = c * (d + 1)
                for j in range(d):
                    acc[k, base + j] += r * X[i, j]
                acc[k, base + d] += r


@numba.njit(**JIT)
def _hv_block(X, SW, P, V, act, n_classes, start, stop, acc):
    d = X.shape[1]
    D = n_classes * (d + 1)
    z = np.empty(n_classes)
    p = np.empty(n_classes)
    u = np.empty(n_classes)
    for k in act:
        for j in range(D + 2):
            acc[k, j] = 0.0
    for i in range(start, stop):
        for k in act:
            s = _weight(SW, i, k)
            _scores(X, i, P, k, n_classes, d, z)
            _softmax_from(z, _lead(z, n_classes), n_classes, p)
            _scores(X, i, V, k, n_classes, d, u)
            mean = 0.0
            for c in range(n_classes):
                mean += p[c] * u[c]
            acc[k, D + 1] += s
            for c in range(n_classes):
                t = s * p[c] * (u[c] - mean)
                base = c * (d + 1)
                for j in range(d):
                    acc[k, base + j] += t * X[i, j]
                acc[k, base + d] += t


@numba.njit(parallel=True, **JIT)
def _grad_blocks(X, labels, SW, P, rows, act, n_classes, n_rows, bs, slots):
    for b in numba.prange(slots.shape[0]):
        start = b * bs
        _grad_block(X, labels, SW, P, rows, act, n_classes, start, min(start + bs, n_rows),
                    slots[b])


@numba.njit(parallel=True, **JIT)
def _hv_blocks(X, SW, P, V, act, n_classes, n_rows, bs, slots):
    for b in numba.prange(slots.shape[0]):
        start = b * bs
        _hv_block(X, SW, P, V, act, n_classes, start, min(start + bs, n_rows), slots[b])


def _layout(n_rows: int, n_runs: int, n_params: int) -> tuple[int, np.ndarray]:
    bs = min(_MAX_BLOCK_ROWS, max(_MIN_BLOCK_ROWS, _BLOCK_ELEMENTS // max(n_params, 1)))
    n_blocks = max(1, -(-n_rows // bs))
    return bs, np.zeros((n_blocks, n_runs, n_params + 2))


def _finish(slots, P, alpha, act, n_classes, denominator, with_loss):
    """Adds the block slots in block order, divides by each run's divisor, adds the penalty."""
    n_runs, D = P.shape
    acc = np.zeros((n_runs, D + 2))
    for b in range(slots.shape[0]):  # block order: the same sum for any number of threads
        acc += slots[b]
    loss, out = np.zeros(n_runs), np.zeros((n_runs, D))
    for k in act:
        total = acc[k, D + 1] if denominator is None or not np.size(denominator) \
            else float(denominator[k])
        if total == 0.0:
            continue
        out[k] = acc[k, :D] / total
        loss[k] = acc[k, D] / total
        if alpha[k] != 0.0:
            W = P[k].reshape(n_classes, -1)[:, :-1]
            if with_loss:
                loss[k] += 0.5 * alpha[k] * (W * W).sum()
            out[k].reshape(n_classes, -1)[:, :-1] += alpha[k] * W
    return loss, out


def loss_grad(X, labels, SW, P, alpha, rows, active, n_threads=None, denominator=None, *,
              n_classes):
    act = np.flatnonzero(active).astype(np.int64)
    n_rows = rows.size if rows.size else X.shape[0]
    bs, slots = _layout(n_rows, P.shape[0], P.shape[1])
    if act.size:
        with _Threads(n_threads):
            _grad_blocks(X, labels, SW, P, rows, act, n_classes, n_rows, bs, slots)
    return _finish(slots, P, alpha, act, n_classes, denominator, True)


def hessp(X, SW, P, V, alpha, active, n_threads=None, *, n_classes):
    act = np.flatnonzero(active).astype(np.int64)
    bs, slots = _layout(X.shape[0], P.shape[0], P.shape[1])
    if act.size:
        with _Threads(n_threads):
            _hv_blocks(X, SW, P, V, act, n_classes, X.shape[0], bs, slots)
    # the Hessian's penalty term is alpha V_w (V, not P, is what it multiplies)
    _, out = _finish(slots, V, alpha, act, n_classes, None, False)
    return out
