"""Numba: softmax_reference.py's kernels compiled, one pass over the rows for all K runs.

Rows are cut into fixed blocks (the size depends on the number of parameters only); each block
sums into its own slot and the slots are added in block order, so the result has the same bits
for any number of threads. Per row and run the C dot products are taken first, then the link of
softmax_reference.softmax_link (no overflow, no cancellation: the same operations in the same
order), then the gradient update of the C classes with the row still in cache. The weights are
packed feature-major, (d, C) per run, so both the scores and the gradient update loop over the
classes innermost with stride 1 (vectorized: about 8 x faster than a dot product per class on
digits' 64 features x 10 classes).
"""

from __future__ import annotations

import math

import numba
import numpy as np

from .numba import _JIT_FMA as JIT_FMA
from .numba import _exp_nonpositive, _Threads
from .numba_rules import JIT

_BLOCK_ELEMENTS = 2**17
_MIN_BLOCK_ROWS, _MAX_BLOCK_ROWS = 64, 2048


@numba.njit(**JIT)
def _weight(SW, i, k):
    if SW.shape[1] == 0:
        return 1.0
    return SW[i, 0] if SW.shape[1] == 1 else SW[i, k]


def _packed(P, act, n_classes):
    """The active runs' class weights as one (d, n_act * C) matrix (run a's class c in column
    a C + c) and their intercepts (n_act, C): one matrix product per block then serves every
    run and class."""
    blocks = P[act].reshape(act.size, n_classes, -1)
    W = blocks[:, :, :-1]  # (n_act, C, d)
    return (np.ascontiguousarray(W.reshape(-1, W.shape[2]).T),
            np.ascontiguousarray(blocks[:, :, -1]))


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
def _block_rows(X, rows, start, stop):
    """The block's rows as a float64 (m, d) array: gathered (mini-batch rows) and widened
    (float32 X) once, so the two products below run on one contiguous block in cache."""
    m, d = stop - start, X.shape[1]
    Xb = np.empty((m, d))
    for r in range(m):
        i = rows[start + r] if rows.size > 0 else start + r
        for j in range(d):
            Xb[r, j] = X[i, j]
    return Xb


@numba.njit(**JIT_FMA)
def _exp_block(A):
    """exp of every entry of A (all <= 0) in one loop that LLVM vectorizes: numba.py's
    polynomial exp (within 1 ulp; math.exp is a libm call per entry, which was most of the
    softmax pass at digits' size)."""
    flat = A.reshape(-1)
    out = np.empty_like(flat)
    for t in range(flat.size):
        out[t] = _exp_nonpositive(flat[t])
    return out.reshape(A.shape)


@numba.njit(**JIT)
def _grad_block(X, labels, SW, PT, bias, rows, act, n_classes, start, stop, acc):
    """The block's sums for every active run: Z = X_b [W_1^T .. W_m^T] (one matrix product for
    all runs and classes), the link row by row, then G^T = X_b^T R (a second product over the
    block, still in cache). X is read from memory once; the products are BLAS's."""
    d = X.shape[1]
    Xb = _block_rows(X, rows, start, stop)
    m = Xb.shape[0]
    Z = np.dot(Xb, PT)  # (m, n_act * C), runs side by side
    n_act = act.size
    lead = np.empty((m, n_act), np.int64)
    # each score measured from the row's pivot class j (the label when it leads, else the first
    # largest): Z becomes z_c - z_j <= 0, the pivot's entry exactly 0
    for r in range(m):
        i = rows[start + r] if rows.size > 0 else start + r
        y = labels[i]
        for a in range(n_act):
            base = a * n_classes
            for c in range(n_classes):
                Z[r, base + c] += bias[a, c]
            j = _lead(Z[r, base:base + n_classes], n_classes)
            if Z[r, base + y] >= Z[r, base + j]:
                j = y
            lead[r, a] = j
            zj = Z[r, base + j]
            for c in range(n_classes):
                Z[r, base + c] -= zj
    E = _exp_block(Z)  # every exp of the block in one vectorized loop
    R = np.empty_like(Z)
    losses = np.zeros(n_act)
    weights = np.zeros(n_act)
    for r in range(m):
        i = rows[start + r] if rows.size > 0 else start + r
        y = labels[i]
        for a in range(n_act):
            s = _weight(SW, i, act[a])
            base = a * n_classes
            j = lead[r, a]
            t = 0.0
            for c in range(n_classes):  # T = sum_{c != j} exp(z_c - z_j), in class order
                if c != j:
                    t += E[r, base + c]
            u = 1.0 + t
            for c in range(n_classes):
                R[r, base + c] = (1.0 / u) if c == j else E[r, base + c] / u
            # the label's residual: -T/(1+T) when it leads, else p_y - 1 with p_y <= 1/2
            R[r, base + y] = (-t / u) if j == y else R[r, base + y] - 1.0
            for c in range(n_classes):
                R[r, base + c] *= s
            losses[a] += s * (-Z[r, base + y] + math.log1p(t))  # (z_j - z_y) + log1p(T)
            weights[a] += s
    GT = np.dot(Xb.T, R)  # (d, n_act * C)
    for a in range(act.size):
        out = acc[act[a]]
        for c in range(n_classes):
            col = a * n_classes + c
            gb = 0.0
            for r in range(m):  # the intercept's sum in row order
                gb += R[r, col]
            for j in range(d):
                out[c * (d + 1) + j] = GT[j, col]
            out[c * (d + 1) + d] = gb
        out[n_classes * (d + 1)] = losses[a]
        out[n_classes * (d + 1) + 1] = weights[a]


