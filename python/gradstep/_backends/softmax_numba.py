"""Numba: softmax_reference.py's kernels compiled, one pass over the rows for all K runs.

Rows are cut into fixed blocks (the size depends on the number of parameters only); each block
sums into its own slot and the slots are added in block order, so the result has the same bits
for any number of threads (one thread runs the same blocks in a serial loop). Per block:
Z = W X_b^T, one BLAS product for every active run and class, laid out (runs x classes, rows) so
that every step of the link (softmax_reference.softmax_link: no overflow, no cancellation, the
same operations in the same order) is a loop over the block's rows that LLVM vectorizes: the
pivots, the exps (numba.py's polynomial), log1p, the residuals; then G = R X_b, a second product
while the block is in cache. On digits (1797 x 64, 10 classes, one thread) this took the gradient
from ~0.57 to ~0.36 ms, of which the two products are ~0.23 ms; the per-row version spent most of
the difference in scalar loops over 10 classes, a libm log1p per row, copying the block, and
Python around the call (thread count, packing, adding the slots).
"""

from __future__ import annotations

import numba
import numpy as np

from .numba import _JIT_FMA as JIT_FMA
from .numba import _JIT_SUM as JIT_SUM
from .numba import (
    _bits_f64,
    _exp_nonpositive,
    _f64_bits,
    _log_reduced,
    _rows_f64,
    _serial_only,
    _Threads,
)
from .numba_rules import JIT

_BLOCK_ELEMENTS = 2**17
_MIN_BLOCK_ROWS, _MAX_BLOCK_ROWS = 64, 2048


@numba.njit(**JIT)
def _weight(SW, i, k):
    if SW.shape[1] == 0:
        return 1.0
    return SW[i, 0] if SW.shape[1] == 1 else SW[i, k]


@numba.njit(**JIT)
def _pivots(Z, b, y, j, zj):
    """Adds the intercepts b to the scores Z (C, m) and finds each row's pivot j, its score zj:
    the label y when it leads (no labels: y empty), else the first largest (the first NaN, as
    numpy's argmax). One pass per class over the rows, with selects only: LLVM vectorizes it
    over the rows."""
    n_classes, m = Z.shape
    for r in range(m):
        Z[0, r] += b[0]
        zj[r] = Z[0, r]
        j[r] = 0
    for c in range(1, n_classes):
        for r in range(m):
            z = Z[c, r] + b[c]
            Z[c, r] = z
            best = zj[r]
            take = (z > best) | ((z != z) & (best == best))  # a first NaN takes the lead
            zj[r] = z if take else best
            j[r] = c if take else j[r]
    for r in range(y.size):
        zy = Z[y[r], r]
        if zy >= zj[r]:
            j[r] = y[r]
            zj[r] = zy


@numba.njit(**JIT_FMA)
def _exp_from_pivot(Z, j, zj, E, T):
    """E = exp(z_c - z_j) (every exponent <= 0) with numba.py's polynomial exp (within 1 ulp;
    math.exp is a libm call per entry, which was most of the softmax pass at digits' size) and
    T = sum_{c != j} E_c, in class order (the pivot's 0 added instead: exact)."""
    n_classes, m = Z.shape
    T[:m] = 0.0
    for c in range(n_classes):
        for r in range(m):
            e = _exp_nonpositive(Z[c, r] - zj[r])
            E[c, r] = e
            T[r] += 0.0 if c == j[r] else e


@numba.njit(**JIT)
def _residuals(E, j, y, T, s, R):
    """R = s (softmax(z) - onehot(y)) for every class (rows along the last axis), the operations
    of _softmax_link: p_c = E_c / (1 + T), p_j = 1 / (1 + T), and the label's entry -T / (1 + T)
    when it leads, else p_y - 1. The row's two divisions are taken once; the class loop is
    selects and one division per entry, vectorized over the rows."""
    n_classes, m = E.shape
    u = 1.0 + T[:m]
    pj = 1.0 / u
    lead = -T[:m] / u
    for c in range(n_classes):
        for r in range(m):
            p = pj[r] if c == j[r] else E[c, r] / u[r]
            if c == y[r]:
                p = lead[r] if j[r] == y[r] else p - 1.0
            R[c, r] = s[r] * p


