"""Plain NumPy: the specification of the multinomial (softmax) kernels.

The contract (K runs, C classes, d features, D = C * (d + 1) parameters per run: class c's
weights at P[k, c*(d+1) : c*(d+1)+d] and its intercept at P[k, c*(d+1)+d]):

``loss_grad(X, labels, SW, P, alpha, rows, active, n_threads, denominator)``
    X (n, d) float32/float64; labels (n,) int64 in [0, C); SW (n, Ks), alpha (K,), rows,
    active and denominator as in state.py. Per row and run: z_c = x . w_c + b_c,
    loss += s (logsumexp(z) - z_y), and the gradient += s (softmax(z)_c - [c == y]) (x, 1) for
    every class, divided by the run's weight sum; + (alpha/2) ||W||^2 and alpha W.
``hessp(X, SW, P, V, alpha, active, n_threads)``
    With u_c = x . v_c + v_cb and p = softmax(z): += s p_c (u_c - sum_c' p_c' u_c') (x, 1),
    divided by the weight sum; + alpha V_w.
"""

from __future__ import annotations

import numpy as np

from .reference import _weights


def _split(P: np.ndarray, k: int, n_classes: int):
    """(W (C, d), b (C,)) of run k."""
    A = P[k].reshape(n_classes, -1)
    return A[:, :-1], A[:, -1]


def softmax_and_lse(Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """softmax over axis 1 and log-sum-exp, stable (the largest z is subtracted first)."""
    m = Z.max(axis=1, keepdims=True)
    E = np.exp(Z - m)
    S = E.sum(axis=1, keepdims=True)
    return E / S, (m + np.log(S))[:, 0]


def loss_grad(X, labels, SW, P, alpha, rows, active, n_threads=None, denominator=None, *,
              n_classes):
    n_runs, n_params = P.shape
    loss = np.zeros(n_runs)
    grad = np.zeros((n_runs, n_params))
    if rows.size:
        X, labels, SW = X[rows], labels[rows], SW[rows]
    m = X.shape[0]
    Xf = X.astype(np.float64, copy=False)
    onehot = np.zeros((m, n_classes))
    onehot[np.arange(m), labels] = 1.0
    with np.errstate(over="ignore", invalid="ignore"):
        for k in np.flatnonzero(active):
            s = _weights(SW, k, m)
            total = s.sum()
            if denominator is not None and np.size(denominator):
                total = float(denominator[k])
            if m == 0 or total == 0.0:
                continue
            W, b = _split(P, k, n_classes)
            Z = Xf @ W.T + b
            prob, lse = softmax_and_lse(Z)
            loss[k] = (s * (lse - Z[np.arange(m), labels])).sum() / total
            R = s[:, None] * (prob - onehot) / total  # (m, C)
            G = np.column_stack([R.T @ Xf, R.sum(axis=0)])  # (C, d + 1)
            if alpha[k] != 0.0:
                loss[k] += 0.5 * alpha[k] * (W * W).sum()
                G[:, :-1] += alpha[k] * W
            grad[k] = G.reshape(-1)
    return loss, grad


def hessp(X, SW, P, V, alpha, active, n_threads=None, *, n_classes):
    n_runs, n_params = P.shape
    out = np.zeros((n_runs, n_params))
    m = X.shape[0]
    Xf = X.astype(np.float64, copy=False)
    with np.errstate(over="ignore", invalid="ignore"):
        for k in np.flatnonzero(active):
            s = _weights(SW, k, m)
            total = s.sum()
            if m == 0 or total == 0.0:
                continue
            W, b = _split(P, k, n_classes)
            Vw, vb = _split(V, k, n_classes)
            prob, _ = softmax_and_lse(Xf @ W.T + b)
            U = Xf @ Vw.T + vb  # (m, C)
            T = s[:, None] * prob * (U - (prob * U).sum(axis=1, keepdims=True)) / total
            H = np.column_stack([T.T @ Xf + alpha[k] * Vw, T.sum(axis=0)])
            out[k] = H.reshape(-1)
    return out