@numba.njit(**JIT)
def _hv_block(X, SW, PT, bias, VT, vbias, act, n_classes, start, stop, acc):
    """As _grad_block, for the Hessian times V: Z and U = X_b V^T in two products, then
    T = s p (u - p.u) row by row, then X_b^T T."""
    d = X.shape[1]
    Xb = _block_rows(X, np.empty(0, np.int64), start, stop)
    m = Xb.shape[0]
    Z = np.dot(Xb, PT)
    U = np.dot(Xb, VT)
    T = np.zeros_like(Z)
    z = np.empty(n_classes)
    p = np.empty(n_classes)
    weights = np.zeros(act.size)
    for r in range(m):
        i = start + r
        for a in range(act.size):
            k = act[a]
            s = _weight(SW, i, k)
            base = a * n_classes
            for c in range(n_classes):
                z[c] = Z[r, base + c] + bias[a, c]
            _softmax_from(z, _lead(z, n_classes), n_classes, p)
            mean = 0.0
            for c in range(n_classes):
                mean += p[c] * (U[r, base + c] + vbias[a, c])
            weights[a] += s
            for c in range(n_classes):
                T[r, base + c] = s * p[c] * ((U[r, base + c] + vbias[a, c]) - mean)
    GT = np.dot(Xb.T, T)
    for a in range(act.size):
        out = acc[act[a]]
        for c in range(n_classes):
            col = a * n_classes + c
            tb = 0.0
            for r in range(m):
                tb += T[r, col]
            for j in range(d):
                out[c * (d + 1) + j] = GT[j, col]
            out[c * (d + 1) + d] = tb
        out[n_classes * (d + 1)] = 0.0
        out[n_classes * (d + 1) + 1] = weights[a]


@numba.njit(parallel=True, **JIT)
def _grad_blocks(X, labels, SW, PT, bias, rows, act, n_classes, n_rows, bs, slots):
    for b in numba.prange(slots.shape[0]):
        start = b * bs
        _grad_block(X, labels, SW, PT, bias, rows, act, n_classes, start,
                    min(start + bs, n_rows), slots[b])


@numba.njit(parallel=True, **JIT)
def _hv_blocks(X, SW, PT, bias, VT, vbias, act, n_classes, n_rows, bs, slots):
    for b in numba.prange(slots.shape[0]):
        start = b * bs
        _hv_block(X, SW, PT, bias, VT, vbias, act, n_classes, start, min(start + bs, n_rows),
                  slots[b])


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
            PT, bias = _packed(P, act, n_classes)
            _grad_blocks(X, labels, SW, PT, bias, rows, act, n_classes, n_rows, bs, slots)
    return _finish(slots, P, alpha, act, n_classes, denominator, True)


def hessp(X, SW, P, V, alpha, active, n_threads=None, *, n_classes):
    act = np.flatnonzero(active).astype(np.int64)
    bs, slots = _layout(X.shape[0], P.shape[0], P.shape[1])
    if act.size:
        with _Threads(n_threads):
            PT, bias = _packed(P, act, n_classes)
            VT, vbias = _packed(V, act, n_classes)
            _hv_blocks(X, SW, PT, bias, VT, vbias, act, n_classes, X.shape[0], bs, slots)
    # the Hessian's penalty term is alpha V_w (V, not P, is what it multiplies)
    _, out = _finish(slots, V, alpha, act, n_classes, None, False)
    return out