@numba.njit(**JIT_FMA)
def _log1p_nonnegative(e):
    """log1p(e) for e >= 0 (NaN stays NaN): numba.py's _log1p_unit (fdlibm's log of u = 1 + e
    rounded, plus the rounding error c / u) with u's power of two read from its exponent bits,
    since T reaches C - 1. Within 1 ulp, and selects and arithmetic only, so a loop over rows
    vectorizes (math.log1p, a libm call per row, was ~26 of ~360 us on digits)."""
    u = 1.0 + e
    c = e - (u - 1.0) if e <= 1.0 else 1.0 - (u - e)  # u + c == 1 + e exactly (Fast2Sum)
    bits = _f64_bits(u)
    # u = 2^k m with m in [sqrt(2)/2, sqrt(2)): the mantissa m0 in [1, 2), halved above sqrt(2);
    # the exponent as a float64 by the 2^52 trick (AVX2 has no packed int64 -> float64)
    m0 = _bits_f64((bits & 0x000FFFFFFFFFFFFF) | 0x3FF0000000000000)
    high = m0 > 1.4142135623730951
    m = m0 * 0.5 if high else m0
    k = (_bits_f64((bits >> 52) | 0x4330000000000000) - 4503599627371519.0) + (
        1.0 if high else 0.0)
    return _log_reduced(m - 1.0, k) + c / u


@numba.njit(**JIT_FMA)
def _log1p_rows(T, out):
    for r in range(out.size):
        out[r] = _log1p_nonnegative(T[r])


@numba.njit(**JIT_SUM)
def _sum_fast(v):
    """The sum of v, split by LLVM into vector partial sums added in a fixed order (reassoc, as
    numba.py's _dot_fast: the order is the compiled code's, never the thread count's)."""
    total = 0.0
    for t in range(v.size):
        total += v[t]
    return total


@numba.njit(**JIT)
def _grad_block(X, labels, SW, W, bias, rows, act, n_classes, start, stop, acc):
    """The block's sums for every active run: Z = W X_b^T (one matrix product for all runs and
    classes: run a's class c is row a C + c, the block's rows along it), the link a class at a
    time over the rows (vectorized), then G = R X_b, a second product over the block, still in
    cache. X is read from memory once; the products are BLAS's."""
    d = X.shape[1]
    Xb = _rows_f64(X, rows, start, stop)
    m = Xb.shape[0]
    Z = np.dot(W, Xb.T)  # (n_act * C, m)
    E = np.empty_like(Z)
    R = np.empty_like(Z)
    y = np.empty(m, np.int64)
    j = np.empty(m, np.int64)
    zj, T, s, L = np.empty(m), np.empty(m), np.empty(m), np.empty(m)
    for r in range(m):
        y[r] = labels[rows[start + r] if rows.size > 0 else start + r]
    for a in range(act.size):
        Za = Z[a * n_classes:(a + 1) * n_classes]
        Ea = E[a * n_classes:(a + 1) * n_classes]
        Ra = R[a * n_classes:(a + 1) * n_classes]
        _pivots(Za, bias[a], y, j, zj)
        _exp_from_pivot(Za, j, zj, Ea, T)
        for r in range(m):
            s[r] = _weight(SW, rows[start + r] if rows.size > 0 else start + r, act[a])
        _residuals(Ea, j, y, T, s, Ra)
        out = acc[act[a]]
        _log1p_rows(T, L)
        loss = 0.0
        weight = 0.0
        for r in range(m):  # (z_j - z_y) + log1p(T), summed in row order
            loss += s[r] * ((zj[r] - Za[y[r], r]) + L[r])
            weight += s[r]
        for c in range(n_classes):
            out[c * (d + 1) + d] = _sum_fast(Ra[c])  # the intercept's sum
        out[n_classes * (d + 1)] = loss
        out[n_classes * (d + 1) + 1] = weight
    G = np.dot(R, Xb)  # (n_act * C, d)
    for a in range(act.size):
        out = acc[act[a]]
        for c in range(n_classes):
            out[c * (d + 1):c * (d + 1) + d] = G[a * n_classes + c]


