"""Numba backend: reference.py's formulas and the first-order fit loops, compiled (an optional
dependency).

``import numba`` below raises ImportError when numba is missing; the registry in
``_backends/__init__.py`` reports that as the reason the backend is not available.

The kernels (state.py's contract): ONE pass over the rows of X serves all K runs, for the loss and
gradient (``loss_grad``) and for Hessian-vector products (``hessp``). Each row's dot products and
accumulator updates touch the row while it is in cache (from _GEMM_RUNS active runs on, a
block's margins and gradient are two BLAS products over the block instead). Rows are cut into
blocks whose size depends only on the number of parameters (never on the thread count); each
block writes its
partial sums into its own slot and the slots are added in block order, so the result is the same,
bit for bit, with any number of threads. Sample weights are one column shared by every run (or
none: unit weights), the fast path, or one column per run.

The fit loops (every iteration, step rule, schedule, stopping test and history row) run inside
compiled code; the Python functions at the bottom only check shapes, unpack the RunSpec/FitState
and set the thread count for the call. The step rules are in numba_rules.py, one function each.
"""

from __future__ import annotations

import hashlib
import math
import os

import numba
import numpy as np
from llvmlite import ir as llvm_ir
from numba.core import types
from numba.extending import intrinsic, overload

from ..rules.base import HYPER_LR, HYPER_SCHED
from . import numba_rules
from .numba_rules import JIT as _JIT
from .numba_rules import RULE_CODES, _norm, _step
from .state import (
    CONVERGED,
    DIVERGED,
    DIVERGENCE_WEIGHT_NORM,
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
    SHUFFLE_WINDOW,
    FitState,
    RunSpec,
    block_seed,
    divergence_limit,
)

_BLOCK_ELEMENTS = 2**17  # a row block holds about this many parameters' worth of rows ...
_MIN_BLOCK_ROWS, _MAX_BLOCK_ROWS = 64, 2048  # ... within these bounds (depends on D only)
_PARALLEL_WORK = 100_000  # rows * D * active runs below which one thread does the pass
_BUFFER_BYTES = 32 * 2**20  # cap on the per-block partial sums held at once


# ---- one pass over the rows: loss and gradient, Hessian-vector products --------------------


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
def _link(z, y):
    """reference.loss_and_residual for one row: (log(1 + exp(z)) - y z, sigmoid(z) - y) without
    overflow or cancellation, the same operations in the same order."""
    e = math.exp(-abs(z))
    loss = ((z if z > 0.0 else 0.0) - y * z) + math.log1p(e)  # a NaN z: NaN through y z
    q = 1.0 - y
    residual = (q - y * e if z >= 0.0 else q * e - y) / (1.0 + e)
    return loss, residual


@numba.njit(**_JIT)
def _hess_weight(z):
    """reference.hess_weight for one row: sigmoid(z) (1 - sigmoid(z)) = e / (1 + e)^2."""
    e = math.exp(-abs(z))
    o = 1.0 + e
    return e / (o * o)


@numba.njit(**_JIT)
def _shared_weight(SW, i):
    """Row i's weight when every run shares it: 1 (no column) or the one column."""
    return 1.0 if SW.shape[1] == 0 else SW[i, 0]


# ---- the loss/gradient kernel ---------------------------------------------------------------
# numba gives LLVM's loop vectorizer only (its SLP vectorizer is off, NUMBA_SLP_VECTORIZE=0), and
# without fastmath neither a sum nor a multiply-add may be vectorized or fused. So the kernel is
# written as loops that the loop vectorizer takes as they are, with per-function fastmath flags:
# - _JIT_FMA ("contract"): a * b + c may become one fused multiply-add (rounds once, as the C++
#   AVX2 kernel does); nothing is reordered.
# - _JIT_SUM ("contract", "reassoc"), only for _dot_fast: LLVM splits the sum over the features
#   into vector partial sums (4 lanes x its interleave) added in a fixed order. The order is fixed
#   by the compiled code, so the bits never depend on the thread count, the block or the other runs.
#
# Why not the C++ run_chunks layout (weights packed feature-major, per 4-row group the (4 x 8)
# margins accumulated by broadcasting x[r, j] against the packed row j): measured here (numba
# 0.68 / LLVM, Zen 3, d = 100, per 4 rows x 8 runs) the margins took 3090 ns with 8 packed runs
# (LLVM's vectorized loop needs more than 8 iterations and the scalar remainder loop does all the
# work) and 787 ns with 16 (the 32 accumulators cannot stay in registers: without SLP a loop over
# 8 runs of constant length is unrolled to scalars, and with a run-time length they are loaded and
# stored at every feature); the gradient gt[j, 0:8] += x[r, j] res[r, 0:8] took 1229 / 705 ns.
# The layout below takes 428-525 ns for the margins (one vectorized dot product per row and run)
# and 514-628 ns for the gradient (per run one pass over the features for four rows).
# inspect_asm (numba 0.68, znver3): _dot_fast's loop is vfmadd231pd on %ymm (4 accumulators),
# _group's gradient loop vfmadd231pd / vmulpd on %ymm, and _link_many's loop (exp, log1p,
# division and selects) packed on %ymm (vfmadd...pd, vdivpd, vblendvpd, vroundpd: no libm call,
# no scalar conversion). A float32 X is not copied: both loops load it and widen it in the
# register (vcvtps2pd m128 -> %ymm, then the same packed vfmadd231pd), which measured faster than
# widening each row group into a float64 buffer (one more store and load per element) at K = 1
# and K = 16. Dot products over four rows at once (each load of P[k] serving four rows, as the
# C++ kernel does) were faster with X in cache but slower streaming X from memory at K = 1, and a
# different reduction order for one run than for several would break the per-run bit identity.
_JIT_FMA = dict(_JIT, fastmath={"contract"})
_JIT_SUM = dict(_JIT, fastmath={"contract", "reassoc"})


