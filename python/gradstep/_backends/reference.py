"""Plain NumPy: the executable specification of the kernel contract (see state.py).

Each formula of DESIGN.md is written here once, literally, for readability rather than speed.
The Numba and C++ kernels must agree with these functions (tests/test_backends.py). The NumPy
backend's fit loop is the reference driver (``gradstep.driver``) running on these functions.
"""

from __future__ import annotations

import numpy as np


def loss_and_residual(z: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, for 0/1 targets y: the loss log(1 + exp(z)) - y z and the residual sigmoid(z) - y,
    from one e = exp(-|z|), without overflow and without cancellation:

        loss     = (max(z, 0) - y z) + log1p(e)
        residual = (z >= 0 ? (1 - y) - y e : (1 - y) e - y) / (1 + e)

    For y in {0, 1}, max(z, 0) - y z is exactly 0 or |z| and one product in each bracket of the
    residual is exactly 0: nothing is subtracted from a rounded value, so both are within a few
    ulp for every finite z (log(1 + exp(z)) - z for y = 1 loses everything below the ulp of z:
    at z = 37 it is 0 instead of 8.5e-17; sigmoid(z) - 1 likewise). Every kernel computes these
    operations in this order.
    """
    e = np.exp(-np.abs(z))
    loss = (np.maximum(z, 0.0) - y * z) + np.log1p(e)
    q = 1.0 - y
    residual = np.where(z >= 0, q - y * e, q * e - y) / (1.0 + e)
    return loss, residual


def hess_weight(z: np.ndarray) -> np.ndarray:
    """sigmoid(z) (1 - sigmoid(z)) as e / (1 + e)^2, e = exp(-|z|): no overflow, and no 1 - sigmoid
    (which is 0 from z = 37 on)."""
    e = np.exp(-np.abs(z))
    o = 1.0 + e
    return e / (o * o)


def log1pexp_and_sigmoid(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log(1 + exp(z)) and 1 / (1 + exp(-z)) without overflow, from one exp(-|z|)."""
    e = np.exp(-np.abs(z))
    log1pexp = np.maximum(z, 0.0) + np.log1p(e)
    sigmoid = np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    return log1pexp, sigmoid


def sigmoid(z: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-z)) without overflow (the predicted probability of the positive class)."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _weights(SW: np.ndarray, k: int, m: int) -> np.ndarray:
    """Run k's weights over m rows: ones, the shared column, or the run's own column."""
    if SW.shape[1] == 0:
        return np.ones(m)
    return SW[:, 0 if SW.shape[1] == 1 else k]


def _times(X, w: np.ndarray) -> np.ndarray:
    """X @ w as a 1-D array, for an ndarray X or a SciPy sparse one (which may return a matrix):
    one function serves the dense and the CSR specifications."""
    return np.asarray(X @ w).reshape(-1)


def _transposed_times(X, r: np.ndarray) -> np.ndarray:
    """X' r as a 1-D array: ``r @ X`` for an ndarray (the dense kernels' specification),
    ``X.T @ r`` for a SciPy sparse X (a CSR mat-vec of its transpose)."""
    return r @ X if isinstance(X, np.ndarray) else np.asarray(X.T @ r).reshape(-1)


def loss_grad(X, Y, SW, P, alpha, rows, active, n_threads=None, denominator=None):
    """Loss (K,) and gradient (K, D) of the runs marked active (see state.py for the contract)."""
    with np.errstate(over="ignore", invalid="ignore"):  # a diverging run overflows: reported
        return _loss_grad(X, Y, SW, P, alpha, rows, active, denominator)


def _loss_grad(X, Y, SW, P, alpha, rows, active, denominator):
    # One run at a time: each run's sums are then the same whether it runs alone or with others.
    n_runs, n_params = P.shape
    d = n_params - 1
    loss = np.zeros(n_runs)
    grad = np.zeros((n_runs, n_params))
    if rows.size:
        X, Y, SW = X[rows], Y[rows], SW[rows]
    m = X.shape[0]
    Xf = X.astype(np.float64, copy=False)  # float32 X widened per element, as in the kernels
    for k in np.flatnonzero(active):
        s = _weights(SW, k, m)
        total = s.sum()
        if denominator is not None and np.size(denominator):
            total = float(denominator[k])
        if m == 0 or total == 0.0:  # a run whose divisor is 0 comes back as zeros
            continue
        w, b = P[k, :d], P[k, d]
        y = Y[:, 0 if Y.shape[1] == 1 else k]
        z = _times(Xf, w) + b
        loss_rows, residual = loss_and_residual(z, y)
        loss[k] = (s * loss_rows).sum() / total
        r = s * residual / total
        grad[k, :d] = _transposed_times(Xf, r)
        grad[k, d] = r.sum()
        if alpha[k] != 0.0:  # with alpha == 0 the penalty is not computed at all
            loss[k] += 0.5 * alpha[k] * (w @ w)
            grad[k, :d] += alpha[k] * w
    return loss, grad


def hessp(X, SW, P, V, alpha, active, n_threads=None):
    """Hessian-vector products (K, D) of the runs marked active (see state.py for the contract)."""
    n_runs, n_params = P.shape
    d = n_params - 1
    out = np.zeros((n_runs, n_params))
    m = X.shape[0]
    Xf = X.astype(np.float64, copy=False)
    with np.errstate(over="ignore", invalid="ignore"):
        for k in np.flatnonzero(active):
            s = _weights(SW, k, m)
            total = s.sum()
            if m == 0 or total == 0.0:
                continue
            h = hess_weight(_times(Xf, P[k, :d]) + P[k, d])  # sigmoid (1 - sigmoid)
            u = _times(Xf, V[k, :d]) + V[k, d]  # x_i . v_k + v_kd
            r = s * h * u / total
            out[k, :d] = _transposed_times(Xf, r) + alpha[k] * V[k, :d]
            out[k, d] = r.sum()
    return out