@numba.njit(**JIT)
def _hv_block(X, SW, W, bias, VW, vbias, act, n_classes, start, stop, acc):
    """As _grad_block, for the Hessian times V: Z = W X_b^T and U = V X_b^T in two products,
    p = softmax(z) from the leader, T = s p (u - p.u) a class at a time over the rows, then
    T X_b."""
    d = X.shape[1]
    Xb = _rows_f64(X, np.empty(0, np.int64), start, stop)
    m = Xb.shape[0]
    Z = np.dot(W, Xb.T)
    U = np.dot(VW, Xb.T)
    E = np.empty_like(Z)
    H = np.empty_like(Z)
    no_labels = np.empty(0, np.int64)
    j = np.empty(m, np.int64)
    zj, total, s, mean = np.empty(m), np.empty(m), np.empty(m), np.empty(m)
    for a in range(act.size):
        Za = Z[a * n_classes:(a + 1) * n_classes]
        Ea = E[a * n_classes:(a + 1) * n_classes]
        _pivots(Za, bias[a], no_labels, j, zj)
        _exp_from_pivot(Za, j, zj, Ea, total)
        weight = 0.0
        for r in range(m):
            s[r] = _weight(SW, start + r, act[a])
            weight += s[r]
        _hv_rows(Ea, j, total, U[a * n_classes:(a + 1) * n_classes], vbias[a], s, mean,
                 H[a * n_classes:(a + 1) * n_classes])
        out = acc[act[a]]
        for c in range(n_classes):
            out[c * (d + 1) + d] = _sum_fast(H[a * n_classes + c])
        out[n_classes * (d + 1)] = 0.0
        out[n_classes * (d + 1) + 1] = weight
    G = np.dot(H, Xb)
    for a in range(act.size):
        out = acc[act[a]]
        for c in range(n_classes):
            out[c * (d + 1):c * (d + 1) + d] = G[a * n_classes + c]


@numba.njit(**JIT)
def _hv_rows(E, j, T, U, vb, s, mean, H):
    """H = s p (u - p.u) with p = softmax(z) from E and T (as _residuals: p_j = 1 / (1 + T),
    p_c = E_c / (1 + T)) and u = U + vb; p is computed anew in each pass (the same operations),
    rather than stored, and p.u sums the classes in order."""
    n_classes, m = E.shape
    u = 1.0 + T[:m]
    pj = 1.0 / u
    mean[:m] = 0.0
    for c in range(n_classes):
        for r in range(m):
            p = pj[r] if c == j[r] else E[c, r] / u[r]
            mean[r] += p * (U[c, r] + vb[c])
    for c in range(n_classes):
        for r in range(m):
            p = pj[r] if c == j[r] else E[c, r] / u[r]
            H[c, r] = s[r] * p * ((U[c, r] + vb[c]) - mean[r])


@numba.njit(**JIT)
def _setup(P, act, n_classes, n_blocks):
    """The active runs' class weights as one (n_act C, d) matrix (run a's class c in row
    a C + c: one matrix product per block serves every run and class), their intercepts
    (n_act, C), and a zeroed slot per block."""
    n_runs, D = P.shape
    d = D // n_classes - 1
    W = np.empty((act.size * n_classes, d))
    bias = np.empty((act.size, n_classes))
    for a in range(act.size):
        for c in range(n_classes):
            base = c * (d + 1)
            W[a * n_classes + c] = P[act[a], base:base + d]
            bias[a, c] = P[act[a], base + d]
    return W, bias, np.zeros((n_blocks, n_runs, D + 2))


@numba.njit(**JIT)
def _finish(slots, P, alpha, act, n_classes, denominator, with_loss):
    """Adds the block slots in block order (the same sum for any number of threads), divides by
    each run's divisor (its weight sum, or denominator[k] when one is given), adds the
    penalty."""
    n_runs, D = P.shape
    d = D // n_classes - 1
    acc = np.zeros((n_runs, D + 2))
    for b in range(slots.shape[0]):
        acc += slots[b]
    loss, out = np.zeros(n_runs), np.zeros((n_runs, D))
    for k in act:
        total = acc[k, D + 1] if denominator.size == 0 else denominator[k]
        if total == 0.0:
            continue
        out[k] = acc[k, :D] / total
        loss[k] = acc[k, D] / total
        if alpha[k] != 0.0:
            norm2 = 0.0
            for c in range(n_classes):
                for j in range(c * (d + 1), c * (d + 1) + d):
                    norm2 += P[k, j] * P[k, j]
                    out[k, j] += alpha[k] * P[k, j]
            if with_loss:
                loss[k] += 0.5 * alpha[k] * norm2
    return loss, out