@intrinsic
def _f64_bits(typingctx, x):
    """The bits of a float64 as an int64 (an LLVM bitcast, which vectorizes)."""
    if x != types.float64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], llvm_ir.IntType(64))

    return types.int64(types.float64), codegen


@intrinsic
def _bits_f64(typingctx, b):
    """The float64 with the bits of an int64."""
    if not isinstance(b, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], llvm_ir.DoubleType())

    return types.float64(types.int64), codegen


_SHIFTER = 6755399441055744.0  # 1.5 * 2^52: adding it rounds to an integer, held in the low bits


@numba.njit(**_JIT_FMA)
def _exp_nonpositive(x):
    """exp(x) for x <= 0 (NaN stays NaN, -inf gives 0), as vector_math.hpp's exp_nonpositive:
    x = n ln2 + r, exp(r) by its Taylor polynomial of degree 13, times 2^n in two factors (both
    normal, so a subnormal result rounds once). math.exp is a libm call that stops the
    vectorizer (numba has no SVML here); this is selects and arithmetic only. Within 1 ulp."""
    x = -746.0 if x < -746.0 else x  # exp(-746) rounds to 0; a NaN compares false and stays
    t = x * 1.4426950408889634 + _SHIFTER
    n = t - _SHIFTER
    r = (x - n * 6.93147180369123816490e-01) - n * 1.90821492927058770002e-10
    p = 1.0 / 6227020800.0
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    # 2^n1 2^n2 with n1 = floor(n / 2): the exponent fields built from t's integer bits (AVX2
    # has no packed float64 -> int64 conversion nor 64-bit arithmetic shift; these vectorize).
    # np.floor, not math.floor: numba's math.floor returns an int64, and the float64 -> int64 ->
    # float64 round trip is four scalar conversions per vector of the link's loop (same bits).
    n1 = np.floor(n * 0.5)
    n2 = n - n1
    one = np.int64(1023)
    s1 = _bits_f64((_f64_bits(n1 + _SHIFTER) - _f64_bits(_SHIFTER) + one) << np.int64(52))
    s2 = _bits_f64((_f64_bits(n2 + _SHIFTER) - _f64_bits(_SHIFTER) + one) << np.int64(52))
    return p * s1 * s2


@numba.njit(**_JIT_FMA)
def _log_reduced(f, k):
    """log(2^k m) with f = m - 1 and m in [sqrt(2)/2, sqrt(2)): fdlibm's kernel, log(m) =
    f - f^2/2 + s (f^2/2 + R(s^2)) with s = f / (2 + f), and k ln 2 in two parts. Shared by
    _log1p_unit and softmax_numba's _log1p_nonnegative, which differ in how they reduce u."""
    s = f / (2.0 + f)
    z = s * s
    w = z * z
    t1 = w * (3.999999999940941908e-01 + w * (2.222219843214978396e-01
                                              + w * 1.531383769920937332e-01))
    t2 = z * (6.666666666666735130e-01 + w * (2.857142874366239149e-01 + w * (
        1.818357216161805012e-01 + w * 1.479819860511658591e-01)))
    R = t2 + t1
    hfsq = 0.5 * f * f
    return k * 6.93147180369123816490e-01 - (
        (hfsq - (s * (hfsq + R) + k * 1.90821492927058770002e-10)) - f)


@numba.njit(**_JIT_FMA)
def _log1p_unit(e):
    """log1p(e) for 0 <= e <= 1 (NaN stays NaN), as vector_math.hpp's log1p_unit: fdlibm's
    log on u = 1 + e rounded, plus the rounding error c / u. Within 1 ulp."""
    u = 1.0 + e
    c = e - (u - 1.0)  # u + c == 1 + e exactly
    high = u > 1.4142135623730951
    k = 1.0 if high else 0.0
    m = u * 0.5 if high else u
    return _log_reduced(m - 1.0, k) + c / u