@numba.njit(parallel=True, **JIT)
def _loss_grad_threads(X, labels, SW, P, alpha, rows, act, n_classes, n_rows, bs, n_blocks,
                       denominator):
    W, bias, slots = _setup(P, act, n_classes, n_blocks)
    for b in numba.prange(n_blocks):
        start = b * bs
        _grad_block(X, labels, SW, W, bias, rows, act, n_classes, start,
                    min(start + bs, n_rows), slots[b])
    return _finish(slots, P, alpha, act, n_classes, denominator, True)


@numba.njit(**JIT)
def _loss_grad_serial(X, labels, SW, P, alpha, rows, act, n_classes, n_rows, bs, n_blocks,
                      denominator):
    """_loss_grad_threads on the calling thread: the same blocks in the same order, without
    switching numba's thread count (~8 us of Python per call)."""
    W, bias, slots = _setup(P, act, n_classes, n_blocks)
    for b in range(n_blocks):
        start = b * bs
        _grad_block(X, labels, SW, W, bias, rows, act, n_classes, start,
                    min(start + bs, n_rows), slots[b])
    return _finish(slots, P, alpha, act, n_classes, denominator, True)


@numba.njit(parallel=True, **JIT)
def _hessp_threads(X, SW, P, V, alpha, act, n_classes, bs, n_blocks):
    W, bias, slots = _setup(P, act, n_classes, n_blocks)
    VW, vbias, _ = _setup(V, act, n_classes, 0)
    for b in numba.prange(n_blocks):
        start = b * bs
        _hv_block(X, SW, W, bias, VW, vbias, act, n_classes, start,
                  min(start + bs, X.shape[0]), slots[b])
    # the Hessian's penalty term is alpha V_w (V, not P, is what it multiplies)
    return _finish(slots, V, alpha, act, n_classes, np.empty(0), False)[1]


@numba.njit(**JIT)
def _hessp_serial(X, SW, P, V, alpha, act, n_classes, bs, n_blocks):
    """_hessp_threads on the calling thread (as _loss_grad_serial)."""
    W, bias, slots = _setup(P, act, n_classes, n_blocks)
    VW, vbias, _ = _setup(V, act, n_classes, 0)
    for b in range(n_blocks):
        start = b * bs
        _hv_block(X, SW, W, bias, VW, vbias, act, n_classes, start,
                  min(start + bs, X.shape[0]), slots[b])
    return _finish(slots, V, alpha, act, n_classes, np.empty(0), False)[1]


def _one_thread(n_threads) -> bool:
    """Whether a call runs on one thread (_Threads' rule)."""
    n = numba.config.NUMBA_NUM_THREADS if n_threads is None else int(n_threads)
    return n <= 1 or numba.config.NUMBA_NUM_THREADS == 1 or _serial_only()


def _layout(n_rows: int, n_params: int) -> tuple[int, int]:
    """(rows per block, number of blocks): fixed by the problem's shape only."""
    bs = min(_MAX_BLOCK_ROWS, max(_MIN_BLOCK_ROWS, _BLOCK_ELEMENTS // max(n_params, 1)))
    return bs, max(1, -(-n_rows // bs))


_NO_DENOMINATOR = np.empty(0)


def loss_grad(X, labels, SW, P, alpha, rows, active, n_threads=None, denominator=None, *,
              n_classes):
    act = np.flatnonzero(active).astype(np.int64)
    if not act.size:
        return np.zeros(P.shape[0]), np.zeros(P.shape)
    n_rows = rows.size if rows.size else X.shape[0]
    bs, n_blocks = _layout(n_rows, P.shape[1])
    alpha = np.asarray(alpha, dtype=np.float64)
    den = _NO_DENOMINATOR if denominator is None else \
        np.asarray(denominator, dtype=np.float64).reshape(-1)
    args = (X, labels, SW, P, alpha, rows, act, n_classes, n_rows, bs, n_blocks, den)
    if _one_thread(n_threads):
        return _loss_grad_serial(*args)
    with _Threads(n_threads):
        return _loss_grad_threads(*args)


def hessp(X, SW, P, V, alpha, active, n_threads=None, *, n_classes):
    act = np.flatnonzero(active).astype(np.int64)
    if not act.size:
        return np.zeros(P.shape)
    bs, n_blocks = _layout(X.shape[0], P.shape[1])
    args = (X, SW, P, np.ascontiguousarray(V, dtype=np.float64),
            np.asarray(alpha, dtype=np.float64), act, n_classes, bs, n_blocks)
    if _one_thread(n_threads):
        return _hessp_serial(*args)
    with _Threads(n_threads):
        return _hessp_threads(*args)