@numba.njit(**_JIT_FMA)
def _link_many(zb, yb, sb, lb, rb, n):
    """lb[t] = sb[t] * loss, rb[t] = sb[t] * residual of (zb[t], yb[t]) for t < n: _link's
    formulas (reference.loss_and_residual) with the exp and log1p above, in one loop that LLVM
    vectorizes (each conditional is a select: both sides are computed)."""
    for t in range(n):
        z = zb[t]
        y = yb[t]
        s = sb[t]
        e = _exp_nonpositive(-abs(z))
        loss = ((z if z > 0.0 else 0.0) - y * z) + _log1p_unit(e)  # a NaN z: NaN through y z
        q = 1.0 - y
        a = q - y * e
        b = q * e - y
        lb[t] = s * loss
        rb[t] = s * ((a if z >= 0.0 else b) / (1.0 + e))


@numba.njit(**_JIT_SUM)
def _dot_fast(X, i, P, k, d):
    """X[i, :d] . P[k, :d], vectorized by LLVM (reassoc: see above); a float32 X is widened per
    element inside the loop (vcvtps2pd on the loaded vector)."""
    s = 0.0
    for j in range(d):
        s += X[i, j] * P[k, j]
    return s


@numba.njit(**_JIT_FMA)
def _group(X, idx, ng, P, act, Y, SW, zb, yb, sb, lb, rb, acc):
    """ng rows (rows X[idx[r]], and their rows of Y and SW) against the runs act into acc: the
    margins (a dot product per row and run), the link of all ng * K values in one vectorized
    loop, the loss and intercept sums in row order, then per run the gradient over the rows four
    at a time (acc[k, :d] read and written once per four rows). A float32 X is read as it is and
    widened per element in the vector loops (vcvtps2pd), in the dot products and the gradient."""
    d = X.shape[1]
    nq = act.size
    shared_s = SW.shape[1] <= 1
    shared_y = Y.shape[1] == 1
    for r in range(ng):
        i = idx[r]
        s_row = _shared_weight(SW, i)
        for c in range(nq):
            k = act[c]
            t = r * nq + c
            zb[t] = _dot_fast(X, i, P, k, d) + P[k, d]
            yb[t] = Y[i, 0] if shared_y else Y[i, k]
            sb[t] = s_row if shared_s else SW[i, k]  # Ks == K: run k's own column
    _link_many(zb, yb, sb, lb, rb, ng * nq)
    for c in range(nq):  # row order, as the scalar path; the sums in registers
        k = act[c]
        loss_sum, res_sum = acc[k, d + 1], acc[k, d]
        for r in range(ng):
            loss_sum += lb[r * nq + c]
            res_sum += rb[r * nq + c]
        acc[k, d + 1], acc[k, d] = loss_sum, res_sum
    quads = ng - ng % 4
    for c in range(nq):
        k = act[c]
        for r in range(0, quads, 4):
            a0 = rb[r * nq + c]
            a1 = rb[(r + 1) * nq + c]
            a2 = rb[(r + 2) * nq + c]
            a3 = rb[(r + 3) * nq + c]
            i0, i1, i2, i3 = idx[r], idx[r + 1], idx[r + 2], idx[r + 3]
            for j in range(d):
                acc[k, j] += ((a0 * X[i0, j] + a1 * X[i1, j])
                              + (a2 * X[i2, j] + a3 * X[i3, j]))
        for r in range(quads, ng):
            a = rb[r * nq + c]
            i = idx[r]
            for j in range(d):
                acc[k, j] += a * X[i, j]


@numba.njit(**_JIT)
def _group_rows(act_size):
    """Rows per group: 4, or more for fewer than 4 runs so that the link's loop has at least 16
    values (LLVM's vectorized loop runs 4 x its interleave at a time; below that the scalar
    remainder does the work). A multiple of 4: the gradient takes the rows four at a time."""
    return 4 * max(1, (4 + act_size - 1) // act_size)


@numba.njit(**_JIT)
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


def _rows_f64(X, rows, start, stop):
    """The block's rows as a C-contiguous float64 (m, d) array (compiled only, below)."""


@overload(_rows_f64)
def _rows_f64_impl(X, rows, start, stop):
    # a full batch of a C-contiguous float64 X is read in place: the copy took ~30 of ~500 us
    # per multinomial gradient on digits
    if X.dtype == types.float64 and X.layout == "C":
        def view(X, rows, start, stop):
            return X[start:stop] if rows.size == 0 else _block_rows(X, rows, start, stop)

        return view
    return lambda X, rows, start, stop: _block_rows(X, rows, start, stop)


# From this many active runs on, a block's margins and gradient are two BLAS products over the
# block (_block_gemm) instead of a dot product and an update per row and run (_group): K = 16 at
# 400,000 x 100, 1 Numba thread, Zen 3: float64 264-283 -> 202-245 ms, float32 251 -> 199 ms.
_GEMM_RUNS = 8


@numba.njit(**_JIT)
def _block_gemm(X, Y, SW, P, rows, act, start, stop, acc):
    """_block for many runs, as softmax_numba's blocks: Z = W X_b^T (one BLAS product for every
    active run, the block's rows along each run's row of Z), the link of each run's row in one
    vectorized loop (_link_many), the loss and intercept sums in row order, then G = R X_b, a
    second product while the block is in cache."""
    d = X.shape[1]
    Xb = _rows_f64(X, rows, start, stop)
    m = Xb.shape[0]
    nq = act.size
    W = np.empty((nq, d))
    for c in range(nq):
        W[c] = P[act[c], :d]
    Z = np.dot(W, Xb.T)  # (nq, m)
    R = np.empty((nq, m))
    yb, sb, lb = np.empty(m), np.empty(m), np.empty(m)
    shared_s = SW.shape[1] <= 1
    shared_y = Y.shape[1] == 1
    idx = np.empty(m, np.int64)  # the block's rows of X (and of Y and SW)
    for r in range(m):
        idx[r] = rows[start + r] if rows.size > 0 else start + r
    for c in range(nq):
        k = act[c]
        zb = Z[c]
        for r in range(m):
            i = idx[r]
            zb[r] += P[k, d]
            yb[r] = Y[i, 0] if shared_y else Y[i, k]
            sb[r] = _shared_weight(SW, i) if shared_s else SW[i, k]
        _link_many(zb, yb, sb, lb, R[c], m)
        loss_sum, res_sum = 0.0, 0.0
        for r in range(m):  # row order
            loss_sum += lb[r]
            res_sum += R[c, r]
        acc[k, d + 1], acc[k, d] = loss_sum, res_sum
    G = np.dot(R, Xb)  # (nq, d)
    for c in range(nq):
        acc[act[c], :d] = G[c]


@numba.njit(**_JIT)
def _block(X, Y, SW, P, rows, act, start, stop, acc):
    """Rows start..stop-1 (positions in rows, or rows of X when rows is empty) into acc (K, D + 1):
    acc[k, :D] = sum s (sigmoid(z) - y) (x, 1), acc[k, D] = sum s (log1pexp(z) - y z).
    Rows go in groups (_group_rows) from start on, then the last ones in a smaller group of whole
    quads and one by one: how rows are grouped depends on start and stop only."""
    if act.size >= _GEMM_RUNS:
        _block_gemm(X, Y, SW, P, rows, act, start, stop, acc)
        return
    d = X.shape[1]
    use_rows = rows.size > 0
    for k in act:
        for j in range(d + 2):
            acc[k, j] = 0.0
    nq = act.size
    G = _group_rows(nq)
    zb, yb, sb = np.empty(G * nq), np.empty(G * nq), np.empty(G * nq)
    lb, rb = np.empty(G * nq), np.empty(G * nq)
    rows_i = np.empty(G, dtype=np.int64)
    pos = start
    while pos < stop:
        left = stop - pos
        ng = G if left >= G else (left - left % 4 if left >= 4 else 1)
        for r in range(ng):
            rows_i[r] = rows[pos + r] if use_rows else pos + r
        _group(X, rows_i, ng, P, act, Y, SW, zb, yb, sb, lb, rb, acc)
        pos += ng


@numba.njit(**_JIT)
def _hv_block(X, SW, P, V, act, start, stop, acc):
    """Rows start..stop-1 into acc (K, >= D): acc[k, :D] = sum s sigma (1 - sigma) u (x, 1) with
    z = x . P[k, :d] + P[k, d], u = x . V[k, :d] + V[k, d]."""
    d = X.shape[1]
    shared_s = SW.shape[1] <= 1
    for k in act:
        for j in range(d + 1):
            acc[k, j] = 0.0
    for i in range(start, stop):
        s_row = _shared_weight(SW, i)
        for k in act:
            s = s_row if shared_s else SW[i, k]  # Ks == K: run k's own column
            z = _dot(X, i, P, k, d) + P[k, d]
            u = _dot(X, i, V, k, d) + V[k, d]
            r = s * _hess_weight(z) * u  # reference.hessp's operation order
            for j in range(d):
                acc[k, j] += r * X[i, j]
            acc[k, d] += r


@numba.njit(parallel=True, **_JIT)
def _blocks_parallel(X, Y, SW, P, rows, act, n_rows, bs, first, n_blocks, buf):
    for b in numba.prange(n_blocks):
        start = (first + b) * bs
        _block(X, Y, SW, P, rows, act, start, min(start + bs, n_rows), buf[b])


@numba.njit(**_JIT)
def _blocks_serial(X, Y, SW, P, rows, act, n_rows, bs, first, n_blocks, buf):
    for b in range(n_blocks):
        start = (first + b) * bs
        _block(X, Y, SW, P, rows, act, start, min(start + bs, n_rows), buf[b])


@numba.njit(parallel=True, **_JIT)
def _hv_blocks_parallel(X, SW, P, V, act, n_rows, bs, first, n_blocks, buf):
    for b in numba.prange(n_blocks):
        start = (first + b) * bs
        _hv_block(X, SW, P, V, act, start, min(start + bs, n_rows), buf[b])


@numba.njit(**_JIT)
def _hv_blocks_serial(X, SW, P, V, act, n_rows, bs, first, n_blocks, buf):
    for b in range(n_blocks):
        start = (first + b) * bs
        _hv_block(X, SW, P, V, act, start, min(start + bs, n_rows), buf[b])


@numba.njit(**_JIT)
def _weight_totals(SW, rows, n_rows, out):
    """out[k] = the sum of run k's weights over the rows used (rows, or the first n_rows)."""
    n_runs = out.size
    ks = SW.shape[1]
    if ks == 0:
        for k in range(n_runs):
            out[k] = float(n_rows)
        return
    for k in range(ks):
        out[k] = 0.0
    for pos in range(n_rows):
        i = rows[pos] if rows.size > 0 else pos
        for k in range(ks):
            out[k] += SW[i, k]
    if ks == 1:
        for k in range(1, n_runs):
            out[k] = out[0]


@numba.njit(**_JIT)
def _workspace(n_rows, n_runs, n_params, threads):
    """(rows per block, partial-sum slots (n_slots, K, D + 1)); the block size depends on D only."""
    bs = min(_MAX_BLOCK_ROWS, max(_MIN_BLOCK_ROWS, _BLOCK_ELEMENTS // n_params))
    n_blocks = max(1, (n_rows + bs - 1) // bs)
    cap = max(2 * threads, _BUFFER_BYTES // (8 * n_runs * (n_params + 1)))
    return bs, np.empty((min(n_blocks, cap), n_runs, n_params + 1))


@numba.njit(**_JIT)
def _runs_to_do(active, total):
    """The runs that are active and whose divisor is not 0 (the others come back as zeros)."""
    n = 0
    for k in range(active.size):
        n += active[k] != 0 and total[k] != 0.0
    act = np.empty(n, dtype=np.int64)
    n = 0
    for k in range(active.size):
        if active[k] != 0 and total[k] != 0.0:
            act[n] = k
            n += 1
    return act


@numba.njit(**_JIT)
def _add_l2(w, alpha_k, d, g):
    """g[:d] += alpha_k w[:d]; returns the loss term (alpha_k / 2) ||w[:d]||^2. The L2 term of
    the dense, CSR and multinomial CSR Numba kernels, called only where alpha_k != 0 (with
    alpha == 0 the penalty is not computed at all); the same flags, so the same bits as the
    loops written in place."""
    sq = 0.0
    for j in range(d):
        sq += w[j] * w[j]
    for j in range(d):
        g[j] += alpha_k * w[j]
    return 0.5 * alpha_k * sq


@numba.njit(**_JIT)
def _loss_grad_into(X, Y, SW, P, alpha, rows, active, total, bs, buf, threads, loss, grad):
    """reference._loss_grad written into loss (K,) and grad (K, D). total (K,) divides run k's
    sums: its rows' weight sum, a given denominator, or a mini-batch's expected weight; a run
    whose total is 0 comes back as zeros. More than one thread only when the pass is big
    enough; the bits never depend on it."""
    n_runs, n_params = P.shape
    d = n_params - 1
    n_rows = rows.size if rows.size > 0 else X.shape[0]
    for k in range(n_runs):
        loss[k] = 0.0
        for j in range(n_params):
            grad[k, j] = 0.0
    act = _runs_to_do(active, total)
    if act.size == 0 or n_rows == 0:
        return
    n_blocks = (n_rows + bs - 1) // bs
    parallel = threads > 1 and n_blocks > 1 and n_rows * n_params * act.size > _PARALLEL_WORK
    n_slots = buf.shape[0]
    for first in range(0, n_blocks, n_slots):  # slots added in block order: thread-independent
        m = min(n_slots, n_blocks - first)
        if parallel:
            _blocks_parallel(X, Y, SW, P, rows, act, n_rows, bs, first, m, buf)
        else:
            _blocks_serial(X, Y, SW, P, rows, act, n_rows, bs, first, m, buf)
        for b in range(m):
            for k in act:
                for j in range(n_params):
                    grad[k, j] += buf[b, k, j]
                loss[k] += buf[b, k, n_params]
    for k in act:
        loss[k] /= total[k]
        for j in range(n_params):
            grad[k, j] /= total[k]
        if alpha[k] != 0.0:  # with alpha == 0 the penalty is not computed at all
            loss[k] += _add_l2(P[k], alpha[k], d, grad[k])


@numba.njit(**_JIT)
def _loss_grad_entry(X, Y, SW, P, alpha, rows, active, denominator, threads, loss, grad):
    n_rows = rows.size if rows.size > 0 else X.shape[0]
    bs, buf = _workspace(n_rows, P.shape[0], P.shape[1], threads)
    total = np.empty(P.shape[0])
    if denominator.size > 0:
        total[:] = denominator
    else:
        _weight_totals(SW, rows, n_rows, total)
    _loss_grad_into(X, Y, SW, P, alpha, rows, active, total, bs, buf, threads, loss, grad)


@numba.njit(**_JIT)
def _hessp_entry(X, SW, P, V, alpha, active, threads, out):
    """reference.hessp written into out (K, D): one pass over all rows for every active run."""
    n_runs, n_params = P.shape
    d = n_params - 1
    n_rows = X.shape[0]
    for k in range(n_runs):
        for j in range(n_params):
            out[k, j] = 0.0
    total = np.empty(n_runs)
    _weight_totals(SW, np.empty(0, dtype=np.int64), n_rows, total)
    act = _runs_to_do(active, total)
    if act.size == 0 or n_rows == 0:
        return
    bs, buf = _workspace(n_rows, n_runs, n_params, threads)
    n_blocks = (n_rows + bs - 1) // bs
    parallel = threads > 1 and n_blocks > 1 and 2 * n_rows * n_params * act.size > _PARALLEL_WORK
    n_slots = buf.shape[0]
    for first in range(0, n_blocks, n_slots):  # slots added in block order: thread-independent
        m = min(n_slots, n_blocks - first)
        if parallel:
            _hv_blocks_parallel(X, SW, P, V, act, n_rows, bs, first, m, buf)
        else:
            _hv_blocks_serial(X, SW, P, V, act, n_rows, bs, first, m, buf)
        for b in range(m):
            for k in act:
                for j in range(n_params):
                    out[k, j] += buf[b, k, j]
    for k in act:
        for j in range(n_params):
            out[k, j] /= total[k]
        for j in range(d):
            out[k, j] += alpha[k] * V[k, j]


# ---- schedules, small vector helpers, the mini-batch shuffle -------------------------------------


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
def _weights_diverged(p, max_norm):
    """driver._weights_diverged: not finite, or a norm above max_norm."""
    return not _finite(p) or _norm(p) > max_norm


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


@numba.njit(**_JIT)
def _shuffle_order_blocks(n, seed, bseed, epoch, block, window):
    """state.shuffle_order_blocks: the blocks of `block` rows in the order _shuffle_order(n_blocks,
    bseed = state.block_seed(seed), epoch), grouped into windows of max(1, window // block)
    blocks, each window's rows ordered by the row keys (distinct within an epoch: any sort)."""
    n_blocks = (n + block - 1) // block
    per_window = max(1, window // block)
    blocks = _shuffle_order(n_blocks, bseed, epoch)
    order = np.empty(n, dtype=np.int64)
    keys = np.empty(min(n, per_window * block), dtype=np.uint64)
    offset = np.uint64(epoch) * np.uint64(n)
    pos = 0
    for w in range(0, n_blocks, per_window):
        begin = pos
        for j in range(w, min(w + per_window, n_blocks)):
            first = blocks[j] * block
            for row in range(first, min(first + block, n)):
                z = seed + (np.uint64(row + 1) + offset) * GOLDEN
                z = (z ^ (z >> np.uint64(30))) * MIX1
                z = (z ^ (z >> np.uint64(27))) * MIX2
                keys[pos - begin] = z ^ (z >> np.uint64(31))
                order[pos] = row
                pos += 1
        idx = np.argsort(keys[:pos - begin], kind="mergesort")
        order[begin:pos] = order[begin:pos][idx]
    return order


# ---- the fit loops (the reference driver's full-batch and mini-batch loops) ----------------


@numba.njit(**_JIT)
def _run_full_batch(X, Y, SW, rule, sched, hyper, alpha, fit_intercept, tol, max_iter,
                    total_updates, record, has_reference, P, slots, grad, loss, t, n_iter,
                    status, hist, ref, n_steps, threads, limit, max_norm):
    """limit (K,): each run's divergence limit of the loss; max_norm: of the weights (state.py)."""
    n_runs, n_params = P.shape
    d = n_params - 1
    all_rows = np.empty(0, dtype=np.int64)
    bs, buf = _workspace(X.shape[0], n_runs, n_params, threads)
    total = np.empty(n_runs)
    _weight_totals(SW, all_rows, X.shape[0], total)
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
        _loss_grad_into(X, Y, SW, P, alpha, all_rows, running, total, bs, buf, threads,
                        new_loss, new_grad)
        for k in range(n_runs):
            if not running[k]:
                continue
            if not fit_intercept:
                new_grad[k, d] = 0.0
            if (_weights_diverged(P[k], max_norm) or not math.isfinite(new_loss[k])
                    or not _finite(new_grad[k]) or new_loss[k] > limit[k]):
                _copy(P[k], P_old[k])  # keep the last good weights
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
def _run_minibatch(X, Y, SW, rule, sched, hyper, alpha, fit_intercept, tol, batch_size, seed,
                   max_iter, total_updates, record, has_reference, P, slots, loss, t, n_iter,
                   status, best_loss, no_improve, epoch, hist, ref, n_steps, threads,
                   mean_weight, limit, max_norm, shuffle_block, bseed, window):
    """mean_weight (K,): each run's mean weight over all rows (1 for unit weights); run k's
    sums over a batch of m rows are divided by m * mean_weight[k] (driver.ReferenceDriver).
    limit (K,) and max_norm: the divergence limits of the loss and the weights (state.py).
    shuffle_block > 0: the block order (state.shuffle_order_blocks), bseed its block seed, window
    state.SHUFFLE_WINDOW (an argument: numba's cache would keep a global of state.py)."""
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
    total = np.zeros(n_runs)
    b_loss = np.zeros(n_runs)
    b_grad = np.zeros((n_runs, n_params))
    for _ in range(n_steps):
        if _running(status, in_epoch) == 0:
            return
        if shuffle_block > 0:
            order = _shuffle_order_blocks(n, seed, bseed, epoch[0], shuffle_block, window)
        else:
            order = _shuffle_order(n, seed, epoch[0])
        epoch[0] += 1
        for k in range(n_runs):
            _copy(P_start[k], P[k])
            loss_sum[k] = grad_norm_sum[k] = lr_used[k] = 0.0
        for lo in range(0, n, batch_size):
            rows = order[lo:lo + batch_size]
            for k in range(n_runs):  # the batch's expected weight, not its own
                total[k] = rows.size * mean_weight[k]
            _loss_grad_into(X, Y, SW, P, alpha, rows, in_epoch, total, bs, buf, threads,
                            b_loss, b_grad)
            for k in range(n_runs):
                if not in_epoch[k]:
                    continue
                if not fit_intercept:
                    b_grad[k, d] = 0.0
                if (not math.isfinite(b_loss[k]) or not _finite(b_grad[k])
                        or b_loss[k] > limit[k]):
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
                if _weights_diverged(P[k], max_norm):
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


# ---- threads and fork() ----------------------------------------------------------------------
# numba launches its threading layer at the first parallel call: TBB when it is installed, else
# OpenMP, else its own workqueue. The GNU OpenMP runtime does not survive fork(): in a child forked
# from a process that has launched it, the first parallel region kills the process ("Terminating:
# fork() called from a process already using GNU OpenMP, this is unsafe."), which also leaves a
# multiprocessing.Pool (fork context) waiting for ever on the dead worker. TBB and workqueue are
# fork-safe (numba's docs), but they are only used when present or chosen, and choosing a threading
# layer is the application's business, not a library's. So a process forked after numba's threads
# were launched (in it or an ancestor) runs the OpenMP layer's passes on one thread: the serial
# loops never enter the threading layer, and the bits are the same (they never depend on the
# thread count). A child forked before the layer was launched launches its own and stays parallel.
_forked_after_launch = False


def _note_fork_in_child() -> None:
    global _forked_after_launch
    if _layer_launched():
        _forked_after_launch = True


def _layer_launched() -> bool:
    try:
        from numba.np.ufunc import parallel
    except ImportError:  # pragma: no cover - numba moved it: assume launched (the safe side)
        return True
    return bool(getattr(parallel, "_is_initialized", True))


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_note_fork_in_child)


def _serial_only() -> bool:
    """True in a forked child whose inherited threading layer is OpenMP (see above)."""
    if not _forked_after_launch:
        return False
    try:
        return numba.threading_layer() == "omp"
    except ValueError:  # pragma: no cover - not launched after all
        return False


class _Threads:
    """numba.set_num_threads(n) for the duration of a call (None: NUMBA_NUM_THREADS); one thread,
    without touching the threading layer, where it is unsafe (_serial_only)."""

    def __init__(self, n_threads) -> None:
        top = numba.config.NUMBA_NUM_THREADS
        self.n = top if n_threads is None else max(1, min(int(n_threads), top))
        self.serial = _serial_only()
        if self.serial:
            self.n = 1

    def __enter__(self) -> None:
        if not self.serial:
            self.previous = numba.get_num_threads()
            numba.set_num_threads(self.n)

    def __exit__(self, *exc) -> None:
        if not self.serial:
            numba.set_num_threads(self.previous)


def _as_f64(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float64)


def _per_run(value, n_runs: int, name: str) -> np.ndarray:
    """A new, writable (K,) float64 array from a (K,) array (or a scalar, for every run):
    always the same array type, so the compiled functions have one signature."""
    a = np.asarray(value, dtype=np.float64)
    if a.ndim > 1 or (a.ndim == 1 and a.size != n_runs):
        raise ValueError(f"{name} must have shape ({n_runs},), got {a.shape}")
    return np.array(np.broadcast_to(a, (n_runs,)))


def _check_shapes(X, Y, SW, P) -> None:
    """The mismatches that compiled code would turn into reads past the end of an array."""
    n, n_runs = X.shape[0], P.shape[0]
    if P.ndim != 2 or P.shape[1] != X.shape[1] + 1:
        raise ValueError(f"P must have shape (K, {X.shape[1] + 1}), got {P.shape}")
    if Y is not None and (Y.ndim != 2 or Y.shape[0] != n or Y.shape[1] not in (1, n_runs)):
        raise ValueError(f"Y must have shape ({n}, 1 or {n_runs}), got {Y.shape}")
    if SW.ndim != 2 or SW.shape[1] not in (0, 1, n_runs) or (SW.shape[1] and SW.shape[0] != n):
        raise ValueError(f"SW must have shape ({n}, 0, 1 or {n_runs}), got {SW.shape}")


def loss_grad(X, Y, SW, P, alpha, rows, active, n_threads=None, denominator=None):
    """Loss (K,) and gradient (K, D) of the runs marked active (see state.py for the contract)."""
    P, Y, SW = _as_f64(P), _as_f64(Y), _as_f64(SW)
    _check_shapes(X, Y, SW, P)
    n_runs = P.shape[0]
    if denominator is None or np.size(denominator) == 0:
        denominator = np.empty(0)
    else:
        denominator = _per_run(denominator, n_runs, "denominator")
    loss = np.zeros(n_runs)
    grad = np.zeros(P.shape)
    threads = _Threads(n_threads)
    with threads:
        _loss_grad_entry(
            X, Y, SW, P, _per_run(alpha, n_runs, "alpha"), np.ascontiguousarray(rows, np.int64),
            np.ascontiguousarray(active, np.uint8), denominator, threads.n, loss, grad,
        )
    return loss, grad


def hessp(X, SW, P, V, alpha, active, n_threads=None):
    """Hessian-vector products (K, D) of the runs marked active (see state.py for the contract)."""
    P, V, SW = _as_f64(P), _as_f64(V), _as_f64(SW)
    _check_shapes(X, None, SW, P)
    if V.shape != P.shape:
        raise ValueError(f"V must have the shape of P {P.shape}, got {V.shape}")
    out = np.zeros(P.shape)
    threads = _Threads(n_threads)
    with threads:
        _hessp_entry(X, SW, P, V, _per_run(alpha, P.shape[0], "alpha"),
                     np.ascontiguousarray(active, np.uint8), threads.n, out)
    return out


def run(X, Y, SW, spec: RunSpec, state: FitState, n_steps: int, n_threads=None) -> None:
    """Advance the running runs by up to n_steps iterations (see state.py for the contract)."""
    s = state
    Y, SW = _as_f64(Y), _as_f64(SW)
    _check_shapes(X, Y, SW, s.P)
    n_runs = s.P.shape[0]
    rule_code = np.ascontiguousarray(spec.rule_code, np.int64)
    unknown = sorted(set(rule_code.tolist()) - set(RULE_CODES.values()))
    if unknown:
        raise ValueError(f"rule code(s) {unknown} have no compiled step in the numba backend; "
                         f"it compiles {sorted(RULE_CODES)}")
    common = (rule_code, np.ascontiguousarray(spec.sched_code, np.int64),
              _as_f64(spec.hyper), _per_run(spec.alpha, n_runs, "alpha"),
              bool(spec.fit_intercept), float(spec.tol))
    limit = np.array(np.broadcast_to(divergence_limit(s.start_loss), (n_runs,)), np.float64)
    max_norm = float(DIVERGENCE_WEIGHT_NORM)
    threads = _Threads(n_threads)
    with threads:
        if spec.batch_size:
            # A batch's sums for run k are divided by its rows * the mean of run k's weights,
            # the mean computed as oracle.DenseOracle.mean_weight does (the same bits).
            mean = SW.mean(axis=0) if SW.shape[1] else np.ones(1)
            mean = np.array(np.broadcast_to(mean, (n_runs,)))
            _run_minibatch(
                X, Y, SW, *common, int(spec.batch_size), np.uint64(spec.seed),
                int(spec.max_iter), int(spec.total_updates), bool(spec.record_history),
                bool(spec.has_reference), s.P, s.slots, s.loss, s.t, s.n_iter, s.status,
                s.best_loss, s.no_improve, s.epoch, s.history, s.reference, int(n_steps), threads.n,
                mean, limit, max_norm, int(spec.shuffle_blocks),
                np.uint64(block_seed(spec.seed)), SHUFFLE_WINDOW,
            )
        else:
            _run_full_batch(
                X, Y, SW, *common, int(spec.max_iter), int(spec.total_updates),
                bool(spec.record_history), bool(spec.has_reference), s.P, s.slots, s.grad,
                s.loss, s.t, s.n_iter, s.status, s.history, s.reference, int(n_steps), threads.n,
                limit, max_norm,
            )


# ---- numba's cache and numba_rules.py -------------------------------------------------------
# numba's cache only checks the file a function is defined in: fit loops cached here would keep
# calling the steps of an older numba_rules.py. A cached constant records which numba_rules.py
# the cache was built from; when the file has changed since, the loops' cache is dropped.


def _source_hash(module) -> int:
    try:
        with open(module.__file__, "rb") as f:
            return int.from_bytes(hashlib.sha256(f.read()).digest()[:7], "little")
    except (OSError, TypeError):  # no source file: nothing to compare
        return 0


_RULES_SOURCE = _source_hash(numba_rules)


@numba.njit(**_JIT)
def _rules_source_compiled():
    return _RULES_SOURCE  # a global is frozen into the compiled (and cached) code


if _rules_source_compiled() != _RULES_SOURCE:
    for _fn in (_rules_source_compiled, _run_full_batch, _run_minibatch):
        _fn.recompile()  # drops the function's cache entries; recompiled on the next call
